"""Group actions on arrays, as pure ``jit``- and ``vmap``-friendly functions.

Every action here is a permutation of array entries, stored as a static table. One
convention, used by every action in this file:

    (g . x).flat = x.flat[perm[g]]        along the axes the action moves

so ``perm[g][p]`` is the position that moves *to* p, i.e. ``g^-1 p`` for a geometric action.
``action(g, x)`` takes the group element as an index (a Python int or a traced int
scalar) and returns ``g . x``. All actions are left actions: ``(gh).x = g.(h.x)``, which
:func:`check_action_axioms` verifies for any action, including a user's own.

Layouts: images are ``[..., H, W, C]``; a lifted value has its group axis first,
``[|G|, ...]``; the paper's channel stacking is ``[..., |G| * C]`` with group-major blocks
(channel ``g * C + c`` belongs to group element g).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from eqnn import groups as groups_lib
from eqnn.groups import FiniteGroup


def _check_index(group: FiniteGroup, g) -> None:
  """Refuses a group element index that is not an integer in ``[0, |G|)`` wherever its value
  is known (a Python or numpy int, a concrete JAX array); a traced one is checked by
  :func:`checked`, and without it gives NaN (see :func:`_gather`)."""
  if isinstance(g, jax.core.Tracer):
    return
  value = np.asarray(g)
  if value.ndim or not (np.issubdtype(value.dtype, np.integer) or value.dtype == bool):
    raise TypeError(f"a group element is one integer index, got {type(g).__name__} of "
                    f"dtype {value.dtype} and shape {value.shape}")
  if not 0 <= int(value) < group.order:
    raise ValueError(f"group element index {int(value)} is out of range for {group.name} "
                     f"(order {group.order})")


def _gather(x: jax.Array, table: np.ndarray, g, axis: int, n_axes: int) -> jax.Array:
  """``x`` with the ``n_axes`` axes from ``axis`` flattened, gathered by ``table[g]``.

  An out-of-range g (possible only when traced) selects no row: the result is NaN for
  floating-point ``x`` (the most negative integer for integer ``x``), never another
  element's image; :func:`checked` turns it into an error.
  """
  shape = x.shape
  flat = x.reshape(shape[:axis] + (-1,) + shape[axis + n_axes:])
  row = jnp.asarray(table, jnp.int32).at[g].get(mode="fill", fill_value=table.shape[1])
  index = (slice(None),) * axis + (row,)
  return flat.at[index].get(mode="fill", unique_indices=True).reshape(shape)


def checked(fn: Callable) -> Callable:
  """``fn`` with every gather checked: out-of-range group elements, traced ones included.

  Returns a function giving ``(error, output)`` (``jax.experimental.checkify``); call
  ``error.throw()`` to raise. Works under ``jax.jit`` (``jax.jit(checked(fn))``)::

      err, y = jax.jit(actions.checked(lambda g, x: act(g, x)))(7, x)
      err.throw()     # ValueError-like: index 7 out of bounds for a group of order 4
  """
  from jax.experimental import checkify
  return checkify.checkify(fn, errors=checkify.index_checks)


class Action:
  """A left action of ``group`` on arrays: ``action(g, x) = g . x``.

  ``action(g, x)`` checks ``g`` and ``x`` and applies; :meth:`apply` only applies, for code
  that has called :meth:`validate` once and then moves many values (inside jit or vmap).
  """

  group: FiniteGroup
  # True where the "action" resamples (turns by other than quarter turns): (gh).x and
  # g.(h.x) then differ by interpolation error; check_action_axioms reports it.
  approximate = False

  def __call__(self, g, x):
    _check_index(self.group, g)
    x = self.prepare(x)
    return self.apply(g, x)

  def prepare(self, x):
    """``x`` as JAX arrays, checked by :meth:`validate` (a clear error for a pytree given to
    an action on one array)."""
    if isinstance(x, (tuple, list, dict)):
      raise ValueError(f"{type(self).__name__} of {self.group.name} acts on one array, got a "
                       f"{type(x).__name__}; for several arrays use actions.on_pytree")
    x = jnp.asarray(x)
    self.validate(x)
    return x

  def validate(self, x: jax.Array) -> None:
    """Raises ValueError if ``x`` cannot carry this action."""

  def apply(self, g, x):
    """``g . x`` without checks: ``x`` must have passed :meth:`validate`; ``g`` may be traced."""
    raise NotImplementedError

  def example_shape(self):
    """A shape (or a pytree of shapes) that this action acts on, for drawing test inputs."""
    raise NotImplementedError(f"{type(self).__name__} does not know an example shape: pass one")

  def orbit(self, x) -> jax.Array:
    """``[|G|, ...]``: ``g . x`` for every g in group order (on every leaf of a pytree)."""
    x = self.prepare(x)
    return jax.vmap(lambda g: self.apply(g, x))(jnp.arange(self.group.order))


class KeyedEquality:
  """Equality and hash on ``_key()``: what defines an action (its group, table, axes), so a
  jit static argument or cache key compares on exactly that, not on descriptions."""

  def _key(self):
    raise NotImplementedError

  def __eq__(self, other):
    return type(other) is type(self) and self._key() == other._key()

  def __hash__(self):
    return hash(self._key())


@dataclasses.dataclass(frozen=True)
class FunctionAction(Action):
  """A user's action from a function ``fn(g, x)``; check it with :func:`check_action_axioms`."""

  group: FiniteGroup
  fn: Callable

  def apply(self, g, x):
    return self.fn(g, x)


