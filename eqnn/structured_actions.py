"""Actions beyond one permutation table on one axis: 1-D sequences, one permutation on several
axes, pytrees of arrays, linear representations on a feature axis, and products.

Part of :mod:`eqnn.actions` (import them from there); the same convention holds,
``(g . x)[j] = x[perm[g, j]]`` for permutations, and every one is a left action
(``tests/actions_test.py`` runs :func:`eqnn.actions.check_action_axioms` on each).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from eqnn import groups as groups_lib
from eqnn.actions import Action, KeyedEquality, TableAction, _gather, check_permutations
from eqnn.groups import FiniteGroup


# --- 1-D sequences [..., L, C] ------------------------------------------------------------

def shifts(length: int, axis: int = -2) -> TableAction:
  """C_L shifting a cyclic sequence ``[..., L, C]``: ``(r^k . x)[i] = x[i - k]``, in the
  element order of :func:`eqnn.groups.cyclic` (r moves every sample one step forward)."""
  group = groups_lib.cyclic(length)
  i = np.arange(length)
  perm = np.stack([(i - k) % length for k in range(length)]).astype(np.int32)
  return TableAction(group, perm, axis, 1, what=f"C{length} shifting sequences on axis {axis}")


def shifts_reflections(length: int, axis: int = -2) -> TableAction:
  """D_L on a cyclic sequence ``[..., L, C]``, in the element order of
  :func:`eqnn.groups.dihedral`: ``f^m r^k`` moves sample i to ``(-1)^m (i + k) mod L`` (r shifts
  forward, f reads the sequence backwards around sample 0)."""
  group = groups_lib.dihedral(length)
  i = np.arange(length)
  goes = np.stack([((-1) ** (g // length) * (i + g % length)) % length
                   for g in range(group.order)])
  perm = np.argsort(goes, axis=1).astype(np.int32)
  what = f"D{length} shifting and reflecting sequences on axis {axis}"
  check_permutations(group, perm, what)
  return TableAction(group, perm, axis, 1, what=what)


# --- one permutation on several axes -------------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class AxesPermutation(KeyedEquality, Action):
  """One permutation of n things applied to several axes at once: ``perm [|G|, n]`` gathers
  every axis in ``axes`` (rows and columns of an adjacency matrix ``[..., n, n]``:
  ``(g.A)[i, j] = A[perm[g, i], perm[g, j]]``)."""

  group: FiniteGroup
  perm: np.ndarray = dataclasses.field(compare=False)
  axes: tuple[int, ...] = (-2, -1)

  def _key(self):
    return (self.group, self.perm.tobytes(), self.axes)

  def validate(self, x):
    n = self.perm.shape[1]
    for ax in self.axes:
      if x.ndim < abs(ax) + (ax >= 0) or x.shape[ax] != n:
        raise ValueError(f"{self.group.name} permuting axes {self.axes}: axis {ax} of shape "
                         f"{x.shape} must have {n} entries")

  def apply(self, g, x):
    for ax in self.axes:
      x = _gather(x, self.perm, g, ax % x.ndim, 1)
    return x

  def example_shape(self):
    n = self.perm.shape[1]
    return (n,) * max(abs(a) if a < 0 else a + 1 for a in self.axes)


def permute_axes(group: FiniteGroup, point_maps, axes=(-2, -1)) -> AxesPermutation:
  """``group`` permuting n things given by where each one goes (as
  :func:`eqnn.groups.from_permutations` returns), applied to every axis in ``axes``."""
  from eqnn.actions import gather_table
  perm = gather_table(point_maps)
  check_permutations(group, perm, f"{group.name} permuting axes {tuple(axes)}")
  return AxesPermutation(group, perm, tuple(axes))


# --- pytrees -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class PytreeAction(Action):
  """G acting on a tuple, list or dict of arrays, each leaf by its own action of G.

  ``actions`` has the structure of the input, an :class:`Action` at every leaf; e.g. a graph
  ``(A, X)`` under S_n: ``on_pytree((permute_axes(Sn, maps), permute_points(Sn, maps)))``.
  """

  group: FiniteGroup
  actions: Any

  def __hash__(self):
    return hash((self.group, tuple(jax.tree.leaves(self.actions, is_leaf=_is_action))))

  def _pairs(self, x):
    try:
      return jax.tree.map(lambda a, leaf: (a, leaf), self.actions, x, is_leaf=_is_action)
    except ValueError as e:
      raise ValueError(f"the input's structure does not match the action's "
                       f"({jax.tree.structure(self.actions, is_leaf=_is_action)}): {e}") from None

  def prepare(self, x):
    if isinstance(x, jax.Array) or isinstance(x, np.ndarray):
      raise ValueError(f"this action of {self.group.name} acts on a "
                       f"{jax.tree.structure(self.actions, is_leaf=_is_action)}, got one array")
    x = jax.tree.map(jnp.asarray, x)
    self.validate(x)
    return x

  def validate(self, x):
    jax.tree.map(lambda pair: pair[0].validate(pair[1]), self._pairs(x),
                 is_leaf=lambda p: isinstance(p, tuple) and len(p) == 2 and _is_action(p[0]))

  def apply(self, g, x):
    return jax.tree.map(lambda a, leaf: a.apply(g, leaf), self.actions, x, is_leaf=_is_action)

  def example_shape(self):
    return jax.tree.map(lambda a: a.example_shape(), self.actions, is_leaf=_is_action)


def _is_action(x) -> bool:
  return isinstance(x, Action)


def on_pytree(actions) -> PytreeAction:
  """The action on a pytree whose leaves the given actions (one group for all) act on."""
  leaves = jax.tree.leaves(actions, is_leaf=_is_action)
  if not leaves or not all(_is_action(a) for a in leaves):
    raise ValueError("on_pytree needs a tuple, list or dict whose leaves are actions")
  group = leaves[0].group
  for a in leaves[1:]:
    if a.group != group:
      raise ValueError(f"every leaf must be acted on by the same group: {group.name} and "
                       f"{a.group.name}")
  return PytreeAction(group, actions)


# --- linear representations ----------------------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class LinearAction(KeyedEquality, Action):
  """G acting through matrices on one feature axis: ``(g.x)[..., i] = sum_j rho(g)[i, j] x[..., j]``.

  ``matrices [|G|, d, d]`` must be a homomorphism, ``rho(a b) = rho(a) rho(b)`` (checked by
  :func:`linear`). Exact up to float rounding of the matrices (rotations by 2 pi k / n).
  """

  group: FiniteGroup
  matrices: np.ndarray = dataclasses.field(compare=False)
  axis: int = -1

  def _key(self):
    return (self.group, self.matrices.tobytes(), self.axis)

  def validate(self, x):
    d = self.matrices.shape[1]
    if x.ndim < 1 or x.shape[self.axis] != d:
      raise ValueError(f"{self.group.name} acting linearly on axis {self.axis}: it must have "
                       f"{d} entries, got shape {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.inexact):
      raise ValueError(f"a linear action needs floating-point values, got {x.dtype}")

  def apply(self, g, x):
    rho = jnp.asarray(self.matrices, x.dtype).at[g].get(mode="fill", fill_value=jnp.nan)
    moved = jnp.tensordot(jnp.moveaxis(x, self.axis, -1), rho, axes=([-1], [1]))
    return jnp.moveaxis(moved, -1, self.axis)

  def example_shape(self):
    return (self.matrices.shape[1],)


def linear(group: FiniteGroup, matrices, axis: int = -1, atol: float = 1e-5) -> LinearAction:
  """A :class:`LinearAction`, refused unless ``matrices`` is a homomorphism from the table,
  naming the first pair ``a, b`` with ``rho(a b) != rho(a) rho(b)``."""
  m = np.asarray(matrices, np.float32)
  if m.ndim != 3 or m.shape[0] != group.order or m.shape[1] != m.shape[2]:
    raise ValueError(f"need one square matrix per element of {group.name}: [{group.order}, d, d], "
                     f"got {m.shape}")
  if not np.allclose(m[0], np.eye(m.shape[1]), atol=atol):
    raise ValueError("the identity must act as the identity matrix")
  for s in groups_lib.generators(group.table):
    err = np.abs(m[group.table[:, s]] - m @ m[s]).max(axis=(1, 2))
    if (err > atol).any():
      a = int(np.argmax(err > atol))
      raise ValueError(f"the matrices are not a representation of {group.name}: "
                       f"rho({group.element_names[a]} {group.element_names[s]}) != "
                       f"rho({group.element_names[a]}) rho({group.element_names[s]}), "
                       f"max error {err[a]:.3g}")
  return LinearAction(group, m, axis)


def _rotation(theta):
  c, s = np.cos(theta), np.sin(theta)
  return np.array([[c, -s], [s, c]])


def rotate_vectors(n: int, axis: int = -1) -> LinearAction:
  """C_n rotating 2-D coordinates on ``axis`` counter-clockwise by ``360 k / n`` degrees."""
  return linear(groups_lib.cyclic(n), [_rotation(2 * np.pi * k / n) for k in range(n)], axis)


def rotate_reflect_vectors(n: int, axis: int = -1) -> LinearAction:
  """D_n on 2-D coordinates, in the order of :func:`eqnn.groups.dihedral`: ``f^m r^k`` is
  ``F^m R^k``, R the rotation by ``360 / n`` degrees and F the reflection ``y -> -y``."""
  flip = np.diag([1.0, -1.0])
  mats = [np.linalg.matrix_power(flip, g // n) @ _rotation(2 * np.pi * (g % n) / n)
          for g in range(2 * n)]
  return linear(groups_lib.dihedral(n), mats, axis)


# --- products ------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ProductAction(Action):
  """A x B acting by ``(a, b) . x = a . (b . x)`` for two actions that commute; element
  ``(i, j)`` has index ``i * |B| + j`` as in :func:`eqnn.groups.direct_product`."""

  group: FiniteGroup
  first: Action
  second: Action

  def validate(self, x):
    self.first.validate(x)
    self.second.validate(x)

  def apply(self, g, x):
    nb = self.second.group.order
    return self.first.apply(g // nb, self.second.apply(g % nb, x))

  def example_shape(self):
    return self.first.example_shape()


def product(first: Action, second: Action) -> ProductAction:
  """The action of ``first.group x second.group``; the two actions must commute (check it with
  :func:`eqnn.actions.check_action_axioms`: a non-commuting pair is not an action of the
  product)."""
  return ProductAction(groups_lib.direct_product(first.group, second.group), first, second)
