"""Layers for deeper networks: each exactly equivariant under the block action (C4, C8, D4),
checked against a plain reference, with the negative control that matters (per-slot
normalisation is not equivariant)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eqnn import groups, layers, ops, testing

GROUPS = {"C4": groups.cyclic(4), "C8": groups.cyclic(8), "D4": groups.dihedral(4)}


def _y(g, seed=0, c=3):
  return 2.0 + jax.random.normal(jax.random.key(seed), (4, 6, 6, g.order, c))


@pytest.mark.parametrize("name", list(GROUPS))
def test_batch_norm_shares_statistics_over_the_slots(name):
  g = GROUPS[name]
  y = _y(g)
  bn = layers.GroupBatchNorm(g)
  variables = jax.jit(bn.init)(jax.random.key(1), y)
  train = jax.jit(lambda y: bn.apply(variables, y, train=True, mutable=["batch_stats"])[0])
  testing.assert_equivariant(train, ops.block_action(g), ops.block_action(g), y, atol=1e-4)
  # Reference: plain BatchNorm on the copies folded into the batch axis, per channel.
  plain = nn.BatchNorm(use_running_average=False)
  folded = jnp.moveaxis(y, -2, 1).reshape((-1,) + y.shape[1:3] + y.shape[-1:])
  want, _ = plain.apply(jax.jit(plain.init)(jax.random.key(1), folded), folded,
                        mutable=["batch_stats"])
  want = jnp.moveaxis(want.reshape((4, g.order) + y.shape[1:3] + y.shape[-1:]), 1, -2)
  np.testing.assert_allclose(train(y), want, atol=1e-5)
  assert jax.tree.map(jnp.shape, variables["params"])["BatchNorm_0"]["scale"] == (3,)
  # Negative control: one running statistic per slot (the stacked view's channels). Computed
  # on the fly they would move with the slots; stored, they stay put while G moves the slots.
  per_slot = nn.BatchNorm(momentum=0.0)
  scaled = y * (1.0 + jnp.arange(g.order)[:, None])                  # slots differ in scale
  v = per_slot.init(jax.random.key(1), ops.to_channels(scaled), use_running_average=True)
  _, stats = per_slot.apply(v, ops.to_channels(scaled), use_running_average=False,
                            mutable=["batch_stats"])
  f = lambda y: ops.from_channels(per_slot.apply({**v, **stats}, ops.to_channels(y),
                                                 use_running_average=True), g.order)
  with pytest.raises(AssertionError, match="not equivariant"):
    testing.assert_equivariant(f, ops.block_action(g), ops.block_action(g), scaled)
  # Shared over the slots (GroupBatchNorm), the stored statistics are G-invariant: exact.
  _, shared = bn.apply(variables, scaled, train=True, mutable=["batch_stats"])
  testing.assert_equivariant(jax.jit(lambda y: bn.apply({**variables, **shared}, y)),
                             ops.block_action(g), ops.block_action(g), scaled, atol=1e-4)


@pytest.mark.parametrize("name", list(GROUPS))
def test_layer_norm_pooling_dropout_and_residual_blocks_are_equivariant(name):
  g = GROUPS[name]
  blocks = ops.block_action(g)
  y = _y(g, 1)
  ln = layers.GroupLayerNorm(g)
  testing.assert_equivariant(ln.bind(jax.jit(ln.init)(jax.random.key(0), y)), y, atol=1e-4)
  # Group pooling: invariant, and equal to the max over the slots.
  testing.assert_invariant(ops.group_pool, blocks, y)
  np.testing.assert_array_equal(ops.group_pool(y), jnp.max(y, axis=-2))
  # Blurred strided pooling: per channel, so it commutes; reference: blur each slot alone.
  pooled = ops.blur_pool(y, 2)
  assert pooled.shape == (4, 3, 3, g.order, 3)
  testing.assert_equivariant(lambda y: ops.blur_pool(y, 2), blocks, blocks, y)
  np.testing.assert_allclose(pooled[..., 1, :], ops.blur_pool(y[..., 1:2, :], 2)[..., 0, :],
                             atol=1e-6)
  # Channel dropout shared over the slots: exactly equivariant even in training (one mask).
  drop = layers.GroupDropout(g, 0.5)
  train = lambda y: drop.apply({}, y, deterministic=False, rngs={"dropout": jax.random.key(3)})
  testing.assert_equivariant(train, blocks, blocks, y)
  assert float(jnp.mean(train(y) == 0)) > 0.2                        # it did drop
  np.testing.assert_array_equal(drop.apply({}, y), y)                # evaluation: identity
  # Residual block: equivariant in training and evaluation.
  block = layers.GroupResidualBlock(g)
  v = jax.jit(block.init)(jax.random.key(4), y)
  testing.assert_equivariant(jax.jit(lambda y: block.apply(v, y)), blocks, blocks, y, atol=1e-4)
  testing.assert_equivariant(
      jax.jit(lambda y: block.apply(v, y, train=True, mutable=["batch_stats"])[0]),
      blocks, blocks, y, atol=1e-4)
