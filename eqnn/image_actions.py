"""Groups moving the pixels of images ``[..., H, W, C]``: turns, reflections, torus shifts.

Part of :mod:`eqnn.actions` (import them from there). Quarter turns, D4 and torus shifts are
exact pixel permutations, ``(g . x).flat = x.flat[perm[g]]``. Turns by other angles (C_n, D_n
for n not 1, 2, 4) resample the pixel grid: bilinear interpolation, pixels outside the
inscribed disk set to zero (as escnn's ``MaskModule`` does); bicubic on request. Resampling is *not* a group
action: ``(gh).x`` and ``g.(h.x)`` differ by interpolation error, so these actions say
``approximate = True`` and :func:`eqnn.actions.check_action_axioms` reports their error
instead of failing. Where 4 divides n, turning by ``theta + 90`` degrees is built as ``rot90``
of turning by ``theta``, so the quarter turns among them act exactly, bit for bit.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from eqnn import groups as groups_lib
from eqnn.actions import Action, _gather
from eqnn.groups import FiniteGroup


@dataclasses.dataclass(frozen=True)
class ImageAction(Action):
  """A group acting on square (or fixed-size) images ``[..., H, W, C]`` by moving pixels.

  ``pixel_map(g, grid)`` returns the ``[H, W]`` index grid moved by g, so that ``(g.x).flat =
  x.flat[table[g]]``; the tables are built once per image size, in numpy."""

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
    """``g . x``: a gather by g's table; for a g known when traced (an int) whose table turns
    or mirrors the grid, ``jnp.rot90`` and ``jnp.flip``, the same values without a gather."""
    h, w = x.shape[-3], x.shape[-2]
    turn = (_grid_isometries(self.group, self.pixel_map, h, w)[int(g)]
            if isinstance(g, (int, np.integer)) and 0 <= g < self.group.order else None)
    if turn is None:
      return _gather(x, self.table(h, w), g, x.ndim - 3, 2)
    y = jnp.rot90(x, turn[0], axes=(x.ndim - 3, x.ndim - 2))
    return jnp.flip(y, x.ndim - 2) if turn[1] else y


def kernel_table(action, k: int) -> np.ndarray:
  """``int [|G|, k * k]``: how ``action`` moves a ``k x k`` conv kernel, for turning kernels
  instead of images (``eqnn.ops.lift_conv(..., impl="kernels")``).

  Only for an :class:`ImageAction` whose every element is an isometry of the pixel grid about
  its centre (quarter turns and mirrors: C2, C4, D4): then ``conv(g . x, W) = g . conv(x,
  g^-1 . W)`` exactly, for an odd kernel with SAME padding or any kernel with VALID. Anything
  else (translations, which carry pixels across the border; resampled turns) raises.
  """
  if not isinstance(action, ImageAction) or not _centre_isometries(action.group,
                                                                   action.pixel_map):
    raise ValueError(f"turning the kernel needs an action by rotations and mirrors of the "
                     f"pixel grid about its centre (C2, C4, D4 on images); "
                     f"{getattr(action, 'what', type(action).__name__)} is not one")
  return _pixel_table(action.group, action.pixel_map, k, k)


@functools.lru_cache(maxsize=None)
def _centre_isometries(group, pixel_map) -> bool:
  """Whether every element's pixel map is one of the 8 symmetries of the square grid about
  its centre (a turn, then maybe a mirror), checked on 5 x 5 and 6 x 6 grids (odd and even)."""
  try:
    return all(t is not None for n in (5, 6) for t in _grid_isometries(group, pixel_map, n, n))
  except ValueError:                  # not a permutation
    return False


@functools.lru_cache(maxsize=None)
def _grid_isometries(group, pixel_map, h, w) -> tuple:
  """Per element, ``(quarter turns, mirrored)`` where its table on an ``h x w`` grid is
  ``np.rot90`` of the grid that many times, then (if mirrored) left-right flipped; else None."""
  grid, forms = np.arange(h * w, dtype=np.int32).reshape(h, w), {}
  for quarter, mirror in itertools.product(range(4), (False, True)):
    t = np.rot90(grid, quarter)
    if t.shape == grid.shape:
      forms.setdefault((np.flip(t, 1) if mirror else t).tobytes(), (quarter, mirror))
  return tuple(forms.get(r.reshape(h, w).tobytes()) for r in _pixel_table(group, pixel_map, h, w))


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


def rotations(order: int = 4, interpolation: str = "bilinear"):
  """C_order rotating square images ``[..., H, W, C]``: ``r^k`` turns by ``k * 360 / order``
  degrees counter-clockwise (row 0 drawn at the top).

  Order 1, 2 or 4: an exact pixel permutation, ``rotations()(k, x) == jnp.rot90(x, k,
  axes=(-3, -2))``. Any other order: :class:`ResampledTurns` (``interpolation`` "bilinear" or
  "bicubic", disk-masked, ``approximate = True``; quarter turns exact where 4 divides the
  order).

  >>> import jax.numpy as jnp
  >>> x = jnp.arange(4.0).reshape(2, 2, 1)     # [[0, 1], [2, 3]]
  >>> rotations()(1, x)[..., 0].tolist()       # a quarter turn counter-clockwise
  [[1.0, 3.0], [0.0, 2.0]]
  """
  if order < 1:
    raise ValueError(f"rotations need order >= 1, got {order}")
  if interpolation not in INTERPOLATIONS:
    raise ValueError(f"interpolation {interpolation!r}: choose one of {INTERPOLATIONS}")
  if order not in (1, 2, 4):
    return ResampledTurns(groups_lib.cyclic(order), order, interpolation=interpolation,
                          what=f"C{order} turning images by {360 / order:g} degrees "
                               f"({interpolation})")
  return ImageAction(groups_lib.cyclic(order), _Rotate(4 // order),
                     what=f"C{order} rotation by {360 // order} degrees")


def rotations_reflections(n: int = 4, interpolation: str = "bilinear"):
  """D_n on square images: ``f^m r^k`` turns by ``k * 360 / n`` degrees counter-clockwise, then
  (if m = 1) mirrors left-right. Indices as in :func:`eqnn.groups.dihedral`. n = 4: an exact
  pixel permutation; any other n: resampled (:class:`ResampledTurns`, approximate)."""
  if n < 1:
    raise ValueError(f"rotations_reflections needs n >= 1, got {n}")
  if interpolation not in INTERPOLATIONS:
    raise ValueError(f"interpolation {interpolation!r}: choose one of {INTERPOLATIONS}")
  if n != 4:
    return ResampledTurns(groups_lib.dihedral(n), n, reflections=True,
                          interpolation=interpolation,
                          what=f"D{n} turning and mirroring images ({interpolation})")
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


# --- turns by any angle: resampling -----------------------------------------------------

def disk_mask(h: int, w: int) -> np.ndarray:
  """``float32 [h, w]``: 1 inside the disk inscribed in the image, 0 outside."""
  c = (np.array([h, w]) - 1) / 2.0
  i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  return (((i - c[0]) ** 2 + (j - c[1]) ** 2) <= (min(h, w) / 2.0) ** 2).astype(np.float32)


INTERPOLATIONS = ("bilinear", "bicubic")


def _cubic(t, xp=np):
  """Keys' cubic convolution kernel (a = -0.5, what PIL and OpenCV call bicubic)."""
  t = xp.abs(t)
  near = (1.5 * t - 2.5) * t * t + 1
  far = ((-0.5 * t + 2.5) * t - 4) * t + 2
  return xp.where(t <= 1, near, xp.where(t < 2, far, 0)).astype(t.dtype)


