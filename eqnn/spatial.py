"""Plain (not lifted) operations on arrays that the lifted layers and models are built from.

Each acts per channel or is a plain conv, so none knows about groups: :func:`conv` (a stride-1
conv over 1 or 2 spatial axes), :func:`patches` (its windows, for a conv as one matmul),
:func:`max_pool` and :func:`blur_pool` (per channel and per group slot, so they commute with
the regular action on a lifted map's group axis), and :func:`rotate` (a continuous turn by
resampling, approximate: the augmentation of MNIST-rot training). :mod:`eqnn.ops` re-exports
them beside the lifted layers.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from eqnn import actions as actions_lib
from eqnn import image_actions

def require_float(x, what: str) -> None:
  """Refuses integer inputs: raw uint8 images must be scaled first (``eqnn.data.to_float``)."""
  dtype = jnp.asarray(x).dtype
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f"{what} expects floating-point inputs, got {dtype}; scale raw uint8 "
                    f"images to [0, 1] first (eqnn.data.to_float)")


_DIMS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC")}


def conv(x: jax.Array, kernel: jax.Array, padding: str = "SAME", dtype: Any = jnp.float32,
         feature_groups: int = 1) -> jax.Array:
  """A stride-1 conv over 1 or 2 spatial axes (from the kernel's rank): ``x [B, L, C_in]``
  with ``kernel [k, C_in / groups, C_out]``, or ``x [B, H, W, C_in]`` with
  ``kernel [k, k, C_in / groups, C_out]``."""
  spatial = kernel.ndim - 2
  if spatial not in _DIMS or x.ndim != spatial + 2:
    raise ValueError(f"a conv with kernel shape {kernel.shape} needs inputs "
                     f"[B, {'L' if spatial == 1 else 'H, W'}, C], got {x.shape}")
  return jax.lax.conv_general_dilated(
      x.astype(dtype), kernel.astype(dtype), (1,) * spatial, padding,
      dimension_numbers=_DIMS[spatial], feature_group_count=feature_groups)



def patches(x: jax.Array, k: int, spatial: int = 2, padding: str = "SAME") -> jax.Array:
  """The ``k^d`` shifted windows of a stride-1 conv over axes ``1 .. spatial`` of
  ``x [B, *spatial, ..., C]``, side by side on a new axis before the last:
  ``[B, *spatial', ..., k^d, C]`` in the kernel's order, so that for ``x [B, H, W, C]``
  ``patches(x, k).reshape(B, H, W, -1) @ kernel.reshape(-1, C_out) == conv(x, kernel)``.
  Cheap where ``k^d C`` is small (the input lift's one or few channels), where XLA's conv
  runs far below matmul speed."""
  shape = x.shape[1:1 + spatial]
  if padding == "SAME":
    pads = [((k - 1) // 2, k // 2)] * spatial
  elif padding == "VALID":
    pads = [(0, 0)] * spatial
  else:
    raise ValueError(f"padding {padding!r}: 'SAME' or 'VALID'")
  xp = jnp.pad(x, [(0, 0)] + pads + [(0, 0)] * (x.ndim - 1 - spatial))
  out = [s + lo + hi - k + 1 for s, (lo, hi) in zip(shape, pads)]
  offsets = np.stack(np.meshgrid(*[np.arange(k)] * spatial, indexing="ij"), -1)
  windows = [xp[(slice(None),) + tuple(slice(o, o + n) for o, n in zip(off, out))]
             for off in offsets.reshape(-1, spatial)]
  return jnp.stack(windows, -2)


def max_pool(x: jax.Array, window: int) -> jax.Array:
  """Max pooling over axes 1 and 2 of ``[B, H, W, ...]``, window = stride, 'VALID'.

  A ragged edge is dropped. Per channel (and per group slot), so it commutes with the
  regular action on the group axis. Written as a reshape and a max rather than
  ``lax.reduce_window``, whose backward pass on CPU is a select-and-scatter.

  The derivative goes to each window's first maximal entry, found in the forward pass and kept
  (a one-hot per window), never by comparing values again in the backward pass. JAX's rule for
  a max compares the window's entries with the max there and divides by the count of equal
  ones; XLA may recompute the entries (say, a fused batch norm before the pool) in the max and
  in the comparison with different roundings, so that none is equal: 0 / 0, a NaN gradient
  under jit that the de-optimized function does not show (seen on an AVX-512 CPU, in most
  windows). Elementwise maxima of the window's strided views avoid that too, but ran the
  pool's forward and backward 2-2.5x slower; this form runs about as fast as the reduction.

  >>> max_pool(jnp.arange(16.0).reshape(1, 4, 4, 1), 2)[0, :, :, 0]
  Array([[ 5.,  7.],
         [13., 15.]], dtype=float32)
  """
  if window <= 1:
    return x
  b, h, w = x.shape[:3]
  hh, ww = h // window, w // window
  if hh == 0 or ww == 0:
    raise ValueError(f"max pool window {window} is larger than the {h} x {w} feature map")
  return _window_max(x[:, :hh * window, :ww * window], window)


def _windows_last(x, window):
  """``[B, H, W, *C] -> [B, H / window, W / window, *C, window^2]``: each window's entries last."""
  b, h, w = x.shape[:3]
  c = x.shape[3:]
  xs = x.reshape((b, h // window, window, w // window, window) + c)
  t = xs.transpose((0, 1, 3) + tuple(range(5, xs.ndim)) + (2, 4))
  return t.reshape(t.shape[:-2] + (window * window,))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _window_max(x, window):
  return _windows_last(x, window).max(-1)


@_window_max.defjvp
def _window_max_jvp(window, primals, tangents):
  """The tangent of each window's max is its argmax entry's tangent: the one-hot of the argmax
  is a function of the primal alone, computed once and kept for the backward pass (its
  transpose), so reverse mode never compares values again and forward mode works too."""
  (x,), (dx,) = primals, tangents
  t = _windows_last(x, window)
  pick = jax.nn.one_hot(jnp.argmax(t, -1), window * window, dtype=x.dtype)
  return t.max(-1), jnp.sum(pick * _windows_last(dx, window), -1)


def _resample(img: jax.Array, row: jax.Array, col: jax.Array, interpolation: str) -> jax.Array:
  """``img [H, W, C]`` read at fractional ``(row, col)`` (each ``[H, W]``), sources off the grid
  zero: 4 taps (bilinear) or 16 (bicubic), gathered from the flattened image, with the taps
  of the group actions' tables (:func:`eqnn.image_actions.axis_taps`)."""
  h, w, c = img.shape
  flat = img.reshape(h * w, c)
  r0, c0 = jnp.floor(row), jnp.floor(col)
  out = jnp.zeros((h, w, c), img.dtype)
  for rr, wr in image_actions.axis_taps(r0, row - r0, h, interpolation, jnp):
    for cc, wc in image_actions.axis_taps(c0, col - c0, w, interpolation, jnp):
      out = out + (wr * wc)[..., None] * flat[rr * w + cc]
  return out


def rotate(images: jax.Array, angles: jax.Array, scales: jax.Array | None = None,
           shifts: jax.Array | None = None, interpolation: str = "bilinear") -> jax.Array:
  """Each image ``[B, H, W, C]`` turned counter-clockwise by its own angle ``[B]`` (radians) by
  resampling (``"bilinear"``, 4 source pixels, or ``"bicubic"``, 16: Keys' a = -0.5, the same
  weights as :func:`eqnn.actions.turn_images`), pixels outside the inscribed disk set to zero
  (input and output): the continuous rotation used for augmentation. Approximate, like any
  resampling.

  ``scales [B]`` (optional) magnifies each image about its centre after the turn, and
  ``shifts [B, 2]`` (optional) then moves it by (right, up) pixels: augmentation beyond
  the group, for data that also vary in size and position.

  >>> x = jnp.zeros((1, 5, 5, 1)).at[0, 2, 3, 0].set(1.0)       # one pixel right of centre
  >>> y = rotate(x, jnp.array([jnp.pi / 2]))                    # a quarter turn: now above it
  >>> [int(v) for v in jnp.argwhere(y[0, :, :, 0] > 0.99)[0]]
  [1, 2]
  """
  b, h, w, c = images.shape
  if interpolation not in ("bilinear", "bicubic"):
    raise ValueError(f"rotate: interpolation {interpolation!r}: 'bilinear' or 'bicubic'")
  if angles.shape != (b,):
    raise ValueError(f"rotate: {b} images need angles of shape ({b},), got {angles.shape}")
  scales = jnp.ones((b,), images.dtype) if scales is None else scales
  shifts = jnp.zeros((b, 2), images.dtype) if shifts is None else shifts
  if scales.shape != (b,) or shifts.shape != (b, 2):
    raise ValueError(f"rotate: {b} images need scales ({b},) and shifts ({b}, 2), got "
                     f"{scales.shape} and {shifts.shape}")
  mask = jnp.asarray(actions_lib.disk_mask(h, w), images.dtype)
  cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
  i, j = jnp.meshgrid(jnp.arange(h, dtype=images.dtype), jnp.arange(w, dtype=images.dtype),
                      indexing="ij")
  x, y = j - cx, cy - i

  def one(img, angle, scale, shift):
    u, v = (x - shift[0]) / scale, (y - shift[1]) / scale      # undo the shift, then the scale
    sx = u * jnp.cos(angle) + v * jnp.sin(angle)               # then the turn
    sy = -u * jnp.sin(angle) + v * jnp.cos(angle)
    return _resample(img * mask[..., None], cy - sy, cx + sx, interpolation) * mask[..., None]

  return jax.vmap(one)(images, angles, scales.astype(images.dtype), shifts.astype(images.dtype))


def blur_pool(y: jax.Array, stride: int = 2) -> jax.Array:
  """Anti-aliased strided pooling over axes 1 and 2 (Zhang 2019): a [1, 2, 1] x [1, 2, 1] / 16
  blur of every channel (and every group slot), then every ``stride``-th pixel. Per channel
  and slot, so it commutes with the regular action on the group axis."""
  if stride <= 1:
    return y
  shape = y.shape
  flat = y.reshape(shape[:3] + (-1,))                                 # [B, H, W, slots * C]
  taps = jnp.array([1.0, 2.0, 1.0], y.dtype)
  kernel = (taps[:, None] * taps[None, :] / 16.0)[:, :, None, None]
  kernel = jnp.tile(kernel, (1, 1, 1, flat.shape[-1]))                # depthwise
  out = jax.lax.conv_general_dilated(flat, kernel, (stride, stride), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     feature_group_count=flat.shape[-1])
  return out.reshape(out.shape[:3] + shape[3:])
