"""Cyclic group convolutions in the Fourier basis compute the block-circulant map exactly."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eqnn import fourier, groups, ops


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 8])
def test_matches_the_expanded_block_circulant_matmul(n):
  x = jax.random.normal(jax.random.key(0), (n, 7, 3))         # [n, batch, C_in]
  w = jax.random.normal(jax.random.key(1), (n, 3, 5))         # [n, C_in, C_out]
  got = fourier.circulant_apply(x, w, n, lambda a, k: a @ k)
  want = jnp.stack([sum(x[i] @ w[(i - g) % n] for i in range(n)) for g in range(n)])
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
  e = ops.block_circulant(w.reshape(n * 3, 5), groups.cyclic(n), 0, 1)   # [n*3, n*5]
  dense = (jnp.moveaxis(x, 0, 1).reshape(7, -1) @ e).reshape(7, n, 5)
  np.testing.assert_allclose(got, jnp.moveaxis(dense, 1, 0), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n", [2, 3, 4, 6])
def test_group_conv_fourier_equals_expanded(n):
  g = groups.cyclic(n)
  y = jax.random.normal(jax.random.key(0), (2, 5, 5, n, 3))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, n * 3, 4))
  a = ops.group_conv(y, kernel, None, g, impl="expanded")
  b = ops.group_conv(y, kernel, None, g, impl="fourier")
  np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-5)


def test_work_shrinks():
  assert fourier.multiply_adds(4, 80, 80) == (6 * 6400, 16 * 6400)
  assert fourier.multiply_adds(5, 1, 1) == (1 + 2 * 4, 25)


def test_fourier_is_refused_where_it_does_not_apply():
  d4 = groups.dihedral(4)
  with pytest.raises(ValueError, match="cyclic group"):
    ops.resolve_impl("fourier", "group_conv", d4)
  with pytest.raises(ValueError, match="lift_conv takes"):
    ops.resolve_impl("fourier", "lift_conv", groups.cyclic(4))
  # "auto" falls back to the expanded form for D4.
  assert ops.resolve_impl("auto", "group_conv", d4) == "expanded"
  assert ops.resolve_impl("auto", "group_conv", groups.cyclic(4)) == "fourier"
  assert fourier.is_cyclic_in_order(groups.cyclic(6))
  assert not fourier.is_cyclic_in_order(groups.direct_product(groups.cyclic(2), groups.cyclic(3)))
