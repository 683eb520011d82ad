"""Actions: the axioms for every action, agreement with numpy's own transforms, clear errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eqnn import actions, groups
from eqnn.testing import group_elements

D4 = groups.dihedral(4)
S3, S3_PERMS = groups.symmetric(3)


def _x(shape, seed=0):
  return jax.random.normal(jax.random.key(seed), shape)


ACTIONS = [
    ("C2-rot", actions.rotations(2), (2, 5, 5, 3)),
    ("C4-rot", actions.rotations(), (2, 5, 5, 3)),
    ("D4-rot-refl", actions.rotations_reflections(), (2, 4, 4, 1)),
    ("C3xC4-translations", actions.translations(3, 4), (3, 4, 2)),
    ("S3-points", actions.permute_points(S3, S3_PERMS), (2, 3, 4)),
    ("D4-regular", actions.regular(D4), (8, 3)),
    ("D4-regular-axis1", actions.regular(D4, axis=1), (2, 8)),
    ("D4-channel-blocks", actions.ChannelBlocks(D4), (2, 3, 3, 16)),
    ("C4-channel-blocks", actions.ChannelBlocks(groups.cyclic(4)), (1, 8)),
    ("D4-cosets", actions.on_cosets(D4.subgroup([0, 4])), (4, 2)),
]


@pytest.mark.parametrize("name, action, shape", ACTIONS, ids=[a[0] for a in ACTIONS])
def test_action_axioms(name, action, shape):
  del name
  actions.check_action_axioms(action, _x(shape))


@pytest.mark.parametrize("name, action, shape", ACTIONS, ids=[a[0] for a in ACTIONS])
def test_group_element_can_be_traced(name, action, shape):
  del name
  x = _x(shape)
  jitted = jax.jit(lambda g, x: action(g, x))
  for g in range(action.group.order):
    np.testing.assert_array_equal(jitted(g, x), action(g, x))


@given(k=group_elements(groups.cyclic(4)))
def test_c4_is_counter_clockwise_rot90(k):
  x = _x((1, 6, 6, 2))
  np.testing.assert_array_equal(actions.rotations()(k, x), jnp.rot90(x, k, axes=(-3, -2)))


def test_rotation_direction_on_a_picture():
  # A mark in the top-right corner moves to the top-left under a counter-clockwise turn.
  x = np.zeros((3, 3, 1))
  x[0, 2, 0] = 1
  y = np.asarray(actions.rotations()(1, x))
  assert y[0, 0, 0] == 1 and y.sum() == 1


def test_d4_elements_are_rotations_then_flip():
  act = actions.rotations_reflections()
  x = _x((5, 5, 1))
  for m, k in [(0, 0), (0, 3), (1, 0), (1, 1), (1, 2)]:
    want = jnp.rot90(x, k, axes=(0, 1))
    want = jnp.flip(want, axis=1) if m else want
    np.testing.assert_array_equal(act(4 * m + k, x), want)


def test_translations_are_rolls():
  act = actions.translations(3, 4)
  x = _x((2, 3, 4, 1))
  g = act.group.index("(r^2, r^3)")
  np.testing.assert_array_equal(act(g, x), jnp.roll(x, (2, 3), axis=(1, 2)))


def test_points_move_where_the_permutation_sends_them():
  act = actions.permute_points(S3, S3_PERMS)
  x = jnp.arange(3.0)[:, None] * jnp.ones((3, 2))
  for g in range(6):
    y = act(g, x)
    for i in range(3):
      np.testing.assert_array_equal(y[S3_PERMS[g][i]], x[i])


def test_regular_action_is_the_papers_shift():
  # For C4 the generator maps (z0, z1, z2, z3) to (z3, z0, z1, z2).
  np.testing.assert_array_equal(actions.regular(groups.cyclic(4))(1, jnp.arange(4.0)),
                                [3.0, 0.0, 1.0, 2.0])
  np.testing.assert_array_equal(actions.ChannelBlocks(groups.cyclic(4))(1, jnp.arange(8.0)),
                                [6.0, 7.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0])


def test_a_right_action_fails_the_axioms_on_d4():
  # g . x := (g^-1 acting) is a right action: (gh).x = h.(g.x). Only a non-abelian group shows it.
  act = actions.rotations_reflections()
  right = actions.FunctionAction(D4, lambda g, x: act(jnp.asarray(D4.inverse)[g], x))
  with pytest.raises(AssertionError, match="not a left action"):
    actions.check_action_axioms(right, _x((4, 4, 1)))
  c4 = actions.rotations()
  right_c4 = actions.FunctionAction(c4.group, lambda g, x: c4(jnp.asarray(c4.group.inverse)[g], x))
  actions.check_action_axioms(right_c4, _x((4, 4, 1)))   # abelian: indistinguishable


def test_identity_must_act_trivially():
  bad = actions.FunctionAction(groups.cyclic(2), lambda g, x: x + 1.0)
  with pytest.raises(AssertionError, match="identity does not act trivially"):
    actions.check_action_axioms(bad, jnp.zeros(3))


@pytest.mark.parametrize("action, shape, match", [
    (actions.rotations(), (2, 5, 6, 1), "square images, got H x W = 5 x 6"),
    (actions.rotations(), (5, 5), r"expected images \[..., H, W, C\]"),
    (actions.rotations_reflections(), (3, 4, 1), "square"),
    (actions.translations(3, 4), (4, 3, 1), "acts on 3 x 4 images"),
    (actions.regular(D4), (4, 3), "hold 4 entries, but D4 acts here on 8"),
    (actions.ChannelBlocks(D4), (2, 12), "multiple of |G| = 8"),
    (actions.permute_points(S3, S3_PERMS), (4, 2), "hold 4 entries"),
])
def test_bad_shapes_are_clear_value_errors(action, shape, match):
  with pytest.raises(ValueError, match=match):
    action(1, jnp.zeros(shape))


def test_out_of_range_element_is_refused():
  with pytest.raises(ValueError, match="out of range for C4"):
    actions.rotations()(4, jnp.zeros((3, 3, 1)))
  # Orders other than 1, 2, 4 resample: a different, approximate action (image_actions_test).
  assert actions.rotations(3).approximate and not actions.rotations(2).approximate


def test_equal_actions_are_equal():
  assert actions.rotations() == actions.rotations()
  assert hash(actions.translations(3, 4)) == hash(actions.translations(3, 4))


@given(st.integers(0, 7), st.integers(0, 7), st.integers(0, 2**31 - 1))
def test_orbit_matches_elementwise(g, h, seed):
  act = actions.rotations_reflections()
  x = _x((1, 4, 4, 2), seed)
  orbit = act.orbit(x)
  np.testing.assert_array_equal(orbit[g], act(g, x))
  np.testing.assert_array_equal(act(g, act(h, x)), act(D4.mul(g, h), x))


def test_actions_compare_and_hash_on_what_defines_them():
  """Actions are jit static arguments: equal means same group, table and axes; the wording of
  error messages takes no part."""
  import jax
  g = groups.cyclic(4)
  perm = g.regular_permutations()
  a = actions.TableAction(g, perm, 0, 1, what="one wording")
  b = actions.TableAction(g, perm.copy(), 0, 1, what="another wording")
  assert a == b and hash(a) == hash(b)
  assert a != actions.TableAction(g, perm[g.inverse], 0, 1)           # another table
  assert a != actions.TableAction(g, perm, 1, 1)                      # another axis
  assert actions.rotations() == actions.rotations() and actions.rotations() != actions.rotations(2)
  assert hash(actions.rotations_reflections()) == hash(actions.rotations_reflections())
  traces = []

  def f(action, x):
    traces.append(1)
    return action.apply(1, x)

  jf = jax.jit(f, static_argnums=0)
  x = np.zeros((4, 3))
  jf(a, x)
  jf(b, x)
  assert len(traces) == 1          # b is a cache hit for a
  jf(actions.regular(g), x)
  assert len(traces) == 1          # and so is the library's own regular action
