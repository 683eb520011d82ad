"""Example models: the lifted CNN and MLP declare their actions and are equivariant; their
class readout is invariant; the plain CNN is neither (negative control)."""

import jax
import jax.numpy as jnp
import pytest

from eqnn import actions, groups, models, readouts, testing

IMAGE_ACTIONS = {"C4": actions.rotations(), "D4": actions.rotations_reflections()}


@pytest.mark.parametrize("gname", list(IMAGE_ACTIONS))
def test_lifted_cnn_is_equivariant_and_its_readout_invariant(gname):
  act = IMAGE_ACTIONS[gname]
  model = models.EquivariantCNN(act, (4, 6, 6), (2, 2, 1), (8,))
  x = jax.random.normal(jax.random.key(0), (3, 12, 12, 1))
  bound = model.bind(model.init(jax.random.key(1), x))
  assert bound(x).shape == (3, act.group.order, 10)
  testing.assert_equivariant(bound, x)              # from its declared actions, in one line
  fast = jax.jit(bound.__call__)
  testing.assert_invariant(lambda x: readouts.class_logits(fast(x)), act, x)
  # Negative control: the plain CNN is not rotation-invariant.
  plain = models.PlainCNN((4, 6, 6), (2, 2, 1), (8,))
  pbound = plain.bind(plain.init(jax.random.key(1), x))
  with pytest.raises(AssertionError):
    testing.assert_invariant(pbound, act, x)


def test_lifted_mlp_over_s4_is_equivariant():
  s4, perms = groups.symmetric(4)
  act = actions.permute_points(s4, perms)
  model = models.EquivariantMLP(act, (8,), 5)
  x = jax.random.normal(jax.random.key(0), (3, 4, 2))
  bound = model.bind(model.init(jax.random.key(1), x))
  assert bound(x).shape == (3, 24, 5)
  testing.assert_equivariant(bound, x)
  with pytest.raises(AssertionError):        # the plain MLP is not permutation-invariant
    plain = models.MLP((8,), 5)
    testing.assert_invariant(plain.bind(plain.init(jax.random.key(1), x)), act, x)


def test_pools_must_match_convs():
  with pytest.raises(ValueError, match="one pool window per conv"):
    models.EquivariantCNN(actions.rotations(), (4, 4), (2,)).init(jax.random.key(0),
                                                              jnp.zeros((1, 8, 8, 1)))
