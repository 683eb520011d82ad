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
  row = jnp.asarray(table).at[g].get(mode="fill", fill_value=table.shape[1])
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

  def __call__(self, g, x):
    _check_index(self.group, g)
    x = jnp.asarray(x)
    self.validate(x)
    return self.apply(g, x)

  def validate(self, x: jax.Array) -> None:
    """Raises ValueError if ``x`` cannot carry this action."""

  def apply(self, g, x):
    """``g . x`` without checks: ``x`` must have passed :meth:`validate`; ``g`` may be traced."""
    raise NotImplementedError

  def orbit(self, x) -> jax.Array:
    """``[|G|, ...]``: ``g . x`` for every g in group order."""
    x = jnp.asarray(x)
    self.validate(x)
    return jax.vmap(lambda g: self.apply(g, x))(jnp.arange(self.group.order))


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


@dataclasses.dataclass(frozen=True)
class TableAction(Action):
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

  def __eq__(self, other):
    return isinstance(other, TableAction) and self._key() == other._key()

  def __hash__(self):
    return hash(self._key())

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

  def apply(self, g, x):
    n = self.group.order
    blocks = x.reshape(x.shape[:-1] + (n, x.shape[-1] // n))
    return _gather(blocks, self.group.regular_permutations(), g, x.ndim - 1, 1).reshape(x.shape)


@dataclasses.dataclass(frozen=True)
class ImageAction(Action):
  """A group acting on square (or fixed-size) images ``[..., H, W, C]`` by moving pixels.

  ``pixel_map(g, H, W)`` returns ``int [H, W]``: the image of the index grid under g,
  so that ``(g.x).flat = x.flat[perm[g]]``. The permutation tables are built once per
  image size, in numpy.
  """

  group: FiniteGroup
  pixel_map: Callable
  what: str = dataclasses.field(default="image action", compare=False)
  square: bool = True
  size: tuple[int, int] | None = None

  def validate(self, x):
    if x.ndim < 3:
      raise ValueError(f"{self.what}: expected images [..., H, W, C], got shape {x.shape}")
    h, w = x.shape[-3], x.shape[-2]
    if self.square and h != w:
      raise ValueError(f"{self.what} needs square images, got H x W = {h} x {w} "
                       f"(from shape {x.shape} read as [..., H, W, C])")
    if self.size is not None and (h, w) != tuple(self.size):
      raise ValueError(f"{self.what} acts on {self.size[0]} x {self.size[1]} images, "
                       f"got {h} x {w} (from shape {x.shape})")

  def table(self, h: int, w: int) -> np.ndarray:
    return _pixel_table(self.group, self.pixel_map, h, w)

  def apply(self, g, x):
    return _gather(x, self.table(x.shape[-3], x.shape[-2]), g, x.ndim - 3, 2)


@functools.lru_cache(maxsize=None)
def _pixel_table(group, pixel_map, h, w):
  grid = np.arange(h * w).reshape(h, w)
  t = np.stack([np.asarray(pixel_map(g, grid)).reshape(-1) for g in range(group.order)])
  if not all(np.array_equal(np.sort(row), np.arange(h * w)) for row in t):
    raise ValueError(f"pixel map of {group.name} is not a permutation on {h} x {w} images")
  return t.astype(np.int32)


# Pixel maps are small frozen dataclasses (not closures) so that equal actions compare and
# hash equal, and a jitted function closing over one is reused.
@dataclasses.dataclass(frozen=True)
class _Rotate:
  step: int

  def __call__(self, g, grid):
    return np.rot90(grid, (g * self.step) % 4)


@dataclasses.dataclass(frozen=True)
class _Roll:
  w: int            # the order of the column shifts
  step: int = 1

  def __call__(self, g, grid):
    i, j = divmod(g, self.w)
    return np.roll(grid, (i * self.step, j * self.step), axis=(0, 1))


def _dihedral4(g, grid):
  # Element f^m r^k of D4 (index 4m + k): first rotate by k quarter turns, then flip.
  m, k = divmod(g, 4)
  out = np.rot90(grid, k)
  return np.flip(out, axis=1) if m else out


def rotations(order: int = 4) -> ImageAction:
  """C_order (order 1, 2 or 4) rotating square images ``[..., H, W, C]``.

  ``r^k`` turns by ``k * 360 / order`` degrees counter-clockwise (row 0 drawn at the top):
  for C4, ``rotations()(k, x) == jnp.rot90(x, k, axes=(-3, -2))``.

  >>> import jax.numpy as jnp
  >>> x = jnp.arange(4.0).reshape(2, 2, 1)     # [[0, 1], [2, 3]]
  >>> rotations()(1, x)[..., 0].tolist()       # a quarter turn counter-clockwise
  [[1.0, 3.0], [0.0, 2.0]]
  """
  if order not in (1, 2, 4):
    raise ValueError(f"rotations of a pixel grid by multiples of 360/order degrees are exact "
                     f"only for order 1, 2 or 4, got {order}")
  return ImageAction(groups_lib.cyclic(order), _Rotate(4 // order),
                     what=f"C{order} rotation by {360 // order} degrees")


def rotations_reflections() -> ImageAction:
  """D4 on square images: ``f^m r^k`` rotates by k quarter turns counter-clockwise, then
  (if m = 1) mirrors left-right. Indices as in :func:`eqnn.groups.dihedral`."""
  return ImageAction(groups_lib.dihedral(4), _dihedral4, what="D4 rotation/reflection")


def translations(h: int, w: int, step: int = 1) -> ImageAction:
  """Cyclic translations of ``h x w`` images (an image on a torus) by multiples of ``step``.

  The group is ``C_(h/step) x C_(w/step)``; element (i, j) rolls rows by ``i * step`` and
  columns by ``j * step`` pixels (with wrap-around, so it is an exact pixel permutation).
  """
  if step < 1 or h % step or w % step:
    raise ValueError(f"the shift step {step} must divide the image size {h} x {w}")
  group = groups_lib.direct_product(groups_lib.cyclic(h // step), groups_lib.cyclic(w // step))
  return ImageAction(group, _Roll(w // step, step), what=f"cyclic translations of {h} x {w} "
                     f"images by multiples of {step} px", square=False, size=(h, w))


def permute_points(group: FiniteGroup, perms: np.ndarray, axis: int = -2) -> TableAction:
  """A permutation group moving the points of a set or sequence along ``axis``.

  ``perms[g]`` maps point i to ``perms[g][i]`` (as returned by
  :func:`eqnn.groups.from_permutations`); the point at i moves to ``perms[g][i]``:
  ``(g.x)[perms[g][i]] = x[i]``. Default axis -2 for point clouds ``[..., n, features]``.
  """
  perms = np.asarray(perms)
  gather = perms[group.inverse]    # (g.x)[j] = x[g^-1 (j)]
  return TableAction(group, gather.astype(np.int32), axis, 1,
                     what=f"{group.name} permuting points on axis {axis}")


def check_action_axioms(action: Action, x, atol: float = 0.0) -> None:
  """Checks ``e.x = x`` and ``(gh).x = g.(h.x)`` for all g, h on ``x``; raises AssertionError."""
  group = action.group
  x = jnp.asarray(x)
  orbit = action.orbit(x)
  err = float(jnp.max(jnp.abs(orbit[0] - x)))
  if err > atol:
    raise AssertionError(f"identity does not act trivially: max |e.x - x| = {err}")
  # g.(h.x) for all g, h, against (gh).x.
  both = jax.vmap(lambda hx: action.orbit(hx))(orbit)        # [h, g, ...]
  expected = orbit[jnp.asarray(group.table.T)]               # [h, g] -> (g h).x
  diff = jnp.abs(both - expected).reshape(group.order, group.order, -1).max(-1)
  bad = np.argwhere(np.asarray(diff) > atol)
  if bad.size:
    h, g = bad[0]
    raise AssertionError(
        f"not a left action: ({group.element_names[g]} {group.element_names[h]}).x != "
        f"{group.element_names[g]}.({group.element_names[h]}.x), max error {float(diff[h, g])}")
