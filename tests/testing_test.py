"""eqnn.testing: the numbers it reports, different input and output actions, the strategies."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given

from eqnn import actions, groups, testing

C4 = groups.cyclic(4)


def quadrant_sums(x):
  """[H, W, C] -> [4]: sums of the quadrants top-left, bottom-left, bottom-right, top-right.

  The quadrants are listed counter-clockwise, so a quarter turn of the image moves each
  sum one place along: f(r . x) = r' . f(x) with r' the 4-cycle i -> i + 1 on the list.
  """
  h = x.shape[0] // 2
  return jnp.stack([x[:h, :h].sum(), x[h:, :h].sum(), x[h:, h:].sum(), x[:h, h:].sum()])


CYCLE = np.array([[(i + k) % 4 for i in range(4)] for k in range(4)])   # r^k: i -> i + k


def test_different_input_and_output_actions():
  x = jax.random.normal(jax.random.key(0), (6, 6, 1))
  out = actions.permute_points(C4, CYCLE, axis=0)
  err = testing.assert_equivariant(quadrant_sums, actions.rotations(), out, x)
  assert err.max_abs < 1e-5
  # The opposite cycle is the wrong output action, and it is caught.
  wrong = actions.permute_points(C4, CYCLE[C4.inverse], axis=0)
  with pytest.raises(AssertionError, match=r"not equivariant: .* at g = r"):
    testing.assert_equivariant(quadrant_sums, actions.rotations(), wrong, x)
  # Not invariant either: the quadrants move.
  assert testing.invariance_error(quadrant_sums, actions.rotations(), x).max_rel > 0.1


def test_error_reports_max_and_relative():
  x = jnp.ones((2, 2, 1)).at[0, 0, 0].set(3.0)
  f = lambda x: 2.0 * x                                # equivariant under rotation, not invariant
  rot = actions.rotations()
  assert testing.equivariance_error(f, rot, rot, x).max_abs == 0.0
  err = testing.invariance_error(f, rot, x)
  assert err.max_abs == pytest.approx(4.0)             # |2*3 - 2*1|
  assert err.max_rel == pytest.approx(4.0 / 6.0)
  assert err.per_element[0] == 0.0 and len(err.per_element) == 4
  only = testing.invariance_error(f, rot, x, elements=[0, 2])
  assert only.elements == (0, 2) and only.per_element[1] == pytest.approx(4.0)


def test_helpers_refuse_mismatched_groups_and_elements():
  x = jnp.ones((4, 4, 1))
  with pytest.raises(ValueError, match="input action is of C4, output action of D4"):
    testing.equivariance_error(lambda x: x, actions.rotations(),
                               actions.rotations_reflections(), x)
  with pytest.raises(ValueError, match="element 5 is out of range"):
    testing.invariance_error(lambda x: x, actions.rotations(), x, elements=[5])


def test_invariance_is_not_equivariance():
  x = jax.random.normal(jax.random.key(1), (4, 4, 1))
  rot = actions.rotations()
  total = lambda x: jnp.sum(x ** 2)
  testing.assert_invariant(total, rot, x)
  ident = lambda x: x
  testing.assert_equivariant(ident, rot, rot, x)
  with pytest.raises(AssertionError):
    testing.assert_invariant(ident, rot, x)


@given(g=testing.group_elements(groups.dihedral(4)))
def test_group_elements_strategy_stays_in_range(g):
  assert 0 <= g < 8


@given(pair=testing.element_pairs(groups.dihedral(3)))
def test_element_pairs(pair):
  g, h = pair
  assert 0 <= g < 6 and 0 <= h < 6


@given(g=testing.group_elements(groups.cyclic(3), include_identity=False))
def test_strategy_without_identity(g):
  assert g in (1, 2)
