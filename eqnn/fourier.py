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

These are the irreducible representations of C_n. D_n has real matrix-valued ones (1- and
2-dimensional): :func:`irrep_apply` does the same for any group given its real irreducible
representations, and :func:`dihedral_irreps` lists D_n's. With

    X(rho) = sum_i x_i rho(i),   W(rho) = sum_j W_j rho(j)   (d x d matrices of channel blocks)

the layer ``out_g = sum_i W_(g^-1 i) x_i`` becomes ``Out(rho) = X(rho) W(rho)^T``: for each row
of X, one real map with d C_in -> d C_out channels, d^3 C_in C_out units per irrep, and
``out_g = sum_rho (d / |G|) sum_ab Out(rho)_ab rho(g)_ab`` (Schur orthogonality; every irrep of
D_n is of real type). For D_n that is about 4n units instead of the expanded form's (2n)^2:
12 instead of 64 for D4, 28 instead of 256 for D8.
"""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
import numpy as np

from eqnn import groups as groups_lib
from eqnn.conv_choice import TracedDefault
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


# How the transforms over the group axis are written (read when a function is traced):
# "dots", the group axis moved first and one ``tensordot`` per frequency (XLA compiles a
# matrix-vector dot on a transposed copy); "sums", products with the coefficients broadcast
# and summed where the layer keeps the group axis (loops XLA fuses with their neighbours).
# Which is faster depends on XLA CPU's fusions: with YNNPACK's elementwise and reduction
# fusions off "sums" ran V1's train step 1.11x and the paper's stacking's 1.09x as fast, with
# them on (XLA's default) 0.47x and 0.33x (2-core Intel Xeon, `python -m experiments.bench
# --only=reduction_forms`; experiments.fusions.traced_forms chooses per compiled step).
TRANSFORMS = ("dots", "sums")
_TRANSFORMS = TracedDefault("Fourier transforms", TRANSFORMS, "dots")


def transforms(form: str):
  """Within the block, :func:`circulant_apply` traced with no ``form`` of its own writes its
  transforms in ``form`` (one of :data:`TRANSFORMS`); the same function either way."""
  return _TRANSFORMS.block(form)


def _mix(x: jnp.ndarray, m: np.ndarray) -> jnp.ndarray:
  """``x [..., n, C]``, ``m [r, n]`` -> ``[..., r, C]``: ``sum_i m[j, i] x[..., i, :]`` as a
  product with ``m`` broadcast and a sum (its transpose is the same kind of loop)."""
  return jnp.sum(x[..., None, :, :] * jnp.asarray(m, x.dtype)[:, :, None], -2)


def _circulant_sums(x, kernel, n, linear):
  """:func:`circulant_apply`'s "sums" form on ``x [..., n, C_in]`` -> ``[..., n, C_out]``."""
  theta = 2 * np.pi / n
  i = np.arange(n)
  real, cplx = _frequencies(n)
  wk = lambda m: jnp.sum(kernel * jnp.asarray(m, kernel.dtype).reshape(
      (n,) + (1,) * (kernel.ndim - 1)), 0)
  flat = lambda a: a.reshape(a.shape[:-2] + (-1,))
  parts, inverse = [], []
  for k in real:
    c = np.cos(theta * k * i)
    parts.append(linear(flat(_mix(x, c[None])), wk(c))[..., None, :])
    inverse.append(c)
  for k in cplx:
    c, s = np.cos(theta * k * i), np.sin(theta * k * i)
    wr, wi = wk(c), wk(s)
    block = jnp.concatenate([jnp.concatenate([wr, wi], -1), jnp.concatenate([-wi, wr], -1)], -2)
    o = linear(flat(_mix(x, np.stack([c, -s]))), block)                   # on [xr, xi]
    parts.append(o.reshape(o.shape[:-1] + (2, o.shape[-1] // 2)))        # [or, oi]
    inverse += [2 * c, -2 * s]
  # out_g = (1/n) (sum over real k of cos(k g) Out_k + 2 sum over complex k of Re(Out_k w^(k g))).
  return _mix(jnp.concatenate(parts, -2), np.stack(inverse, 1) / n)


def circulant_apply(x: jnp.ndarray, kernel: jnp.ndarray, n: int,
                    linear: Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray],
                    axis: int = 0, form: str | None = None) -> jnp.ndarray:
  """``out[g] = sum_i linear(x[i], kernel[i - g])`` over C_n, via the Fourier basis.

  Args:
    x: ``[n, ..., C_in]`` input blocks (group axis first), or the group axis at ``axis``
      (``-2`` for a lifted map ``[B, H, W, n, C_in]``).
    kernel: ``[n, ..., C_in, C_out]`` one kernel per input block (the un-expanded weights
      of a layer lifted over the block action: block j of its input channels).
    n: the group order.
    linear: a map ``(x [..., C_in], k [..., C_in, C_out]) -> [..., C_out]`` linear in both
      (a conv, a matmul), applied to x without its group axis.
    axis: x's group axis, and the output's.
    form: how the transforms are written (:data:`TRANSFORMS`); None: :func:`transforms`'s.

  Returns:
    ``[n, ..., C_out]`` (the group axis at ``axis``).
  """
  form = _TRANSFORMS.get() if form is None else form
  _TRANSFORMS.check(form)
  if x.shape[axis] != n or kernel.shape[0] != n:
    raise ValueError(f"circulant_apply over C_{n}: x's axis {axis} and the kernel's axis 0 "
                     f"need {n} blocks, got x {x.shape}, kernel {kernel.shape}")
  if form == "sums":
    return jnp.moveaxis(_circulant_sums(jnp.moveaxis(x, axis, -2), kernel, n, linear), -2, axis)
  x = jnp.moveaxis(x, axis, 0)
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
  return jnp.stack(blocks, axis)


def circulant_maps(n: int, cin: int, cout: int) -> list[tuple[int, int, int]]:
  """The plain maps :func:`circulant_apply` runs, as ``(rows, C_in, C_out)``: one ``cin ->
  cout`` map per real frequency and one ``2 cin -> 2 cout`` per complex one, each on the
  input's size (rows 1)."""
  real, cplx = _frequencies(n)
  return [(1, cin, cout)] * len(real) + [(1, 2 * cin, 2 * cout)] * len(cplx)


def multiply_adds(n: int, cin: int, cout: int) -> tuple[int, int]:
  """Per output position: (multiply-adds in the Fourier form, in the expanded form)."""
  return (sum(r * a * b for r, a, b in circulant_maps(n, cin, cout)), n * cin * n * cout)


def is_dihedral_in_order(group: FiniteGroup) -> bool:
  """True if ``group`` is D_n in eqnn's ordering (``groups.dihedral(n)``: f^m r^k at m n + k)."""
  return group.order % 2 == 0 and group.order >= 2 and np.array_equal(
      group.table, groups_lib.dihedral(group.order // 2).table)


def dihedral_irreps(n: int) -> list[np.ndarray]:
  """D_n's real irreducible representations, each ``float32 [2n, d, d]`` (d = 1 or 2), on
  eqnn's element order: ``rho(f^m r^k) = F^m R^k`` with R the turn by ``2 pi j / n`` and F
  the mirror ``diag(1, -1)`` (j = 1 .. ceil(n/2) - 1), and the characters ``s^m t^k`` with
  s, t = +-1 (t = -1 only for even n). Their dimensions' squares add up to 2n."""
  m, k = np.divmod(np.arange(2 * n), n)
  reps = [(s ** m * t ** k).astype(np.float32)[:, None, None]
          for s in (1, -1) for t in ((1, -1) if n % 2 == 0 else (1,))]
  for j in range(1, (n + 1) // 2):
    a = 2 * np.pi * j * k / n
    rot = np.stack([np.stack([np.cos(a), -np.sin(a)], -1), np.stack([np.sin(a), np.cos(a)], -1)], -2)
    flip = np.where(m[:, None, None] == 1, np.diag([1.0, -1.0]), np.eye(2))
    reps.append((flip @ rot).astype(np.float32))
  return reps


def irrep_apply(x: jnp.ndarray, kernel: jnp.ndarray, irreps: list[np.ndarray],
                linear: Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]) -> jnp.ndarray:
  """``out[g] = sum_i linear(x[i], kernel[g^-1 i])`` in the basis of the real irreducible
  representations ``irreps`` (each ``[|G|, d, d]``, orthogonal, of real type, together
  complete): the same contract as :func:`circulant_apply`, for any such group. Axis 1 of
  ``x`` (the first after the group axis) must be a batch axis of ``linear``: each row of an
  irrep's block is folded into it."""
  g_order = x.shape[0]
  out = 0.0
  for rho in irreps:
    d = rho.shape[-1]
    rho_j = jnp.asarray(rho, x.dtype)
    xh = jnp.einsum("gac,g...->ac...", rho_j, x)                  # [a, c, B, ..., Cin]
    wh = jnp.einsum("gbc,g...->bc...", rho_j, kernel)             # [b, c, ..., Cin, Cout]
    if d == 1:
      o = linear(xh[0, 0], wh[0, 0])[None, None]                   # [a, b, B, ..., Cout]
    else:
      cin, cout = x.shape[-1], kernel.shape[-1]
      xs = jnp.moveaxis(xh, 1, -2)                                  # [a, B, ..., c, Cin]
      xs = xs.reshape((d * xs.shape[1],) + xs.shape[2:-2] + (d * cin,))
      ws = jnp.moveaxis(wh, (0, 1), (-2, -4))                       # [..., c, Cin, b, Cout]
      ws = ws.reshape(ws.shape[:-4] + (d * cin, d * cout))
      o = linear(xs, ws)                                            # [a B, ..., b Cout]
      o = o.reshape((d, x.shape[1]) + o.shape[1:-1] + (d, cout))
      o = jnp.moveaxis(o, -2, 1)                                    # [a, b, B, ..., Cout]
    out = out + (d / g_order) * jnp.einsum("gab,ab...->g...", rho_j, o)
  return out


def irrep_maps(irreps: list[np.ndarray], cin: int, cout: int) -> list[tuple[int, int, int]]:
  """The plain maps :func:`irrep_apply` runs, as ``(rows, C_in, C_out)``: per irrep of
  dimension d one ``d cin -> d cout`` map whose input holds d times the input's rows (each
  row of the irrep's block folded into the batch)."""
  return [(r.shape[-1], r.shape[-1] * cin, r.shape[-1] * cout) for r in irreps]


def irrep_multiply_adds(irreps: list[np.ndarray], cin: int, cout: int) -> int:
  """Per output position, the multiply-adds of :func:`irrep_apply`'s maps."""
  return sum(r * a * b for r, a, b in irrep_maps(irreps, cin, cout))
