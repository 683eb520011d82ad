"""The pure layer functions: every implementation computes the same map, the block-circulant
weights are the lift's, and pooling and the layout commute with the group."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eqnn import actions, groups, ops, testing

GROUPS = {"C4": groups.cyclic(4), "C8": groups.cyclic(8), "D4": groups.dihedral(4)}


def test_block_circulant_for_c4_is_the_shifted_blocks():
  c4 = groups.cyclic(4)
  w = jnp.arange(4.0).reshape(4, 1)              # input blocks j = 0..3, one output
  e = ops.block_circulant(w, c4, 0, 1)           # [i, g] = w[g^-1 i] = w[i - g]
  np.testing.assert_array_equal(e, [[0, 3, 2, 1], [1, 0, 3, 2], [2, 1, 0, 3], [3, 2, 1, 0]])


@pytest.mark.parametrize("gname", list(GROUPS))
def test_block_circulant_slot_g_is_the_layer_on_the_lifts_input(gname):
  """Slot g of the expanded map equals the plain map on g^-1 . y (the lift, by definition)."""
  g = GROUPS[gname]
  n = g.order
  w = jax.random.normal(jax.random.key(0), (n * 3, 2))
  y = jax.random.normal(jax.random.key(1), (5, n, 3))
  e = ops.block_circulant(w, g, 0, 1)
  got = (y.reshape(5, -1) @ e).reshape(5, n, 2)
  reg = actions.regular(g, axis=-2)
  for k in range(n):
    want = reg(int(g.inverse[k]), y).reshape(5, -1) @ w
    np.testing.assert_allclose(got[:, k], want, atol=1e-5)


@pytest.mark.parametrize("gname", list(GROUPS))
def test_all_implementations_agree(gname):
  g = GROUPS[gname]
  n = g.order
  y = jax.random.normal(jax.random.key(0), (2, 5, 5, n, 3))
  kc = jax.random.normal(jax.random.key(1), (3, 3, n * 3, 4))
  kd = jax.random.normal(jax.random.key(2), (5 * 5 * n * 3, 6))
  b = jax.random.normal(jax.random.key(3), (4,))
  impls = ["vmap", "expanded", "fourier"]          # fourier: C_n's Fourier basis, D_n's irreps
  want = ops.group_conv(y, kc, b, g, impl="vmap")
  assert want.shape == (2, 5, 5, n, 4)
  for impl in impls + ["auto"]:
    np.testing.assert_allclose(ops.group_conv(y, kc, b, g, impl=impl), want, atol=3e-5, rtol=1e-5)
  dense = ops.group_dense(y, kd, None, g, impl="vmap")
  assert dense.shape == (2, n, 6)
  bd = jax.random.normal(jax.random.key(4), (6,))
  for impl in ("expanded", "fourier", "auto"):
    np.testing.assert_allclose(ops.group_dense(y, kd, bd, g, impl=impl), dense + bd,
                               atol=3e-5, rtol=1e-5)


@pytest.mark.parametrize("act", [actions.rotations(), actions.rotations_reflections()],
                         ids=["C4", "D4"])
def test_lift_conv_forms_agree_and_are_equivariant(act):
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 2))
  k = jax.random.normal(jax.random.key(1), (3, 3, 2, 4))
  a = ops.lift_conv(x, k, None, act, impl="vmap")
  np.testing.assert_allclose(ops.lift_conv(x, k, None, act, impl="expanded"), a, atol=2e-5)
  f = lambda x: ops.lift_conv(x, k, None, act)
  testing.assert_equivariant(f, act, ops.block_action(act.group), x)
  # Negative control: the plain conv is not equivariant to rotations (as the lift's slot 0).
  with pytest.raises(AssertionError):
    testing.assert_equivariant(lambda x: ops.conv(x, k), act, act, x)


@pytest.mark.parametrize("act", [actions.rotations(2), actions.rotations(), actions.rotations_reflections()],
                         ids=["C2", "C4", "D4"])
@pytest.mark.parametrize("padding, k, size", [("SAME", 3, 6), ("SAME", 5, 7), ("VALID", 2, 6),
                                              ("VALID", 3, 7)])
def test_turning_the_kernel_is_turning_the_image(act, padding, k, size):
  """impl="kernels": one conv with the |G| turned kernels, each slot turned back, is the lift
  (odd kernels with SAME padding, any with VALID; C2, C4 and the non-abelian D4)."""
  x = jax.random.normal(jax.random.key(0), (2, size, size, 2))
  w = jax.random.normal(jax.random.key(1), (k, k, 2, 3))
  b = jax.random.normal(jax.random.key(2), (3,))
  want = ops.lift_conv(x, w, b, act, padding, impl="vmap")
  np.testing.assert_allclose(ops.lift_conv(x, w, b, act, padding, impl="kernels"), want,
                             atol=2e-5)
  grads = [jax.grad(lambda w, b: jnp.sum(jnp.sin(ops.lift_conv(x, w, b, act, padding,
                                                                impl=i))), (0, 1))(w, b)
           for i in ("vmap", "kernels")]
  for got, ref in zip(grads[1], grads[0]):
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)
  testing.assert_equivariant(lambda x: ops.lift_conv(x, w, b, act, padding, impl="kernels"),
                             act, ops.block_action(act.group), x)


def test_turning_the_kernel_is_refused_where_it_is_wrong():
  """Refused: an even kernel with SAME padding (it pads one side more: the identity fails,
  shown below), translations (pixels cross the border) and resampled turns."""
  c4 = actions.rotations()
  x = jax.random.normal(jax.random.key(0), (1, 6, 6, 1))
  w = jax.random.normal(jax.random.key(1), (2, 2, 1, 1))
  turned = jnp.rot90(w, 1, axes=(0, 1))       # r . W
  lhs = ops.conv(c4(3, x), w)                 # conv(r^-1 . x, W)
  rhs = c4(3, ops.conv(x, turned))            # r^-1 . conv(x, r . W)
  assert float(jnp.abs(lhs - rhs).max()) > 1e-2
  np.testing.assert_allclose(ops.conv(c4(3, x), w, "VALID"),
                             c4(3, ops.conv(x, turned, "VALID")), atol=1e-5)
  with pytest.raises(ValueError, match="odd kernel with SAME"):
    ops.lift_conv(x, w, None, c4, impl="kernels")
  for bad in (actions.translations(6, 6), actions.rotations(8)):
    with pytest.raises(ValueError, match="rotations and mirrors of the pixel grid"):
      ops.lift_conv(x, jnp.ones((3, 3, 1, 2)), None, bad, impl="kernels")
  with pytest.raises(ValueError, match="not available for group_conv"):
    ops.group_conv(jnp.ones((1, 4, 4, 4, 1)), jnp.ones((3, 3, 4, 1)), None, c4.group,
                   impl="kernels")


def test_pooling_and_layout_commute_with_the_group():
  d4 = groups.dihedral(4)
  act = ops.block_action(d4)
  y = jax.random.normal(jax.random.key(0), (2, 6, 6, 8, 3))
  testing.assert_equivariant(lambda y: ops.max_pool(y, 2), act, act, y)
  np.testing.assert_array_equal(ops.from_channels(ops.to_channels(y), 8), y)
  # The channel-stacked view carries the paper's ChannelBlocks action.
  for g in range(8):
    np.testing.assert_array_equal(ops.to_channels(act(g, y)),
                                  actions.ChannelBlocks(d4)(g, ops.to_channels(y)))
  with pytest.raises(ValueError, match="larger than"):
    ops.max_pool(y, 7)
  with pytest.raises(ValueError, match="multiple of"):
    ops.from_channels(jnp.zeros((2, 7)), 4)


def test_continuous_rotation_matches_quarter_turns_and_the_identity():
  x = jax.image.resize(jax.random.normal(jax.random.key(0), (2, 7, 7, 2)), (2, 28, 28, 2),
                       "bilinear") * actions.disk_mask(28, 28)[None, :, :, None]
  np.testing.assert_allclose(ops.rotate(x, jnp.zeros(2)), x, atol=1e-5)
  np.testing.assert_allclose(ops.rotate(x, jnp.full(2, jnp.pi / 2)),
                             jnp.rot90(x, 1, axes=(1, 2)), atol=1e-4)
  # A 45-degree turn agrees with the C8 action's resampling (the same bilinear rule).
  np.testing.assert_allclose(ops.rotate(x, jnp.full(2, jnp.pi / 4)), actions.rotations(8)(1, x),
                             atol=1e-4)
