"""How :func:`eqnn.spatial.conv` computes a conv and its derivatives: XLA's conv; XLA's conv
with the kernel's gradient as matmuls of shifted windows (``weight_grad="windows"``); and
Winograd's F(2 x 2, 3 x 3) (``form="winograd"``, :mod:`eqnn.winograd`) with its input
gradient as another Winograd conv and its kernel gradient by windows or XLA's conv. Each is
the same function, to float rounding, in forward and reverse mode (``tests/spatial_test.py``);
:func:`eqnn.spatial.conv` chooses among them.
"""

from __future__ import annotations

import functools

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
  return y, xla_conv(dx, kernel, padding) + _window_products(x, dk, padding, y.shape)


def _window_products(x, dk, padding, out_shape):
  """``sum_ij window_ij(x) @ dk[i, j]``: the conv of x with dk as k^2 matmuls of shifted
  windows (whose transpose in dk is the kernel gradient by windows)."""
  kh, kw = dk.shape[:2]
  (lo_h, hi_h), (lo_w, hi_w) = _pads((kh, kw), padding)
  xp = jnp.pad(x, ((0, 0), (lo_h, hi_h), (lo_w, hi_w), (0, 0)))
  h, w = out_shape[1], out_shape[2]
  dy = 0.0
  for i in range(kh):
    for j in range(kw):
      dy = dy + xp[:, i:i + h, j:j + w, :] @ dk[i, j]
  return dy


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
    dk_part = _window_products(x, dk, padding, y.shape)
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
