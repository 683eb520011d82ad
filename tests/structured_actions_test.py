"""Actions beyond one table on one axis: sequences, several axes, pytrees, matrices, products.

Every one passes check_action_axioms; each convention is pinned against a plain reference
(jnp.roll, a matrix product), and the ways to get them wrong are refused by name.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

from eqnn import actions, groups, testing

S4, S4_MAPS = groups.symmetric(4)
GRAPH = actions.on_pytree((actions.permute_axes(S4, S4_MAPS), actions.permute_points(S4, S4_MAPS)))
ACTIONS = {
    "shifts C8": (actions.shifts(8), (8, 2)),
    "shifts and reflections D8": (actions.shifts_reflections(8), (8, 2)),
    "S4 on rows and columns": (actions.permute_axes(S4, S4_MAPS), (4, 4)),
    "S4 on a graph (A, X)": (GRAPH, ((4, 4), (4, 3))),
    "C4 rotating vectors": (actions.rotate_vectors(4), (5, 2)),
    "D6 on vectors": (actions.rotate_reflect_vectors(6), (5, 2)),
    "rows x columns shifts": (actions.product(actions.shifts(4, axis=-3),
                                              actions.shifts(4, axis=-2)), (4, 4, 1)),
}


@pytest.mark.parametrize("name", list(ACTIONS))
def test_every_new_action_is_a_left_action(name):
  act, shape = ACTIONS[name]
  leaves, tree = jax.tree.flatten(shape, is_leaf=lambda s: isinstance(s, tuple) and
                                  all(isinstance(d, int) for d in s))
  x = jax.tree.unflatten(tree, [jax.random.normal(jax.random.key(i), s)
                                for i, s in enumerate(leaves)])
  err = actions.check_action_axioms(act, x, atol=1e-5)
  assert err < 1e-5


def test_shifts_and_reflections_move_samples_as_documented():
  x = jnp.arange(8.0)[:, None]
  np.testing.assert_array_equal(actions.shifts(8)(3, x), jnp.roll(x, 3, axis=0))
  d8 = actions.shifts_reflections(8)
  np.testing.assert_array_equal(d8(3, x), jnp.roll(x, 3, axis=0))          # r^3
  f = d8.group.index("f")
  np.testing.assert_array_equal(d8(f, x)[:, 0], (-jnp.arange(8.0)) % 8)   # i -> -i
  assert d8.group == groups.dihedral(8)


def test_one_permutation_acts_on_rows_and_columns_at_once():
  a = jax.random.normal(jax.random.key(0), (4, 4))
  g = 5
  p = actions.gather_table(S4_MAPS)[g]
  np.testing.assert_array_equal(actions.permute_axes(S4, S4_MAPS)(g, a), a[p][:, p])


def test_linear_actions_are_matrix_products_and_must_be_representations():
  c4 = actions.rotate_vectors(4)
  v = jnp.array([[1.0, 0.0]])
  np.testing.assert_allclose(c4(1, v), [[0.0, 1.0]], atol=1e-6)           # counter-clockwise
  mats = c4.matrices.copy()
  mats[[1, 2]] = mats[[2, 1]]                                             # another order
  with pytest.raises(ValueError, match="not a representation of C4: rho"):
    actions.linear(groups.cyclic(4), mats)
  with pytest.raises(ValueError, match="floating-point"):
    c4(1, jnp.array([[1, 0]]))


def test_permutations_in_another_element_order_are_refused():
  """from_permutations numbers D8's elements in its own order, not dihedral(8)'s."""
  i = np.arange(8)
  d8_own, maps = groups.from_permutations([np.roll(i, -1), (-i) % 8])
  assert d8_own.order == 16
  with pytest.raises(ValueError, match="do not compose like D8's table: .* element order"):
    actions.permute_points(groups.dihedral(8), maps)
  actions.permute_points(d8_own, maps)               # in its own group's order: accepted


def test_pytrees_need_a_pytree_action_and_matching_structure():
  a, x = jnp.zeros((4, 4)), jnp.zeros((4, 3))
  with pytest.raises(ValueError, match="acts on one array, got a tuple; for several arrays use actions.on_pytree"):
    actions.permute_points(S4, S4_MAPS)(1, (a, x))
  with pytest.raises(ValueError, match="structure does not match"):
    GRAPH(1, (a, x, x))
  with pytest.raises(ValueError, match="same group"):
    actions.on_pytree((actions.shifts(4), actions.permute_points(S4, S4_MAPS)))


def test_a_product_of_actions_that_do_not_commute_is_caught():
  rot = actions.rotations()
  shift = actions.shifts(4, axis=-3)        # rows: does not commute with quarter turns
  with pytest.raises(AssertionError, match="not a left action"):
    actions.check_action_axioms(actions.product(rot, shift),
                                jax.random.normal(jax.random.key(0), (4, 4, 1)))


@settings(max_examples=10, deadline=None)
@given(gx=testing.elements_and_inputs(GRAPH, batch=(2,)))
def test_strategies_draw_inputs_the_action_takes(gx):
  g, (a, x) = gx
  assert a.shape == (2, 4, 4) and x.shape == (2, 4, 1)
  moved = GRAPH(g, (a, x))
  np.testing.assert_allclose(jnp.sort(moved[1].ravel()), jnp.sort(x.ravel()))


def test_strategies_refuse_a_shape_the_action_does_not_take():
  with pytest.raises(ValueError, match="square images"):
    testing.inputs(actions.rotations(), (5, 6, 1))
