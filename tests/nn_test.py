"""Flax layers: both implementations compute the same function, and it is equivariant."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eqnn import actions, groups, testing
from eqnn import nn as enn

IMAGE_ACTIONS = {"C4": actions.rotations(), "D4": actions.rotations_reflections()}


def _init_apply(module, x, seed=0):
  params = module.init(jax.random.key(seed), x)
  return params, jax.jit(module.apply)


@pytest.mark.parametrize("gname", list(IMAGE_ACTIONS))
def test_implementations_agree_and_share_parameters(gname):
  act = IMAGE_ACTIONS[gname]
  g = act.group
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 2))
  y = jax.random.normal(jax.random.key(1), (2, 5, 5, g.order * 3))
  for make, inp in [(lambda impl: enn.LiftConv(act, 4, impl=impl), x),
                    (lambda impl: enn.GroupConv(g, 4, impl=impl), y),
                    (lambda impl: enn.GroupDense(g, 6, impl=impl), y),
                    (lambda impl: enn.LiftedCNN(act, (3, 4), (2, 1), (5,), impl=impl), x)]:
    params = make("expanded").init(jax.random.key(2), inp)
    vparams = make("vmap").init(jax.random.key(2), inp)
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, vparams)
    want = make("expanded").apply(params, inp)
    for impl in ("vmap", "auto"):
      np.testing.assert_allclose(make(impl).apply(params, inp), want, atol=2e-5, rtol=1e-5)


def test_block_circulant_for_c4_is_the_shifted_blocks():
  c4 = groups.cyclic(4)
  w = jnp.arange(4.0).reshape(4, 1)              # input blocks j = 0..3, one output
  e = enn.block_circulant(w, c4, 0, 1)           # [i, g] = w[g^-1 i] = w[i - g]
  np.testing.assert_array_equal(e, [[0, 3, 2, 1], [1, 0, 3, 2], [2, 1, 0, 3], [3, 2, 1, 0]])


def _layers(act):
  g = act.group
  x = jnp.zeros((2, 6, 6, 1))
  y = jnp.zeros((2, 4, 4, g.order * 2))
  p1, lift = _init_apply(enn.LiftConv(act, 3), x)
  p2, conv = _init_apply(enn.GroupConv(g, 3), y)
  p3, dense = _init_apply(enn.GroupDense(g, 5), y)
  return (jax.jit(lambda x: lift(p1, x)), jax.jit(lambda y: conv(p2, y)),
          jax.jit(lambda y: dense(p3, y)))


LAYERS = {name: _layers(act) for name, act in IMAGE_ACTIONS.items()}


@pytest.mark.parametrize("gname", list(IMAGE_ACTIONS))
@given(seed=st.integers(0, 2**31 - 1))
def test_layers_are_equivariant(gname, seed):
  act = IMAGE_ACTIONS[gname]
  g = act.group
  blocks = actions.ChannelBlocks(g)
  lift, conv, dense = LAYERS[gname]
  x = jax.random.normal(jax.random.key(seed), (2, 6, 6, 1))
  y = jax.random.normal(jax.random.key(seed + 1), (2, 4, 4, g.order * 2))
  testing.assert_equivariant(lift, act, blocks, x)
  testing.assert_equivariant(conv, blocks, blocks, y)
  testing.assert_equivariant(dense, blocks, actions.regular(g, axis=1), y)


@pytest.mark.parametrize("gname", list(IMAGE_ACTIONS))
def test_lifted_cnn_is_equivariant_and_its_readout_invariant(gname):
  act = IMAGE_ACTIONS[gname]
  n = act.group.order
  model = enn.LiftedCNN(act, (4, 6, 6), (2, 2, 1), (8,))
  x = jax.random.normal(jax.random.key(0), (3, 12, 12, 1))
  params, apply = _init_apply(model, x)
  logits = lambda x: enn.group_logits(apply(params, x), n)
  testing.assert_equivariant(logits, act, actions.regular(act.group, axis=1), x)
  testing.assert_invariant(lambda x: enn.invariant_logits(apply(params, x), n), act, x)
  # Negative control: the plain CNN is not rotation-invariant.
  plain = enn.PlainCNN((4, 6, 6), (2, 2, 1), (8,))
  pp, papply = _init_apply(plain, x)
  with pytest.raises(AssertionError):
    testing.assert_invariant(lambda x: papply(pp, x), act, x)


def test_pools_must_match_convs_and_images_must_be_square():
  act = actions.rotations()
  with pytest.raises(ValueError, match="one pool window per conv"):
    enn.LiftedCNN(act, (4, 4), (2,)).init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
  with pytest.raises(ValueError, match="square images"):
    enn.LiftConv(act, 4).init(jax.random.key(0), jnp.zeros((1, 8, 6, 1)))
  with pytest.raises(ValueError, match="multiple of"):
    enn.GroupConv(act.group, 4).init(jax.random.key(0), jnp.zeros((1, 8, 8, 6)))
  with pytest.raises(ValueError, match="unknown implementation"):
    enn.GroupConv(act.group, 4, impl="fft").init(jax.random.key(0), jnp.zeros((1, 8, 8, 8)))
