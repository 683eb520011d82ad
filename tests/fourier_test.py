"""Group convolutions in the Fourier basis (C_n) and the real-irrep basis (D_n) compute the
block-circulant map exactly (up to float rounding)."""

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


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 8])
def test_both_forms_of_the_transforms_compute_the_same_map(n):
  """The transforms as dots (group axis first) and as broadcast sums (the group axis where it
  is): the same block-circulant map, for the group axis first and second to last."""
  x = jax.random.normal(jax.random.key(0), (n, 7, 3))         # [n, batch, C_in]
  w = jax.random.normal(jax.random.key(1), (n, 3, 5))
  mm = lambda a, k: a @ k
  want = jnp.stack([sum(x[i] @ w[(i - g) % n] for i in range(n)) for g in range(n)])
  for form in fourier.TRANSFORMS:
    got = fourier.circulant_apply(x, w, n, mm, form=form)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5, err_msg=form)
    last = fourier.circulant_apply(jnp.moveaxis(x, 0, 1), w, n, mm, axis=-2, form=form)
    np.testing.assert_allclose(last, jnp.moveaxis(want, 0, 1), atol=1e-5, rtol=1e-5)
    with fourier.transforms(form):                               # the block's default
      np.testing.assert_allclose(fourier.circulant_apply(x, w, n, mm), want, atol=1e-5,
                                 rtol=1e-5)
  g = groups.cyclic(n)
  y = jax.random.normal(jax.random.key(2), (2, 5, 5, n, 3))
  kernel = jax.random.normal(jax.random.key(3), (3, 3, n * 3, 4))
  with fourier.transforms("sums"):
    sums = ops.group_conv(y, kernel, None, g, impl="fourier")
  np.testing.assert_allclose(sums, ops.group_conv(y, kernel, None, g, impl="expanded"),
                             atol=2e-5, rtol=1e-5)


def test_the_forms_write_their_transforms_as_they_say_and_bad_input_is_named():
  """"dots" contracts the group axis with dot_general, "sums" with none (the map itself here
  is a broadcast product, so every dot in the program is a transform's); a bad form, or a
  group axis of the wrong size, is refused by name."""
  x, w = jnp.ones((2, 4, 3)), jnp.ones((4, 3, 5))             # group axis 1 of x
  lin = lambda a, k: jnp.sum(a[..., :, None] * k, -2)
  text = lambda form: jax.jit(lambda x, w: fourier.circulant_apply(
      x, w, 4, lin, axis=1, form=form)).lower(x, w).as_text()
  assert "dot_general" in text("dots") and "dot_general" not in text("sums")
  with pytest.raises(ValueError, match="Fourier transforms 'fft'"):
    fourier.circulant_apply(x, w, 4, lin, axis=1, form="fft")
  with pytest.raises(ValueError, match="Fourier transforms 'fft'"):
    with fourier.transforms("fft"):
      pass
  with pytest.raises(ValueError, match="need 4 blocks"):
    fourier.circulant_apply(x, w, 4, lin, axis=0)


def test_work_shrinks():
  assert fourier.multiply_adds(4, 80, 80) == (6 * 6400, 16 * 6400)
  assert fourier.multiply_adds(5, 1, 1) == (1 + 2 * 4, 25)


@pytest.mark.parametrize("n", [4, 5])
def test_the_counted_maps_are_the_maps_that_run(n):
  """circulant_maps and irrep_maps (what the benches count) list exactly the maps
  circulant_apply and irrep_apply call: (rows relative to the input, C_in, C_out) recorded
  from the calls themselves, for C_n and for D_n (not abelian, 2-dimensional irreps)."""
  b, cin, cout = 6, 3, 5

  def recorder(calls):
    def linear(a, w):
      calls.append((a.shape[0] // b, w.shape[-2], w.shape[-1]))
      return a @ w
    return linear
  calls = []
  fourier.circulant_apply(jnp.ones((n, b, cin)), jnp.ones((n, cin, cout)), n, recorder(calls))
  assert sorted(calls) == sorted(fourier.circulant_maps(n, cin, cout))
  irreps = fourier.dihedral_irreps(n)
  calls = []
  fourier.irrep_apply(jnp.ones((2 * n, b, cin)), jnp.ones((2 * n, cin, cout)), irreps,
                      recorder(calls))
  assert sorted(calls) == sorted(fourier.irrep_maps(irreps, cin, cout))
  assert any(rows == 2 for rows, _, _ in calls)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 8])
