"""Linen layers: they declare their actions and check themselves with eqnn.testing in one
line; every implementation gives the same function with the same parameters."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import eqnn
from eqnn import actions, layers, models, testing

IMAGE_ACTIONS = {"C4": actions.rotations(), "D4": actions.rotations_reflections()}


def _bound(module, x, seed=0):
  return module.bind(jax.jit(module.init)(jax.random.key(seed), x))


def _inputs(act, seed=0):
  n = act.group.order
  x = jax.random.normal(jax.random.key(seed), (2, 6, 6, 1))
  y = jax.random.normal(jax.random.key(seed + 1), (2, 4, 4, n, 2))
  return x, y


BOUND = {name: (_bound(layers.LiftConv(act, 3), _inputs(act)[0]),
                _bound(layers.GroupConv(act.group, 3), _inputs(act)[1]),
                _bound(layers.GroupDense(act.group, 5), _inputs(act)[1]))
         for name, act in IMAGE_ACTIONS.items()}


@pytest.mark.parametrize("gname", list(IMAGE_ACTIONS))
@given(seed=st.integers(0, 2**31 - 1))
def test_layers_check_their_own_equivariance(gname, seed):
  lift, conv, dense = BOUND[gname]
  x, y = _inputs(IMAGE_ACTIONS[gname], seed)
  testing.assert_equivariant(lift, x)
  testing.assert_equivariant(conv, y)
  testing.assert_equivariant(dense, y)


@pytest.mark.parametrize("gname", list(IMAGE_ACTIONS))
def test_declared_actions_and_layout(gname):
  act = IMAGE_ACTIONS[gname]
  lift, conv, dense = BOUND[gname]
  x, y = _inputs(act)
  n = act.group.order
  assert lift(x).shape == (2, 6, 6, n, 3) and conv(y).shape == (2, 4, 4, n, 3)
  assert dense(y).shape == (2, n, 5)
  assert lift.in_action == act and lift.out_action == actions.regular(act.group, axis=-2)
  assert conv.in_action == conv.out_action == dense.out_action
  # Negative control: the declared actions are the right ones; the plain conv inside the lift
  # (slot e) does not commute with rotations, and a wrong output action is caught.
  with pytest.raises(AssertionError, match="not equivariant"):
    testing.assert_equivariant(lift, act, actions.TrivialAction(act.group), x)
  with pytest.raises(TypeError, match="declares no in_action"):
    testing.assert_equivariant(lambda x: x, x)


@pytest.mark.parametrize("gname", list(IMAGE_ACTIONS))
def test_implementations_agree_and_share_parameters(gname):
  act = IMAGE_ACTIONS[gname]
  g = act.group
  x, y = _inputs(act)
  for make, inp in [(lambda impl: layers.LiftConv(act, 4, impl=impl), x),
                    (lambda impl: layers.GroupConv(g, 4, impl=impl), y),
                    (lambda impl: layers.GroupDense(g, 6, impl=impl), y)]:
    params = jax.jit(make("expanded").init)(jax.random.key(2), inp)
    vparams = jax.eval_shape(make("vmap").init, jax.random.key(2), inp)
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, vparams)
    want = jax.jit(make("expanded").apply)(params, inp)
    for impl in ("vmap", "auto"):
      np.testing.assert_allclose(jax.jit(make(impl).apply)(params, inp), want, atol=2e-5,
                                 rtol=1e-5)


def test_bad_inputs_are_named():
  act = actions.rotations()
  with pytest.raises(ValueError, match="square images"):
    layers.LiftConv(act, 4).init(jax.random.key(0), jnp.zeros((1, 8, 6, 1)))
  with pytest.raises(ValueError, match="hold 3 entries"):
    layers.GroupConv(act.group, 4).init(jax.random.key(0), jnp.zeros((1, 8, 8, 3, 2)))
  with pytest.raises(ValueError, match="unknown implementation"):
    layers.GroupConv(act.group, 4, impl="fft").init(jax.random.key(0), jnp.zeros((1, 8, 8, 4, 2)))


# --- any module: state, randomness, call arguments, NNX ------------------------------------

import flax.linen as linen  # noqa: E402
from flax import nnx  # noqa: E402


class _BNDropNet(linen.Module):
  @linen.compact
  def __call__(self, x, train: bool = False):
    y = linen.BatchNorm(use_running_average=not train)(linen.Conv(4, (3, 3))(x))
    y = linen.Dropout(0.5, deterministic=not train)(linen.relu(y))
    return linen.Dense(3)(y.reshape(y.shape[0], -1))


def test_equivarified_takes_any_linen_module_with_state_and_randomness():
  act = actions.rotations_reflections()
  net = _BNDropNet()
  x = jax.random.normal(jax.random.key(0), (3, 6, 6, 1))
  variables = jax.jit(net.init)(jax.random.key(1), x)
  lifted = layers.Equivarified(net, act)
  # The plain module's variables, as they are; slot e is the plain module. (Not bit for bit:
  # the lift runs the conv on a batch of |G| B, and XLA's CPU conv may block a batch of 24
  # differently from one of 3 on some processors, which moves float32 rounding by ~1e-7.)
  np.testing.assert_allclose(lifted.apply(variables, x)[0], net.apply(variables, x),
                             rtol=1e-6, atol=1e-6)
  testing.assert_equivariant(lambda x: lifted.apply(variables, x), act,
                             actions.regular(act.group), x)
  # Training mode: batch statistics over the whole orbit batch (the documented rule) ...
  out, new = lifted.apply(variables, x, train=True, rngs={"dropout": jax.random.key(2)},
                          mutable=["batch_stats"])
  orbit = eqnn.lift_inputs(act, x).reshape(8 * 3, 6, 6, 1)
  _, plain_new = net.apply(variables, orbit, train=True, rngs={"dropout": jax.random.key(2)},
                           mutable=["batch_stats"])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), new, plain_new)
  # ... which are G-invariant, so without dropout training mode is exactly equivariant too.
  no_drop = lambda x: lifted.apply(variables, x, train=True, rngs={"dropout": jax.random.key(2)},
                                   mutable=["batch_stats"])[0]
  assert not np.allclose(no_drop(x), lifted.apply(variables, x))     # dropout was active
  bn_only = layers.Equivarified(models.MLP((8,), 3), act)
  v = jax.jit(bn_only.init)(jax.random.key(3), x)
  testing.assert_equivariant(bn_only.bind(v), x)


def test_equivarified_takes_nnx_modules():
  act = actions.rotations_reflections()

  class Net(nnx.Module):
    def __init__(self, rngs):
      self.conv = nnx.Conv(1, 4, (3, 3), rngs=rngs)
      self.bn = nnx.BatchNorm(4, rngs=rngs)
      self.out = nnx.Linear(6 * 6 * 4, 3, rngs=rngs)

    def __call__(self, x):
      y = nnx.relu(self.bn(self.conv(x)))
      return self.out(y.reshape(y.shape[0], -1))

  net = Net(nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 1))
  lifted = layers.equivarified(net, act)
  assert lifted.inner is net                                 # its parameters, not a copy
  testing.assert_equivariant(lifted, x)                      # training mode: orbit statistics
  net.eval()
  np.testing.assert_allclose(lifted(x)[0], net(x), atol=1e-6)
  testing.assert_equivariant(lifted, x)


@pytest.mark.parametrize("impl", ["vmap", "expanded"])
def test_sequence_layers_are_equivariant_under_dihedral_shifts(impl):
  act = actions.shifts_reflections(32)
  x = jax.random.normal(jax.random.key(0), (2, 32, 3))
  lift = layers.LiftConv(act, 4, 5, impl=impl)
  bound = lift.bind(jax.jit(lift.init)(jax.random.key(1), x))
  y = bound(x)
  assert y.shape == (2, 32, 64, 4)
  testing.assert_equivariant(bound, x)
  conv = layers.GroupConv(act.group, 3, 3, impl=impl)
  testing.assert_equivariant(conv.bind(jax.jit(conv.init)(jax.random.key(2), y)), y)
