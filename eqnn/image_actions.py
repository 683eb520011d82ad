"""Groups moving the pixels of images ``[..., H, W, C]``: quarter turns, D4, torus shifts.

Part of :mod:`eqnn.actions` (import them from there). Every action here is an exact pixel
permutation, built once per image size in numpy, with the module's one convention
``(g . x).flat = x.flat[perm[g]]``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import numpy as np

from eqnn import groups as groups_lib
from eqnn.actions import Action, _gather
from eqnn.groups import FiniteGroup


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

  def example_shape(self):
    return tuple(self.size) + (1,) if self.size is not None else (6, 6, 1)

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


