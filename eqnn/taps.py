"""A CNN's first block, ``max_pool(relu(conv(x, W) + b), p)``, fused for inputs of few channels.

XLA's CPU conv runs a conv of one or a few input channels far below matmul speed (`make
profile` put the default network's input lift 1 -> 16 at 2% of the matmul peak, a third of
its step with the pooling after it), and the ReLU and max pool after it pass over the
block's full-resolution output, the largest tensor of such a network, several times more
(the pool's argmax, its one-hot, the scattered cotangent). Here the block is one function:

* forward: the conv as ``k^2 C_in`` multiply-adds of the padded input's shifted views (one
  elementwise pass, no im2col), each pooling window's entries compared in the same pass:
  the pooled output and the index of each window's first maximal entry;
* reverse: the pooled cotangent put back at those entries where the max is positive (ReLU's
  mask), and the kernel's and the bias's gradients as one matmul of the ``k^2 C_in`` shifted
  views (and a row of ones) against it, over all positions;
* the input's tangent and gradient (for a first layer, rarely wanted) are JAX's of the same
  multiply-adds.

The same function as the composition with XLA's conv, to float rounding, in forward and
reverse mode; the derivative goes to each window's first maximal entry, as
:func:`eqnn.spatial.max_pool`'s does (``tests/taps_test.py``). :func:`eqnn.spatial.
conv_relu_pool` chooses this form (``form="taps"``) on CPU.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from eqnn.conv_impls import shifted_views


def _conv(views, kernel, bias):
  """``sum_{t, c} views[t][..., c] * kernel[t, c, :]`` (+ bias): the conv, elementwise."""
  kh, kw, c, f = kernel.shape
  k = kernel.reshape(kh * kw, c, f)
  y = bias
  for t, v in enumerate(views):
    for ci in range(c):
      y = y + v[..., ci:ci + 1] * k[t, ci]
  return y


def _window_entries(y, window):
  """``[N, H, W, F]`` -> the ``window^2`` entries of each pooling window, each ``[N, H2, W2, F]``
  (row-major in the window; a ragged edge dropped)."""
  n, h, w, f = y.shape
  h2, w2 = h // window, w // window
  y = y[:, :h2 * window, :w2 * window].reshape(n, h2, window, w2, window, f)
  return [y[:, :, a, :, b] for a in range(window) for b in range(window)]


def _first_max(entries):
  """Each window's max and the index of its first maximal entry (int8)."""
  m, idx = entries[0], jnp.zeros(entries[0].shape, jnp.int8)
  for i, e in enumerate(entries[1:], 1):
    idx = jnp.where(e > m, jnp.int8(i), idx)
    m = jnp.maximum(m, e)
  return m, idx


def _forward(x, kernel, bias, window, padding):
  y = _conv(shifted_views(x, kernel.shape[:2], padding), kernel, bias)
  m, idx = _first_max(_window_entries(y, window))
  return jax.nn.relu(m), idx


def _kept(fn, kernel, *args):
  """``fn(*args)``, computed once and kept. XLA's CPU backend drops optimization barriers and
  would fuse the forward's window comparisons into each consumer in the backward pass,
  recomputing the conv there (seen in profiler traces, docs/performance.md); no fusion crosses a
  conditional. Both branches are ``fn``, so the predicate (opaque to XLA: whether the kernel
  has no NaN) changes nothing but where XLA may fuse."""
  return jax.lax.cond(jnp.all(kernel == kernel), fn, fn, *args)


def _scatter(ct, idx, live, window, h, w):
  """The pooled cotangent at each window's picked entry, zero elsewhere: ``[N, H, W, F]``."""
  n, h2, w2, f = ct.shape
  ct = jnp.where(live, ct, 0.0)
  full = jnp.stack([jnp.where(idx == i, ct, 0.0) for i in range(window * window)], -2)
  full = full.reshape(n, h2, w2, window, window, f).transpose(0, 1, 3, 2, 4, 5)
  full = full.reshape(n, h2 * window, w2 * window, f)
  return jnp.pad(full, ((0, 0), (0, h - h2 * window), (0, w - w2 * window), (0, 0)))


@functools.partial(jax.custom_jvp, nondiff_argnums=(3, 4))
def conv_relu_pool(x, kernel, bias, window, padding):
  """``max_pool(relu(conv(x, kernel) + bias), window)`` for ``x [N, H, W, C]``, ``kernel
  [kh, kw, C, F]``, ``bias [F]`` (stride 1, "SAME" or "VALID"; the pool's window = stride,
  a ragged edge dropped), in the fused form above."""
  return _forward(x, kernel, bias, window, padding)[0]


@conv_relu_pool.defjvp
def _jvp(window, padding, primals, tangents):
  x, kernel, bias = primals
  dx, dk, db = tangents
  kshape = kernel.shape[:2]
  views = shifted_views(x, kshape, padding)
  h, w = views[0].shape[1:3]
  out, idx = _kept(lambda a, k, b: _forward(a, k, b, window, padding), kernel, x, kernel, bias)
  live = out > 0

  def gradients(ct):
    """(dK, db) of ``<out, ct>``: one matmul of the shifted views and a row of ones (the
    bias) against the scattered cotangent, over all N H W positions."""
    s = _scatter(ct, idx, live, window, h, w)
    rows = [v[..., c] for v in views for c in range(x.shape[-1])]
    stacked = jnp.stack(rows + [jnp.ones_like(rows[0])]).reshape(len(rows) + 1, -1)
    g = stacked @ s.reshape(-1, s.shape[-1])
    return g[:-1].reshape(kernel.shape), g[-1]

  # The tangent in (kernel, bias) written as the transpose of their gradients, so that
  # reverse mode runs ``gradients`` itself (as eqnn.conv_impls does for Winograd's).
  dkb, = jax.linear_transpose(gradients, jax.ShapeDtypeStruct(out.shape, out.dtype))((dk, db))
  # The tangent in x: each window's picked entry of the conv of dx (no bias), where live.
  entries = _window_entries(_conv(shifted_views(dx, kshape, padding), kernel, 0.0), window)
  dxt = sum(jnp.where(live & (idx == i), e, 0.0) for i, e in enumerate(entries))
  return out, dkb + dxt
