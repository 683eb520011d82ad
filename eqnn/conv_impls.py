"""How :func:`eqnn.spatial.conv` computes a conv and its derivatives: XLA's conv; XLA's conv
with the kernel's gradient as matmuls of shifted windows (``weight_grad="windows"``); and
Winograd's F(2 x 2, 3 x 3) (``form="winograd"``, :mod:`eqnn.winograd`) with its input
gradient as another Winograd conv and its kernel gradient by windows or XLA's conv. Each is
the same function, to float rounding, in forward and reverse mode (``tests/spatial_test.py``);
:func:`eqnn.spatial.conv` chooses among them.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp

from eqnn import winograd
from eqnn.winograd import conv3x3

DIMS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC")}


def xla_conv(x, kernel, padding, feature_groups=1):
  """XLA's own conv (``padding`` "SAME" or "VALID", channels last)."""
  spatial = kernel.ndim - 2
  return jax.lax.conv_general_dilated(x, kernel, (1,) * spatial, padding,
                                      dimension_numbers=DIMS[spatial],
                                      feature_group_count=feature_groups)


def _pads(kernel_shape, padding):
  if padding == "SAME":
    return [((k - 1) // 2, k // 2) for k in kernel_shape]
  if padding == "VALID":
    return [(0, 0) for _ in kernel_shape]
  raise ValueError(f"padding {padding!r}: 'SAME' or 'VALID'")


def shifted_views(x, kernel_shape, padding):
  """The shifted windows of a stride-1 conv with a kernel of spatial shape ``kernel_shape``
  over axes ``1 .. d`` of ``x [B, *spatial, ...]``, padded as ``padding`` says: one view of
  the output's spatial size per kernel tap, in the kernel's order, so that a 2-D conv is
  ``sum_ij views[i * kw + j] @ kernel[i, j]``. Shared by :func:`eqnn.spatial.patches`, the
  kernel gradient by windows and the fused first block (:mod:`eqnn.taps`)."""
  d = len(kernel_shape)
  pads = _pads(kernel_shape, padding)
  xp = jnp.pad(x, [(0, 0)] + pads + [(0, 0)] * (x.ndim - 1 - d))
  out = [n + lo + hi - k + 1 for n, (lo, hi), k in zip(x.shape[1:1 + d], pads, kernel_shape)]
  return [xp[(slice(None),) + tuple(slice(o, o + n) for o, n in zip(offset, out))]
          for offset in itertools.product(*map(range, kernel_shape))]


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def conv_windows_grad(x, kernel, padding):
  """XLA's 2-D conv, with a tangent in the kernel written as k^2 matmuls of shifted input
  windows, ``sum_ij window_ij(x) @ dK[i, j]``: its transpose, the kernel gradient, is then
  ``dK[i, j] = window_ij(x)^T @ dy`` over all ``B H' W'`` positions (k^2 large matmuls),
  while the input's tangent and gradient stay XLA's convs. A custom JVP rather than a
  custom VJP, so forward-mode derivatives work too."""
  return xla_conv(x, kernel, padding)


@conv_windows_grad.defjvp
def _windows_jvp(padding, primals, tangents):
  x, kernel = primals
  dx, dk = tangents
  y = xla_conv(x, kernel, padding)
  return y, xla_conv(dx, kernel, padding) + _window_products(x, dk, padding)


def _window_products(x, dk, padding):
  """``sum_ij window_ij(x) @ dk[i, j]``: the conv of x with dk as k^2 matmuls of shifted
  windows (whose transpose in dk is the kernel gradient by windows)."""
  taps = dk.reshape((-1,) + dk.shape[2:])
  return sum(v @ t for v, t in zip(shifted_views(x, dk.shape[:2], padding), taps))


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def winograd_conv(x, kernel, padding, weight_grad):
  """Winograd's 3 x 3 conv (:func:`eqnn.winograd.conv3x3`) whose input gradient is a Winograd
  conv too (of the output's cotangent, the kernel flipped) and whose kernel gradient is, by
  ``weight_grad``: "tiles", from Winograd's own tiles (:func:`eqnn.winograd.kernel_grad`);
  "windows", the window matmuls of :func:`conv_windows_grad`; "xla", XLA's conv. Not JAX's
  derivatives of the tiles: its transpose of the 16 tile products contracts each over all
  B H W positions, and XLA's CPU backend lays out every one of those operands afresh, a
  strided gather per tile, slower than the whole conv (docs/performance.md)."""
  return conv3x3(x, kernel, _pads((3, 3), padding))


@winograd_conv.defjvp
def _winograd_jvp(padding, weight_grad, primals, tangents):
  x, kernel = primals
  dx, dk = tangents
  pads = _pads((3, 3), padding)
  y = conv3x3(x, kernel, pads)
  if weight_grad == "tiles":      # the tangent written as the transpose of the gradient
    dk_part, = jax.linear_transpose(lambda ct: winograd.kernel_grad(x, ct, pads),
                                    jax.ShapeDtypeStruct(y.shape, y.dtype))(dk)
  elif weight_grad == "windows":
    dk_part = _window_products(x, dk, padding)
  else:
    dk_part = xla_conv(x, dk, padding)
  # The tangent in x, conv(dx, kernel), written as the transpose of its own adjoint: the
  # Winograd conv of the output's cotangent with the kernel flipped and its channels swapped
  # (pads 2 - lo, 2 - hi). Reverse mode transposes it back, so the input gradient is one
  # more Winograd conv, where JAX's transpose of the tiles would sum 16 padded copies of
  # the input's size.
  (lo_h, hi_h), (lo_w, hi_w) = pads
  flipped = jnp.flip(kernel, (0, 1)).swapaxes(2, 3)
  adjoint = lambda ct: conv3x3(ct, flipped, ((2 - lo_h, 2 - hi_h), (2 - lo_w, 2 - hi_w)))
  dx_part, = jax.linear_transpose(adjoint, jax.ShapeDtypeStruct(y.shape, y.dtype))(dx)
  return y, dx_part + dk_part