@dataclasses.dataclass(frozen=True)
class TrivialAction(Action):
  """``g . x = x``: use it as the output action to test invariance."""

  group: FiniteGroup

  def apply(self, g, x):
    del g
    return x


@dataclasses.dataclass(frozen=True, eq=False)
class TableAction(KeyedEquality, Action):
  """A permutation action with a fixed table ``perm [|G|, N]`` on the ``n_axes`` axes at ``axis``.

  ``axis`` may be negative (counted from the end, for actions on the trailing axes).
  """

  group: FiniteGroup
  perm: np.ndarray = dataclasses.field(compare=False)
  axis: int = 0
  n_axes: int = 1
  what: str = dataclasses.field(default="entries", compare=False)

  # Equal means the same group, table and axes: jit static arguments and caches rely on it.
  # The description ``what`` only words error messages.
  def _key(self):
    return (self.group, self.perm.shape, np.ascontiguousarray(self.perm, np.int64).tobytes(),
            self.axis, self.n_axes)

  def _axis(self, x):
    return self.axis if self.axis >= 0 else x.ndim + self.axis

  def validate(self, x):
    need = self.axis + self.n_axes if self.axis >= 0 else -self.axis
    if x.ndim < need:
      raise ValueError(f"{self.what}: expected at least {need} axes, got shape {x.shape}")
    ax = self._axis(x)
    size = int(np.prod(x.shape[ax:ax + self.n_axes]))
    if size != self.perm.shape[1]:
      raise ValueError(
          f"{self.what}: axes {ax}..{ax + self.n_axes - 1} of shape {x.shape} hold {size} "
          f"entries, but {self.group.name} acts here on {self.perm.shape[1]}")

  def apply(self, g, x):
    return _gather(x, self.perm, g, self._axis(x), self.n_axes)

  def example_shape(self):
    if self.n_axes != 1:
      raise NotImplementedError("pass a shape for an action on several axes")
    n = self.perm.shape[1]
    return (n,) + (1,) * (-self.axis - 1) if self.axis < 0 else (1,) * self.axis + (n,)


def regular(group: FiniteGroup, axis: int = 0) -> TableAction:
  """The regular action on a group axis (a lifted value): ``(h.s)(g) = s(h^-1 g)``.

  For C4 this maps ``(z0, z1, z2, z3)`` to ``(z3, z0, z1, z2)`` under the generator r.

  >>> import jax.numpy as jnp
  >>> regular(groups_lib.cyclic(4))(1, jnp.array([10.0, 11.0, 12.0, 13.0])).tolist()
  [13.0, 10.0, 11.0, 12.0]
  """
  return TableAction(group, group.regular_permutations(), axis, 1,
                     what=f"regular action of {group.name} on axis {axis}")


def on_cosets(subgroup: groups_lib.Subgroup, axis: int = 0) -> TableAction:
  """G acting on maps ``G/H -> Z`` along a coset axis: ``(k.s)(gH) = s(k^-1 g H)``."""
  return TableAction(subgroup.group, subgroup.coset_permutations(), axis, 1,
                     what=f"action of {subgroup.group.name} on G/{subgroup.name}")


