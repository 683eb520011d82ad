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

from eqnn import actions as actions_lib
from eqnn import image_actions
from eqnn import taps
from eqnn.conv_choice import (BIAS_SUMS, CONV_FORMS, WEIGHT_GRADS, bias_sums,  # noqa: F401
                               check_forms, conv_forms, default_bias_sums, default_form,
                               default_weight_grad, forms, kernel_gradients)
from eqnn.conv_impls import (DIMS, _pads, conv_windows_grad, shifted_views, winograd_conv,
                              xla_conv)


def add_bias(y: jax.Array, bias: jax.Array | None, dtype: Any = jnp.float32) -> jax.Array:
  """``y + bias`` (broadcast over the last axis) in ``dtype``; ``y`` itself when there is none.
  Written as :func:`bias_sums` says where traced (its gradient a reduction or a dot)."""
  if bias is None:
    return y
  b = bias.astype(dtype)
  if default_bias_sums() == "dot":
    ones = jnp.ones((y.size // max(y.shape[-1], 1), 1), dtype)
    return y + (ones @ b[None, :]).reshape(y.shape)
  return y + b


def require_float(x, what: str) -> None:
  """Refuses integer inputs: raw uint8 images must be scaled first (``eqnn.data.to_float``)."""
  dtype = jnp.asarray(x).dtype
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f"{what} expects floating-point inputs, got {dtype}; scale raw uint8 "
                    f"images to [0, 1] first (eqnn.data.to_float)")


def conv(x: jax.Array, kernel: jax.Array, padding: str = "SAME", dtype: Any = jnp.float32,
         feature_groups: int = 1, weight_grad: str | None = None,
         form: str | None = None) -> jax.Array:
  """A stride-1 conv over 1 or 2 spatial axes (from the kernel's rank): ``x [B, L, C_in]``
  with ``kernel [k, C_in / groups, C_out]``, or ``x [B, H, W, C_in]`` with
  ``kernel [k, k, C_in / groups, C_out]``.

  ``weight_grad``: how the kernel's gradient is computed (the same function either way;
  ``tests/spatial_test.py``). "xla": XLA's own; "windows": one matmul per kernel tap, the
  tap's shifted input window against the output's cotangent
  (:func:`eqnn.conv_impls.conv_windows_grad`);
  "auto" (the default, or :func:`kernel_gradients`'s, which 1-D and grouped convs ignore):
  "windows" on CPU for 2-D convs without feature groups with at least ``WINDOWS_MIN_IN``
  input and ``WINDOWS_MIN_OUT`` output channels, else "xla" (on an accelerator XLA's conv
  library is the one to use). On a 2-core AVX-512 CPU (`python -m experiments.bench
  --only=kernel_gradients`, which times these lone convs), XLA computed the kernel gradient
  of a 3x3 conv at 28 x 28 with 160 -> 160 channels, batch 25, in 226 ms, the windows in
  107 ms; at 80 -> 80 and 160 -> 64 the windows were 1.55-1.63x faster; at 64 -> 64,
  80 -> 32, 48 -> 96 and 16 -> 32 0.90-1.15x, hence the thresholds (fitted to those shapes).

  ``form``: "xla", XLA's conv (with ``weight_grad`` above); "winograd", Winograd's minimal
  filtering F(2 x 2, 3 x 3) (Lavin & Gray, 2016) for 3 x 3 kernels in 2-D without feature
  groups: each 4 x 4 input tile and the kernel transformed by fixed matrices of 0, +-1/2 and
  +-1, 16 matmuls over the channels (2.25x fewer multiplies than the conv), the product
  transformed back to its 2 x 2 outputs. Its input gradient is Winograd's conv of the
  output's cotangent with the flipped kernel, its kernel gradient from the same tiles
  (``weight_grad`` "auto"), or by windows or XLA's conv where ``weight_grad`` says so
  (:func:`eqnn.conv_impls.winograd_conv`; the same function to float rounding, forward and reverse mode:
  ``tests/spatial_test.py``). "auto" (the default, or :func:`conv_forms`'s): "winograd" on
  CPU for such convs with at least ``WINOGRAD_MIN_IN`` input and ``WINOGRAD_MIN_OUT`` output
  channels, else "xla". Of the project's networks only the authors' V1 has such convs: its
  train step at batch 128 ran 1.22x (4 x 32) and 1.48x (8 x 16) as fast with them as with
  XLA's (`python -m experiments.bench --only=conv_forms`, 2026-12-03, 2-core AMD EPYC;
  docs/performance.md), where XLA's convs kept the kernel gradient by windows; with XLA's
  kernel gradient too they ran 1.01-1.62x faster than Winograd's in later runs, so V1's config
  sets both (``EquivariantCNN(conv_form=..., kernel_gradient=...)``; these thresholds were
  fitted on another machine type and are unchanged).
  """
  spatial = kernel.ndim - 2
  if spatial not in DIMS or x.ndim != spatial + 2:
    raise ValueError(f"a conv with kernel shape {kernel.shape} needs inputs "
                     f"[B, {'L' if spatial == 1 else 'H, W'}, C], got {x.shape}")
  if weight_grad is not None and weight_grad not in WEIGHT_GRADS:     # named as the argument
    raise ValueError(f"weight_grad {weight_grad!r}: choose one of {WEIGHT_GRADS}")
  check_forms(conv_form=form)
  x, kernel = x.astype(dtype), kernel.astype(dtype)
  windowable = spatial == 2 and feature_groups == 1
  if weight_grad == "windows" and not windowable:
    raise ValueError("weight_grad='windows' needs a 2-D conv with feature_groups=1, got "
                     f"kernel {kernel.shape} and feature_groups={feature_groups}")
  winogradable = windowable and kernel.shape[:2] == (3, 3)
  if form is None:               # the block's default (conv_forms), where it applies
    form = default_form() if winogradable else "xla"
  if form == "winograd" and not winogradable:
    raise ValueError(f"form='winograd' needs a 2-D conv with a 3 x 3 kernel and "
                     f"feature_groups=1, got kernel {kernel.shape} and "
                     f"feature_groups={feature_groups}")
  if form == "auto":
    form = ("winograd" if winogradable and kernel.shape[2] >= WINOGRAD_MIN_IN
            and kernel.shape[3] >= WINOGRAD_MIN_OUT and jax.default_backend() == "cpu"
            else "xla")
  if weight_grad is None:        # the block's default (kernel_gradients), where it applies
    weight_grad = default_weight_grad() if windowable else "xla"
  if form == "winograd":         # "auto": the kernel gradient from Winograd's own tiles
    return winograd_conv(x, kernel, padding, "tiles" if weight_grad == "auto" else weight_grad)
  if weight_grad == "auto":
    weight_grad = ("windows" if windowable and kernel.shape[-2] >= WINDOWS_MIN_IN
                   and kernel.shape[-1] >= WINDOWS_MIN_OUT
                   and jax.default_backend() == "cpu" else "xla")
  if weight_grad == "windows":
    return conv_windows_grad(x, kernel, padding)
  return xla_conv(x, kernel, padding, feature_groups)


# Channels from which "auto" computes the kernel gradient by windows (see conv).
WINDOWS_MIN_IN, WINDOWS_MIN_OUT = 80, 64
# Channels from which form="auto" takes Winograd's form on CPU (see conv).
WINOGRAD_MIN_IN, WINOGRAD_MIN_OUT = 80, 64
# Multiply-adds per output (k_h k_w C_in) up to which conv_relu_pool fuses on CPU (see there).
TAPS_MAX = 32


def taps_fit(kernel_shape, window: int) -> bool:
  """Whether :func:`conv_relu_pool`'s "taps" form takes a conv of this kernel shape and this
  pool window: a 2-D kernel ``[k, k, C_in, C_out]`` with ``k^2 C_in <= TAPS_MAX`` and a
  window of 1 to 11 (its picks are int8)."""
  return (len(kernel_shape) == 4 and 1 <= window <= 11
          and kernel_shape[0] * kernel_shape[1] * kernel_shape[2] <= TAPS_MAX)


def conv_relu_pool(x: jax.Array, kernel: jax.Array, bias: jax.Array | None, window: int,
                   padding: str = "SAME", dtype: Any = jnp.float32,
                   form: str | None = None) -> jax.Array:
  """``max_pool(relu(conv(x, kernel) + bias), window)``: a CNN's first block, ``x [B, H, W,
  C_in]``, ``kernel [k, k, C_in, C_out]``, ``bias [C_out]`` or None; ``window`` 1 for none.

  ``form``: "taps", the block fused for inputs of few channels (:func:`eqnn.taps.
  conv_relu_pool`: the conv as k^2 C_in multiply-adds of shifted views, the pool's picks kept,
  the kernel's gradient one matmul); "xla" or "winograd", the composition with :func:`conv`
  in that form; "auto" (the default, or :func:`conv_forms`'s): "taps" on CPU for 2-D convs
  with ``k^2 C_in <= TAPS_MAX`` and a window of at most 11, else the composition with
  :func:`conv`'s own choice. The same function either way (``tests/taps_test.py``). With
  the first block fused, whole train steps at batch 128 ran 1.14x (the paper's stacking)
  and 1.22x (make train's network) as fast as with it composed on XLA's conv (`python -m
  experiments.bench --only=conv_forms`, 2026-12-03, 2-core AMD EPYC; docs/performance.md).
  """
  if form is not None and form not in CONV_FORMS + ("taps",):
    raise ValueError(f"conv form {form!r}: choose one of {CONV_FORMS + ('taps',)}")
  if window < 1:
    raise ValueError(f"max pool window {window}: needs at least 1 (1 for no pooling)")
  fusable = x.ndim == 4 and taps_fit(kernel.shape, window)
  chosen = default_form() if form is None else form
  if chosen == "auto" and fusable and jax.default_backend() == "cpu":
    chosen = "taps"
  if chosen == "taps":
    if not fusable:
      raise ValueError(f"form='taps' needs a 2-D conv (x [B, H, W, C], kernel [k, k, C_in, "
                       f"C_out]) with k^2 C_in <= {TAPS_MAX} and a pool window of 1 to 11, "
                       f"got x {x.shape}, kernel {kernel.shape}, window {window}")
    if x.shape[-1] != kernel.shape[2]:
      raise ValueError(f"kernel {kernel.shape} expects {kernel.shape[2]} input channels, got "
                       f"x {x.shape}")
    _pads(kernel.shape[:2], padding)                 # raises for an unknown padding
    b = jnp.zeros(kernel.shape[-1], dtype) if bias is None else bias.astype(dtype)
    return taps.conv_relu_pool(x.astype(dtype), kernel.astype(dtype), b, window, padding)
  y = conv(x, kernel, padding, dtype, form=None if form is None else chosen)
  return max_pool(jax.nn.relu(add_bias(y, bias, dtype)), window)


def patches(x: jax.Array, k: int, spatial: int = 2, padding: str = "SAME") -> jax.Array:
  """The ``k^d`` shifted windows of a stride-1 conv over axes ``1 .. spatial`` of
  ``x [B, *spatial, ..., C]``, side by side on a new axis before the last:
  ``[B, *spatial', ..., k^d, C]`` in the kernel's order, so that for ``x [B, H, W, C]``
  ``patches(x, k).reshape(B, H, W, -1) @ kernel.reshape(-1, C_out) == conv(x, kernel)``.
  Cheap where ``k^d C`` is small (the input lift's one or few channels), where XLA's conv
  runs far below matmul speed."""
  return jnp.stack(shifted_views(x, (k,) * spatial, padding), -2)


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
  m, first = _max_and_first(_windows_last(x, window))
  pick = jax.nn.one_hot(first, window * window, dtype=x.dtype)
  return m, jnp.sum(pick * _windows_last(dx, window), -1)


def _max_and_first(t):
  """The max over the last axis and the index of its first maximal entry (NaN counts as
  maximal, as in ``jnp.argmax``), in one reduction: ``t.max(-1)`` beside ``jnp.argmax`` were
  two passes over the windows, and the pair ran a lone pool's forward and backward 1.4-2.2x
  slower (2x2 windows of ``[128, 14, 14, 64]`` and ``[128, 7, 7, 128]``, with and without
  YNNPACK's fusions). In whole train steps, where XLA fuses the pool with its neighbours, the
  gain is smaller: the paper's stacking 1.045x without YNNPACK (1.008x with XLA's default
  fusions), make train's network and V1 0.99-1.01x (2-core Intel Xeon, scratch, 2026-12-04)."""
  index = jax.lax.broadcasted_iota(jnp.int32, t.shape, t.ndim - 1)

  def keep_first(a, b):
    (av, ai), (bv, bi) = a, b
    take_a = (av > bv) | (av != av)
    take_ai = take_a | ((av == bv) & (ai < bi))
    return jnp.where(take_a, av, bv), jnp.where(take_ai, ai, bi)

  init = (jnp.array(-jnp.inf, t.dtype), jnp.array(0, jnp.int32))
  return jax.lax.reduce((t, index), init, keep_first, (t.ndim - 1,))


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
