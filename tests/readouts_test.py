"""Readouts: the joint-label convention against the lift, and which readout is invariant."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eqnn
from eqnn import actions, data, readouts, testing


@pytest.mark.parametrize("action", [actions.rotations(), actions.rotations_reflections()],
                         ids=["C4", "D4"])
def test_label_slots_match_the_lift_model_free(action):
  """An oracle F that recognises the upright images, lifted, puts each moved image's score
  exactly in the slot the label encoding names. A label/lift order mismatch fails here."""
  k = 10
  upright = jax.random.uniform(jax.random.key(0), (k, 6, 6, 1))   # "digit" m is image m
  labels = np.arange(k)

  def oracle(x):   # one-hot of the upright image x equals, else zeros
    match = jnp.all(jnp.abs(upright - x[None]) < 1e-6, axis=(1, 2, 3))
    return match.astype(jnp.float32)

  lifted = jax.vmap(eqnn.equivarify(oracle, action))                 # [N, |G|, K]
  moved, g = data.transform_randomly(jax.random.key(1), upright, action)
  scores = readouts.joint_logits(lifted(moved))
  want = readouts.joint_labels(labels, np.asarray(g), k)
  np.testing.assert_array_equal(scores.argmax(-1), want)
  assert float(scores.sum()) == k                                    # exactly one hit each
  # The opposite convention (slot g^-1) is wrong wherever g is not an involution.
  opposite = readouts.joint_labels(labels, action.group.inverse[np.asarray(g)], k)
  involution = action.group.inverse[np.asarray(g)] == np.asarray(g)
  assert np.all((scores.argmax(-1) == opposite) == involution)
  gg, mm = readouts.decode_joint(want, k)
  np.testing.assert_array_equal(gg, g)
  np.testing.assert_array_equal(mm, labels)


@pytest.mark.parametrize("group_order", [4, 8])
def test_class_readout_is_invariant_and_element_readout_equivariant(group_order):
  from eqnn import groups
  g = groups.cyclic(4) if group_order == 4 else groups.dihedral(4)
  regular = actions.regular(g, axis=-2)          # G on logits [B, |G|, K]
  logits = jax.random.normal(jax.random.key(0), (5, g.order, 3))
  testing.assert_invariant(readouts.class_logits, regular, logits)
  testing.assert_equivariant(readouts.element_logits, regular, actions.regular(g, axis=-1),
                             logits)
  # The joint logits are not invariant (negative control): the group element moves them.
  with pytest.raises(AssertionError, match="not equivariant"):
    testing.assert_invariant(readouts.joint_logits, regular, logits)


def test_predictions_decode_the_joint_argmax():
  logits = np.full((2, 4, 10), -5.0)
  logits[0, 3, 7] = 5.0                          # class 7 at element 3
  logits[1, 0, 2] = 5.0
  pred = readouts.predictions(logits)
  assert pred["joint"].tolist() == [37, 2]
  assert pred["class"].tolist() == [7, 2] and pred["element"].tolist() == [3, 0]