@dataclasses.dataclass(frozen=True)
class ChannelBlocks(Action):
  """The paper's stacking: ``[..., |G| * C]`` holds |G| blocks of C channels, group-major.

  ``g`` acts by the regular action on the blocks (for C4, a cyclic shift by one block),
  leaving every spatial position and every channel within a block in place.
  """

  group: FiniteGroup

  def validate(self, x):
    n = self.group.order
    if x.ndim < 1 or x.shape[-1] % n:
      raise ValueError(f"channel blocks of {self.group.name}: the channel axis of shape "
                       f"{x.shape} must be a multiple of |G| = {n}")

  def example_shape(self):
    return (3, 3, 2 * self.group.order)

  def apply(self, g, x):
    n = self.group.order
    blocks = x.reshape(x.shape[:-1] + (n, x.shape[-1] // n))
    return _gather(blocks, self.group.regular_permutations(), g, x.ndim - 1, 1).reshape(x.shape)


def gather_table(point_maps) -> np.ndarray:
  """Converts permutations given as *where each point goes* (``i -> p[i]``, as
  :func:`eqnn.groups.from_permutations` returns them) into eqnn's convention, *where each
  entry comes from*: ``perm[g, j] = p_g^-1(j)``, so that ``(g.x)[j] = x[perm[g, j]]``."""
  return np.argsort(np.asarray(point_maps), axis=-1).astype(np.int32)


def check_permutations(group: FiniteGroup, perm: np.ndarray, what: str = "permutations") -> None:
  """Refuses a gather table that does not compose like the group (``(ab).x = a.(b.x)``),
  naming the first pair that fails. Checked on a generating set (with ``e`` acting as the
  identity, that implies every pair), so it costs O(|G| |S| N) for N entries."""
  perm = np.asarray(perm)
  if perm.ndim != 2 or perm.shape[0] != group.order:
    raise ValueError(f"{what}: need one permutation per element of {group.name} "
                     f"({group.order}), got an array of shape {perm.shape}")
  m = perm.shape[1]
  if not np.array_equal(np.sort(perm, axis=1), np.broadcast_to(np.arange(m), perm.shape)):
    g = int(np.argmax(~np.all(np.sort(perm, axis=1) == np.arange(m), axis=1)))
    raise ValueError(f"{what}: row {g} ({group.element_names[g]}) is not a permutation of "
                     f"range({m})")
  if not np.array_equal(perm[0], np.arange(m)):
    raise ValueError(f"{what}: the identity e must leave every entry in place")
  # (a s).x = a.(s.x) reads, entrywise, perm[a s][j] = perm[s][perm[a][j]].
  for s_ in groups_lib.generators(group.table):
    bad = np.argwhere(perm[group.table[:, s_]] != perm[s_][perm])
    if bad.size:
      a = int(bad[0][0])
      names = group.element_names
      raise ValueError(
          f"{what} do not compose like {group.name}'s table: ({names[a]} {names[s_]}).x != "
          f"{names[a]}.({names[s_]}.x) (element {a} times {s_}). Are they in another element "
          f"order than the group, or given as where each point goes rather than where each "
          f"entry comes from (see actions.gather_table)?")


def permute_points(group: FiniteGroup, perms: np.ndarray, axis: int = -2) -> TableAction:
  """A permutation group moving the points of a set or sequence along ``axis``.

  ``perms[g]`` says where each point goes: point i moves to ``perms[g][i]`` (as
  :func:`eqnn.groups.from_permutations` returns them), ``(g.x)[perms[g][i]] = x[i]``. They
  must compose like the group's table (checked, see :func:`check_permutations`). Default axis
  -2 for point clouds ``[..., n, features]``.
  """
  table = gather_table(perms)
  what = f"{group.name} permuting points on axis {axis}"
  check_permutations(group, table, what)
  return TableAction(group, table, axis, 1, what=what)


def check_action_axioms(action: Action, x, atol: float | None = None) -> float:
  """Checks ``e.x = x`` and ``(gh).x = g.(h.x)`` for all g, h on ``x`` (an array or a pytree of
  them) and returns the largest error measured (0 for a permutation action).

  Raises AssertionError naming the first pair beyond ``atol``. ``atol=None`` means 0 for an
  exact action, and for an approximate one (``action.approximate``: resampling) no bound at
  all: its error is measured and returned, not judged.
  """
  group = action.group
  if atol is None:
    atol = float("inf") if action.approximate else 0.0
  orbit = action.orbit(x)                                     # [g, ...] per leaf
  x = action.prepare(x)
  leaves = lambda t: jax.tree.leaves(t)
  err = max(float(jnp.max(jnp.abs(o[0] - l))) for o, l in zip(leaves(orbit), leaves(x)))
  if err > atol:
    raise AssertionError(f"identity does not act trivially: max |e.x - x| = {err}")
  # g.(h.x) for all g, h, against (gh).x.
  both = jax.vmap(action.orbit)(orbit)                        # [h, g, ...]
  idx = jnp.asarray(group.table.T, jnp.int32)                 # [h, g] -> g h
  diff = sum(jnp.abs(b - o[idx]).reshape(group.order, group.order, -1).max(-1)
             for b, o in zip(leaves(both), leaves(orbit)))
  bad = np.argwhere(np.asarray(diff) > atol)
  if bad.size:
    h, g = bad[0]
    raise AssertionError(
        f"not a left action: ({group.element_names[g]} {group.element_names[h]}).x != "
        f"{group.element_names[g]}.({group.element_names[h]}.x), max error {float(diff[h, g])}")
  return max(err, float(jnp.max(diff)))


# Actions of other kinds, in modules of their own, are part of this namespace.
from eqnn.image_actions import (INTERPOLATIONS, ImageAction, ResampledTurns,  # noqa: E402
                                disk_mask, rotations, rotations_reflections, translations,
                                turn_images)
from eqnn.gcnn import TurnedBlocks  # noqa: E402
from eqnn.structured_actions import (AxesPermutation, LinearAction, PytreeAction,  # noqa: E402
                                     ProductAction, linear, on_pytree, permute_axes, product,
                                     rotate_reflect_vectors, rotate_vectors, shifts,
                                     shifts_reflections)