def test_dihedral_irreps_are_a_complete_set_of_representations(n):
  group = groups.dihedral(n)
  reps = fourier.dihedral_irreps(n)
  assert sum(r.shape[-1] ** 2 for r in reps) == 2 * n              # complete
  for r in reps:                                                   # homomorphisms, orthogonal
    np.testing.assert_allclose(np.einsum("gab,hbc->ghac", r, r), r[group.table], atol=1e-6)
    np.testing.assert_allclose(np.einsum("gba,gbc->gac", r, r),
                               np.broadcast_to(np.eye(r.shape[-1]), r.shape), atol=1e-6)
  # Schur orthogonality: sum_g rho_ab(g) sigma_cd(g) = |G| / d if the same entry, else 0.
  flat = np.concatenate([r.reshape(2 * n, -1) for r in reps], 1)        # [|G|, |G|]
  dims = np.concatenate([[r.shape[-1]] * r.shape[-1] ** 2 for r in reps])
  np.testing.assert_allclose(flat.T @ flat, np.diag(2 * n / dims), atol=1e-5)


@pytest.mark.parametrize("n", [2, 3, 4, 8])
def test_dihedral_group_conv_in_the_irrep_basis_equals_expanded(n):
  g = groups.dihedral(n)
  x = jax.random.normal(jax.random.key(0), (2 * n, 7, 3))      # [|G|, batch, C_in]
  w = jax.random.normal(jax.random.key(1), (2 * n, 3, 5))
  got = fourier.irrep_apply(x, w, fourier.dihedral_irreps(n), lambda a, k: a @ k)
  inv = g.inverse
  want = jnp.stack([sum(x[i] @ w[g.table[inv[h], i]] for i in range(2 * n))
                    for h in range(2 * n)])
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-5)
  y = jax.random.normal(jax.random.key(2), (2, 5, 5, 2 * n, 3))
  kernel = jax.random.normal(jax.random.key(3), (3, 3, 2 * n * 3, 4))
  np.testing.assert_allclose(ops.group_conv(y, kernel, None, g, impl="fourier"),
                             ops.group_conv(y, kernel, None, g, impl="expanded"),
                             atol=5e-5, rtol=1e-5)
  # About 4n units of work instead of (2n)^2.
  assert fourier.irrep_multiply_adds(fourier.dihedral_irreps(n), 1, 1) < 4 * n * n or n <= 2


def test_fourier_is_refused_where_it_does_not_apply():
  d4 = groups.dihedral(4)
  c2xc4 = groups.direct_product(groups.cyclic(2), groups.cyclic(4))
  with pytest.raises(ValueError, match="cyclic group C_n or a dihedral group"):
    ops.resolve_impl("fourier", "group_conv", c2xc4)
  with pytest.raises(ValueError, match="lift_conv takes"):
    ops.resolve_impl("fourier", "lift_conv", groups.cyclic(4))
  # "auto": the Fourier (C_n) or irrep (D_n) form where there is one, else expanded.
  assert ops.resolve_impl("auto", "group_conv", d4) == "fourier"
  assert ops.resolve_impl("auto", "group_conv", c2xc4) == "expanded"
  assert ops.resolve_impl("auto", "group_conv", groups.cyclic(4)) == "fourier"
  assert fourier.is_cyclic_in_order(groups.cyclic(6))
  assert not fourier.is_cyclic_in_order(groups.direct_product(groups.cyclic(2), groups.cyclic(3)))
