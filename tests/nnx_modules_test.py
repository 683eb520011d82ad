"""NNX modules: the same declared actions and equivariance as the linen ones, and the same
outputs given the same weights."""

import jax
import numpy as np
import pytest
from flax import nnx

from eqnn import actions, groups, models, nnx_modules, readouts, testing

IMAGE_ACTIONS = {"C4": actions.rotations(), "D4": actions.rotations_reflections()}


@pytest.mark.parametrize("gname", ["C4", "D4"])
def test_nnx_layers_check_their_own_equivariance(gname):
  act = IMAGE_ACTIONS[gname]
  n = act.group.order
  rngs = nnx.Rngs(0)
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 1))
  y = jax.random.normal(jax.random.key(1), (2, 4, 4, n, 2))
  testing.assert_equivariant(nnx_modules.LiftConv(act, 1, 3, rngs=rngs), x)
  testing.assert_equivariant(nnx_modules.GroupConv(act.group, 2, 3, rngs=rngs), y)
  testing.assert_equivariant(nnx_modules.GroupDense(act.group, 4 * 4 * n * 2, 5, rngs=rngs), y)
  testing.assert_equivariant(nnx_modules.GCNNLiftConv(act, 1, 3, rngs=rngs), x)
  testing.assert_equivariant(nnx_modules.GCNNConv(act, 2, 3, rngs=rngs), y)
  z = jax.random.normal(jax.random.key(2), (3, 12, 12, 1))
  for hidden in ("stacked", "gcnn"):
    model = nnx_modules.EquivariantCNN(act, (12, 12, 1), (4, 6), (2, 2), (8,), hidden=hidden,
                                       rngs=rngs)
    testing.assert_equivariant(model, z)
    testing.assert_invariant(lambda z: readouts.class_logits(model(z)), act, z)


def test_group_conv_over_c8_in_fourier_form():
  g = groups.cyclic(8)
  conv = nnx_modules.GroupConv(g, 2, 3, impl="fourier", rngs=nnx.Rngs(0))
  testing.assert_equivariant(conv, jax.random.normal(jax.random.key(0), (2, 5, 5, 8, 2)))


@pytest.mark.parametrize("gname,hidden", [("C4", "stacked"), ("D4", "stacked"), ("D4", "gcnn")])
def test_nnx_and_linen_agree_given_the_same_weights(gname, hidden):
  act = IMAGE_ACTIONS[gname]
  linen = models.EquivariantCNN(act, (4, 6, 8), (2, 2, 1), (16,), hidden=hidden)
  x = jax.random.normal(jax.random.key(0), (3, 12, 12, 1))
  params = jax.jit(linen.init)(jax.random.key(1), x)
  nx = nnx_modules.from_linen(linen, params, (12, 12, 1))
  # Jitted, as a user runs a model (op by op, each small op compiles alone: 30 s of the suite).
  np.testing.assert_allclose(nnx.jit(lambda m, x: m(x))(nx, x), jax.jit(linen.apply)(params, x),
                             atol=1e-5, rtol=1e-5)
  # The NNX model trains like any NNX model: one gradient step through nnx.grad.
  graphdef, state = nnx.split(nx)
  loss = lambda m: readouts.class_logits(m(x)).sum()
  grads = nnx.jit(nnx.grad(loss))(nx)
  assert jax.tree.leaves(grads) and graphdef is not None and state is not None
  with pytest.raises(ValueError, match="without norm"):
    nnx_modules.from_linen(models.EquivariantCNN(act, (4, 6, 8), (2, 2, 1), (16,), norm=True),
                           params, (12, 12, 1))
