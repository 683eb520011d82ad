"""Winograd's minimal filtering F(2 x 2, 3 x 3) (Lavin & Gray, 2016): a 3 x 3 stride-1 conv
with 2.25x fewer multiplies, as :func:`eqnn.spatial.conv`'s ``form="winograd"``.

Each 4 x 4 input tile d (stride 2) and the kernel k are transformed by fixed matrices, multiplied
position by position (16 matmuls over the channels) and transformed back to the tile's 2 x 2
outputs: ``Y = A^T [(G k G^T) * (B^T d B)] A``. :func:`kernel_grad` is the kernel's
gradient from the same tiles; :func:`eqnn.conv_impls.winograd_conv` puts the derivatives
together (the input gradient is another :func:`conv3x3`).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

# F(2 x 2, 3 x 3): Y = A^T [(G k G^T) * (B^T d B)] A for a 4 x 4 input tile d and its 2 x 2
# outputs Y. B^T and A^T are applied by adds (their entries are 0 and +-1), G by a product.
_G = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], np.float32)


def _transform_in(d):
  """B^T along one tile axis, the tile's four rows given as a list."""
  return [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]]


def _transform_out(m):
  """A^T along one tile axis: four transformed rows to the two outputs."""
  return [m[0] + m[1] + m[2], m[1] - m[2] - m[3]]


def _tiles(x, pads, th, tw):
  """The transformed 4 x 4 input tiles ``v[a][b] = (B^T d B)[a, b]``, each ``[B, th, tw, C]``,
  of ``x`` padded by ``pads`` and to whole tiles."""
  (lo_h, _), (lo_w, _) = pads
  # 2 t + 2 rows and columns: whole tiles of stride 2 (the high pads and then some zeros).
  xp = jnp.pad(x, ((0, 0), (lo_h, 2 * th + 2 - x.shape[1] - lo_h),
                   (lo_w, 2 * tw + 2 - x.shape[2] - lo_w), (0, 0)))
  # Row 2t + i of the padded map is row t + i // 2 of parity i % 2: plain slices of
  # [B, th + 1, 2, tw + 1, 2, C] rather than strided ones.
  xr = xp.reshape(x.shape[0], th + 1, 2, tw + 1, 2, x.shape[3])
  d = [[xr[:, i // 2:i // 2 + th, i % 2, j // 2:j // 2 + tw, j % 2] for j in range(4)]
       for i in range(4)]
  cols = [_transform_in([d[i][j] for i in range(4)]) for j in range(4)]     # cols[j][a]
  return [_transform_in([cols[j][a] for j in range(4)]) for a in range(4)]   # v[a][b]


def _output_size(x, pads):
  (lo_h, hi_h), (lo_w, hi_w) = pads
  oh, ow = x.shape[1] + lo_h + hi_h - 2, x.shape[2] + lo_w + hi_w - 2
  if oh < 1 or ow < 1:
    raise ValueError(f"a 3 x 3 conv with pads {tuple(pads)} on a {x.shape[1]} x "
                     f"{x.shape[2]} map leaves no output")
  return oh, ow


def conv3x3(x, kernel, pads):
  """A 3 x 3 stride-1 conv of ``x [B, H, W, C]`` with ``kernel [3, 3, C, O]`` by
  F(2 x 2, 3 x 3), ``pads`` ``((lo_h, hi_h), (lo_w, hi_w))`` as :func:`eqnn.spatial.conv`
  gives them, any output size (the input padded to
  whole tiles, the output cropped). Every step keeps the batch as axis 0 (16 matmuls rather
  than one batched over the tile positions), so that :func:`eqnn.per_example.prove` reads it
  as per-example."""
  oh, ow = _output_size(x, pads)
  th, tw = -(-oh // 2), -(-ow // 2)
  v = _tiles(x, pads, th, tw)
  g = jnp.asarray(_G, kernel.dtype)
  u = jnp.einsum("ai,ijco,bj->abco", g, kernel, g)                         # [4, 4, C, O]
  m = [[v[a][b] @ u[a, b] for b in range(4)] for a in range(4)]            # [B, th, tw, O]
  rows = [_transform_out(m[a]) for a in range(4)]                           # rows[a][q]
  y = [_transform_out([rows[a][q] for a in range(4)]) for q in range(2)]    # y[q][p]
  y = jnp.stack([jnp.stack([y[q][p] for q in range(2)], -2) for p in range(2)], 2)
  return y.reshape(x.shape[0], 2 * th, 2 * tw, -1)[:, :oh, :ow]


# A^T of F(2 x 2, 3 x 3): the output transform, y[q] = sum_a A^T[q, a] m[a].
_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32)


def kernel_grad(x, ct, pads):
  """The kernel gradient of :func:`conv3x3` at ``x`` for the output cotangent ``ct``, from
  Winograd's own tiles: ``dK = G^T [sum over positions of v^T (A ct A^T)] G``, the 16 tile
  products' contraction over all B H W positions done as one batched matmul of the stacked
  tiles and stacked cotangents (each laid out once) rather than as JAX's transpose of the 16
  products, which XLA's CPU backend lays out afresh per tile (a strided gather each)."""
  oh, ow = ct.shape[1], ct.shape[2]
  th, tw = -(-oh // 2), -(-ow // 2)
  v = _tiles(x, pads, th, tw)
  tiles = jnp.stack([v[a][b] for a in range(4) for b in range(4)], 3)     # [B, th, tw, 16, C]
  ctp = jnp.pad(ct, ((0, 0), (0, 2 * th - oh), (0, 2 * tw - ow), (0, 0)))
  ctr = ctp.reshape(ct.shape[0], th, 2, tw, 2, ct.shape[3])
  c = [[ctr[:, :, q, :, p] for p in range(2)] for q in range(2)]          # c[q][p]
  dm = [sum(_AT[q, a] * _AT[p, b] * c[q][p] for q in range(2) for p in range(2)
            if _AT[q, a] * _AT[p, b]) for a in range(4) for b in range(4)]
  dms = jnp.stack(dm, 3)                                                   # [B, th, tw, 16, O]
  n = ct.shape[0] * th * tw
  du = jnp.einsum("nkc,nko->kco", tiles.reshape(n, 16, -1), dms.reshape(n, 16, -1))
  g = jnp.asarray(_G, x.dtype)
  return jnp.einsum("ai,abco,bj->ijco", g, du.reshape((4, 4) + du.shape[1:]), g)