def axis_taps(start, frac, size: int, interpolation: str, xp=np) -> list:
  """The resampling taps along one axis, separable: for each source offset d from
  ``start = floor(coordinate)`` (0, 1 bilinear; -1 .. 2 bicubic), ``(index, weight)`` with the
  index clipped to ``[0, size)`` and the weight 0 where the source is off the grid. ``xp``:
  numpy (the group actions' tables, on the host) or jax.numpy (:func:`eqnn.spatial.rotate`,
  traced), so both resample with the same weights."""
  if interpolation == "bilinear":
    offsets, weight = (0, 1), (lambda d, f: 1 - f if d == 0 else f)
  else:
    offsets, weight = (-1, 0, 1, 2), (lambda d, f: _cubic(f - d, xp))
  out = []
  for d in offsets:
    k = (start + d).astype(xp.int32)
    on = (k >= 0) & (k < size)
    out.append((xp.clip(k, 0, size - 1), xp.where(on, weight(d, frac), 0.0)))
  return out


def _taps(h: int, angles, interpolation: str = "bilinear", mask: bool = True,
          dtype=np.float64):
  """``(idx [A, h*h, T], w [A, h*h, T])``: after a counter-clockwise turn by ``angles[a]``
  radians about the centre, output pixel p is ``sum_t w[a, p, t] x.flat[idx[a, p, t]]``.
  Bilinear reads T = 4 source pixels, bicubic 16. ``mask``: zero outside the inscribed disk,
  in the source and in the output; sources off the grid read as zero either way. ``dtype``:
  of the coordinate arithmetic (the group actions' tables are built in float64)."""
  if interpolation not in INTERPOLATIONS:
    raise ValueError(f"interpolation {interpolation!r}: choose one of {INTERPOLATIONS}")
  a = np.asarray(angles, dtype).reshape(-1, 1, 1)
  c = dtype((h - 1) / 2.0)
  i, j = np.meshgrid(np.arange(h, dtype=dtype), np.arange(h, dtype=dtype), indexing="ij")
  x, y = j - c, c - i                                   # display coordinates: x right, y up
  sx = x * np.cos(a) + y * np.sin(a)                    # the source: turned back by angle
  sy = -x * np.sin(a) + y * np.cos(a)
  col, row = c + sx, c - sy                             # [A, h, h]
  r0, c0 = np.floor(row), np.floor(col)
  fr, fc = row - r0, col - c0
  disk = disk_mask(h, h)
  cols = axis_taps(c0, fc, h, interpolation)           # the same for every row tap
  taps = len(cols) ** 2
  idx = np.empty((a.shape[0], h * h, taps), np.int32)
  wts = np.empty((a.shape[0], h * h, taps), np.float32)
  t = 0
  for rr, wr in axis_taps(r0, fr, h, interpolation):
    for cc, wc in cols:
      wt = wr * wc
      if mask:
        wt = wt * disk[rr, cc] * disk
      wt[np.abs(wt) < 1e-12] = 0.0
      idx[..., t] = (rr * h + cc).reshape(a.shape[0], -1)
      wts[..., t] = wt.reshape(a.shape[0], -1)
      t += 1
  return idx, wts


