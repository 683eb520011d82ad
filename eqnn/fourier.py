"""Group convolutions over a cyclic group in the Fourier basis of the group axis.

A layer lifted over the block action of C_n has block-circulant weights: output block g is
``sum_i W[i - g] * x[i]`` (indices mod n, ``*`` any linear map over channels, e.g. a conv;
see :func:`eqnn.ops.block_circulant`). The discrete Fourier transform over the group axis
diagonalises it:

    X_k = sum_i x_i w^(-k i),   W_k = sum_j W_j w^(k j),   Out_k = W_k * X_k,   w = e^(2 pi i / n)

and ``out_g = (1/n) sum_k Out_k w^(k g)``. Real inputs make ``Out_(n-k)`` the conjugate of
``Out_k``, so only k = 0 .. n//2 are computed: k = 0 (and k = n/2 for even n) are real
maps with C_in -> C_out channels, every other k a complex one, done as one real map with
2 C_in -> 2 C_out channels. For C4 that is 1 + 1 + 4 = 6 units of work instead of the 16 of
the expanded (dense) form; for C_n about 2n instead of n^2. The transforms themselves are
sums over n blocks, cheap next to the convolutions.

These are the irreducible representations of C_n; other groups (D4, products) have their
own (matrix-valued) ones, not done here: eqnn uses the expanded form for them.
"""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
import numpy as np

from eqnn import groups as groups_lib
from eqnn.groups import FiniteGroup


def is_cyclic_in_order(group: FiniteGroup) -> bool:
  """True if ``group`` is C_n with element i = r^i (eqnn's ``groups.cyclic(n)`` ordering)."""
  return group == groups_lib.cyclic(group.order) or np.array_equal(
      group.table, groups_lib.cyclic(group.order).table)


def _frequencies(n: int):
  """(real frequencies, complex frequencies) among k = 0 .. n//2."""
  real = [0] + ([n // 2] if n % 2 == 0 and n > 1 else [])
  cplx = [k for k in range(1, (n + 1) // 2)]
  return real, cplx


def circulant_apply(x: jnp.ndarray, kernel: jnp.ndarray, n: int,
                    linear: Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]) -> jnp.ndarray:
  """``out[g] = sum_i linear(x[i], kernel[i - g])`` over C_n, via the Fourier basis.

  Args:
    x: ``[n, ..., C_in]`` input blocks (group axis first).
    kernel: ``[n, ..., C_in, C_out]`` one kernel per input block (the un-expanded weights
      of a layer lifted over the block action: block j of its input channels).
    n: the group order.
    linear: a map ``(x [..., C_in], k [..., C_in, C_out]) -> [..., C_out]`` linear in both
      (a conv, a matmul).

  Returns:
    ``[n, ..., C_out]``.
  """
  theta = 2 * np.pi / n
  i = np.arange(n)
  real, cplx = _frequencies(n)
  outs = {}
  for k in real:
    c = np.cos(theta * k * i).astype(np.float32)              # +-1
    xk = jnp.tensordot(c, x, axes=(0, 0))
    wk = jnp.tensordot(c, kernel, axes=(0, 0))
    outs[k] = linear(xk, wk)
  for k in cplx:
    c = np.cos(theta * k * i).astype(np.float32)
    s = np.sin(theta * k * i).astype(np.float32)
    xr, xi = jnp.tensordot(c, x, axes=(0, 0)), -jnp.tensordot(s, x, axes=(0, 0))
    wr, wi = jnp.tensordot(c, kernel, axes=(0, 0)), jnp.tensordot(s, kernel, axes=(0, 0))
    # (xr + i xi)(wr + i wi) as one real map on [xr, xi] with kernel [[wr, wi], [-wi, wr]].
    block = jnp.concatenate([jnp.concatenate([wr, wi], -1), jnp.concatenate([-wi, wr], -1)], -2)
    o = linear(jnp.concatenate([xr, xi], -1), block)
    cout = o.shape[-1] // 2
    outs[k] = (o[..., :cout], o[..., cout:])
  blocks = []
  for g in range(n):
    acc = outs[0]
    if n % 2 == 0 and n > 1:
      acc = acc + (-1) ** g * outs[n // 2]
    for k in cplx:
      orr, oi = outs[k]
      acc = acc + 2 * (np.cos(theta * k * g) * orr - np.sin(theta * k * g) * oi)
    blocks.append(acc / n)
  return jnp.stack(blocks)


def multiply_adds(n: int, cin: int, cout: int) -> tuple[int, int]:
  """Per output position: (multiply-adds in the Fourier form, in the expanded form)."""
  real, cplx = _frequencies(n)
  return len(real) * cin * cout + len(cplx) * 4 * cin * cout, n * cin * n * cout