def turn_images(images: np.ndarray, angles, interpolation: str = "bilinear",
                mask: bool = True, chunk: int = 512) -> np.ndarray:
  """Each square image ``[N, H, H, C]`` (numpy, float) turned counter-clockwise by its own
  angle ``[N]`` (radians), resampled on the host: how :func:`eqnn.data.rotated_mnist` builds
  its digits. ``mask``: as :class:`ResampledTurns` (zero outside the inscribed disk)."""
  images = np.asarray(images, np.float32)
  n, h, w, ch = images.shape
  if h != w:
    raise ValueError(f"turn_images needs square images [N, H, H, C], got shape {images.shape}")
  angles = np.broadcast_to(np.asarray(angles, np.float64), (n,))
  out = np.empty_like(images)
  for s in range(0, n, chunk):
    idx, wts = _taps(h, angles[s:s + chunk], interpolation, mask, np.float32)  # [a, p, T]
    flat = images[s:s + chunk].reshape(len(idx), h * h, ch)
    rows = np.arange(len(idx))[:, None, None]
    for k in range(ch):
      gathered = flat[:, :, k][rows, idx]                                 # [a, p, T]
      out[s:s + chunk, ..., k] = np.einsum("apt,apt->ap", wts, gathered).reshape(-1, h, h)
  return out


@functools.lru_cache(maxsize=None)
def _turn_tables(n: int, reflections: bool, h: int, interpolation: str = "bilinear"):
  """Tables ``[|G|, h*h, T]`` for C_n (or D_n): element ``f^m r^k`` turns by ``360 k / n``
  degrees, then mirrors left-right if m = 1. With 4 | n, k = q n/4 + s is built as q quarter
  turns (an exact permutation of the output positions) of the turn by s."""
  quarter = n // 4 if n % 4 == 0 else None
  grid = np.arange(h * h).reshape(h, h)
  idx, wts = [], []
  for g in range(2 * n if reflections else n):
    m, k = divmod(g, n)
    if quarter:
      q, r = divmod(k, quarter)
      base_i, base_w = (t[0] for t in _taps(h, [2 * np.pi * r / n], interpolation))
      perm = np.rot90(grid, q).reshape(-1)                # out[p] = turned[perm[p]]
    else:
      base_i, base_w = (t[0] for t in _taps(h, [2 * np.pi * k / n], interpolation))
      perm = grid.reshape(-1)
    if m:
      perm = np.flip(perm.reshape(h, h), axis=1).reshape(-1)
    idx.append(base_i[perm])
    wts.append(base_w[perm])
  return np.stack(idx), np.stack(wts)


@dataclasses.dataclass(frozen=True)
class ResampledTurns(Action):
  """C_n (or D_n) turning square images by ``360 k / n`` degrees by resampling (``interpolation``
  "bilinear", 4 source pixels per output pixel, or "bicubic", 16), masked to the inscribed
  disk. Approximate: see the module docstring; ``docs/report.md`` measures both."""

  group: FiniteGroup
  n: int
  reflections: bool = False
  interpolation: str = "bilinear"
  what: str = dataclasses.field(default="resampled turns", compare=False)
  approximate = True

  def validate(self, x):
    if x.ndim < 3 or x.shape[-3] != x.shape[-2]:
      raise ValueError(f"{self.what} needs square images [..., H, W, C], got shape {x.shape}")
    if not jax.numpy.issubdtype(x.dtype, jax.numpy.floating):
      raise ValueError(f"{self.what} resamples: it needs floating-point images, got {x.dtype}")

  def example_shape(self):
    return (9, 9, 1)

  def apply(self, g, x):
    jnp = jax.numpy
    h = x.shape[-3]
    idx, wts = _turn_tables(self.n, self.reflections, h, self.interpolation)
    i = jnp.asarray(idx).at[g].get(mode="fill", fill_value=h * h)          # [h*h, T]
    w = jnp.asarray(wts, x.dtype).at[g].get(mode="fill", fill_value=jnp.nan)
    flat = x.reshape(x.shape[:-3] + (h * h, x.shape[-1]))
    out = sum(w[:, k, None] * flat.at[..., i[:, k], :].get(mode="fill", fill_value=0)
              for k in range(idx.shape[-1]))
    return out.reshape(x.shape)
