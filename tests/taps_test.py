"""The fused first block max_pool . relu . conv (eqnn/taps.py, spatial.conv_relu_pool): the same
function as the composition, in values and derivatives, in the lifts and in whole networks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eqnn import actions, models, ops, spatial, testing

CASES = [((3, 28, 28, 1), 3, 1, 16, 2, "SAME"), ((3, 27, 25, 3), 3, 3, 8, 2, "SAME"),
         ((2, 13, 13, 1), 5, 1, 6, 3, "VALID"), ((2, 10, 9, 2), 3, 2, 5, 1, "SAME")]


def _block(form, window, padding):
  return lambda x, w, b: spatial.conv_relu_pool(x, w, b, window, padding, form=form)


def _everything(f, args, ct, tangents):
  """Values, the VJP of ``ct`` (x, kernel, bias) and the JVP of ``tangents``, one program."""
  return jax.jit(lambda a, c, t: (f(*a), jax.vjp(f, *a)[1](c), jax.jvp(f, a, t)[1]))(
      args, ct, tangents)


@pytest.mark.parametrize("shape,k,cin,cout,window,padding", CASES,
                         ids=["lift", "rgb-ragged", "5x5-valid-pool3", "no-pool"])
def test_the_fused_block_is_the_composition_in_values_and_derivatives(shape, k, cin, cout,
                                                                       window, padding):
  keys = jax.random.split(jax.random.key(0), 8)
  args = (jax.random.normal(keys[0], shape), 0.3 * jax.random.normal(keys[1], (k, k, cin, cout)),
          0.1 * jax.random.normal(keys[2], (cout,)))
  out = jax.eval_shape(_block("xla", window, padding), *args)
  ct = jax.random.normal(keys[3], out.shape)
  tangents = tuple(jax.random.normal(kk, a.shape) for kk, a in zip(keys[4:], args))
  got = _everything(_block("taps", window, padding), args, ct, tangents)
  want = _everything(_block("xla", window, padding), args, ct, tangents)
  np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5)
  for g, w in zip(got[1], want[1]):                           # x, kernel and bias
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * float(jnp.abs(w).max()))
  np.testing.assert_allclose(got[2], want[2], rtol=1e-4, atol=1e-4)


def test_the_fused_block_gradient_goes_to_each_windows_first_maximum_as_max_pools():
  # A 1 x 1 kernel on a constant image: all four entries of every window tie (and are > 0).
  x, w, b = jnp.ones((1, 4, 4, 1)), jnp.ones((1, 1, 1, 1)), jnp.zeros((1,))
  for form in ("taps", "xla"):
    g = jax.jit(jax.grad(lambda x: spatial.conv_relu_pool(x, w, b, 2, form=form).sum()))(x)
    np.testing.assert_array_equal(g[0, :, :, 0], [[1, 0, 1, 0], [0, 0, 0, 0],
                                                  [1, 0, 1, 0], [0, 0, 0, 0]])
  # Windows whose max is not positive pass no gradient (ReLU's), in either form.
  g = jax.jit(jax.grad(lambda b: spatial.conv_relu_pool(x, w, b, 2, form="taps").sum()))(b - 2)
  np.testing.assert_array_equal(g, [0.0])


def test_a_nan_in_the_kernel_comes_out_where_the_composition_puts_it():
  # The fused form keeps the forward's picks behind a conditional on the kernel having no
  # NaN; both branches are the block, so a NaN changes nothing but where XLA may fuse.
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
  with jax.debug_nans(False):                 # conftest turns NaN checks on
    w = jnp.ones((3, 3, 1, 4)).at[1, 1, 0, 2].set(jnp.nan)
    got = np.asarray(jax.jit(_block("taps", 2, "SAME"))(x, w, jnp.zeros(4)))
    want = np.asarray(_block("xla", 2, "SAME")(x, w, jnp.zeros(4)))
  np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
  assert np.isnan(got[..., 2]).all() and not np.isnan(got[..., :2]).any()


def _program(fn, *args):
  return jax.jit(jax.grad(lambda *a: fn(*a).sum(), (1, 2))).lower(*args).compile().as_text()


def test_auto_fuses_on_cpu_for_few_input_channels_only():
  b = jnp.zeros(8)
  one = (jnp.ones((2, 12, 12, 1)), jnp.ones((3, 3, 1, 8)), b)       # 9 multiply-adds per output
  wide = (jnp.ones((2, 12, 12, 4)), jnp.ones((3, 3, 4, 8)), b)      # 36 > spatial.TAPS_MAX
  fused = _program(_block("auto", 2, "SAME"), *one)
  assert "convolution(" not in fused and "conditional(" in fused
  assert "convolution(" in _program(_block("xla", 2, "SAME"), *one)
  assert "convolution(" in _program(_block("auto", 2, "SAME"), *wide)
  assert spatial.taps_fit((5, 5, 1, 8), 11) and not spatial.taps_fit((5, 5, 2, 8), 2)
  assert not spatial.taps_fit((3, 3, 1, 8), 12) and not spatial.taps_fit((3, 1, 8), 2)
  with spatial.conv_forms("xla"):         # the block default turns the fusion off, as make bench does
    assert "convolution(" in _program(_block(None, 2, "SAME"), *one)


def test_bad_fused_blocks_are_refused():
  x, w = jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 4, 8))
  with pytest.raises(ValueError, match="k\\^2 C_in <= 32"):
    spatial.conv_relu_pool(x, w, None, 2, form="taps")
  with pytest.raises(ValueError, match="window 0"):
    spatial.conv_relu_pool(x, w, None, 0)
  with pytest.raises(ValueError, match="conv form 'fast'"):
    spatial.conv_relu_pool(x, w, None, 2, form="fast")
  with pytest.raises(ValueError, match="expects 1 input channels"):
    spatial.conv_relu_pool(x[..., :2], jnp.ones((3, 3, 1, 8)), None, 2, form="taps")
  with pytest.raises(ValueError, match="padding 'FULL'"):
    spatial.conv_relu_pool(x[..., :1], jnp.ones((3, 3, 1, 8)), None, 2, "FULL", form="taps")


@pytest.mark.parametrize("act,impl", [(actions.rotations(), "vmap"), (actions.rotations(), "patches"),
                                      (actions.rotations(8), "vmap"),
                                      (actions.rotations_reflections(), "vmap"),
                                      (actions.rotations(), "auto"),
                                      (actions.rotations(), "kernels"),
                                      (actions.rotations_reflections(), "auto"),
                                      (actions.rotations(2), "auto"),
                                      (actions.rotations(8), "auto"),
                                      (actions.translations(12, 12, 6), "auto")],
                         ids=["C4", "C4-patches", "C8-resampled", "D4", "C4-auto", "C4-kernels",
                              "D4-auto", "C2-auto", "C8-auto", "shifts-auto"])
def test_a_lift_with_relu_pool_is_the_pooled_lift(act, impl):
  x = jax.random.normal(jax.random.key(0), (2, 12, 12, 1))
  w, b = jax.random.normal(jax.random.key(1), (3, 3, 1, 4)), jnp.arange(4.0) / 8
  fused = lambda w, b: ops.lift_conv(x, w, b, act, impl=impl, relu_pool=2)
  composed = lambda w, b: spatial.max_pool(jax.nn.relu(ops.lift_conv(x, w, b, act, impl=impl)), 2)
  both = lambda f: jax.jit(lambda w, b: (f(w, b), jax.grad(lambda *a: jnp.sum(f(*a) ** 2),
                                                            (0, 1))(w, b)))(w, b)
  for g, v in zip(jax.tree.leaves(both(fused)), jax.tree.leaves(both(composed))):
    np.testing.assert_allclose(g, v, rtol=1e-4, atol=1e-4)


def test_the_lift_pools_in_turned_frames_only_where_that_is_exact():
  # "auto" fuses the block with the turned kernels (pooling each slot in the image's frame,
  # then turning it) where the elements are grid turns and mirrors, the kernel's padding
  # survives a turn and the window tiles the map; else over the turned copies of the image.
  x, k3, k2 = jnp.ones((1, 12, 12, 1)), jnp.ones((3, 3, 1, 2)), jnp.ones((2, 2, 1, 2))
  c4 = actions.rotations()
  assert ops.pools_in_turned_frames(x, k3, c4, "SAME", 2)
  assert ops.pools_in_turned_frames(x, k3, actions.rotations_reflections(), "SAME", 3)
  assert not ops.pools_in_turned_frames(x, k3, c4, "SAME", 5)           # 12 = 2 x 5 + 2
  assert not ops.pools_in_turned_frames(x, k3, c4, "SAME", 1)           # nothing pooled
  assert not ops.pools_in_turned_frames(x, k3, c4, "VALID", 4)          # 10 x 10 output
  assert not ops.pools_in_turned_frames(x, k2, c4, "SAME", 2)           # even kernel, SAME
  assert ops.pools_in_turned_frames(x[:, :11, :11], k2, c4, "VALID", 2)
  assert not ops.pools_in_turned_frames(x, k3, actions.rotations(8), "SAME", 2)
  assert not ops.pools_in_turned_frames(x, k3, actions.translations(12, 12, 6), "SAME", 2)
  # Where it applies, the slots come out in their own frames: equivariant under the block
  # action, as the lift by turned images is (C4, and D4, which is not abelian).
  for act in (c4, actions.rotations_reflections()):
    x = jax.random.normal(jax.random.key(0), (2, 12, 12, 1))
    w, b = jax.random.normal(jax.random.key(1), (3, 3, 1, 4)), jnp.arange(4.0) / 8
    testing.assert_equivariant(lambda x: ops.lift_conv(x, w, b, act, relu_pool=2), act,
                               ops.block_action(act.group), x[:1], atol=1e-5)


def test_a_gcnn_lift_with_relu_pool_is_the_pooled_gcnn_lift():
  act = actions.rotations_reflections()
  x = jax.random.normal(jax.random.key(0), (2, 12, 12, 1))
  w, b = jax.random.normal(jax.random.key(1), (3, 3, 1, 4)), jnp.arange(4.0) / 8
  got = ops.gcnn_lift_conv(x, w, b, act, relu_pool=2)
  z = ops.gcnn_lift_conv(x, w, b, act)
  want = spatial.max_pool(jax.nn.relu(z.reshape(z.shape[:3] + (-1,))), 2).reshape(got.shape)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("act,hidden", [(actions.rotations(), "stacked"),
                                        (actions.rotations_reflections(), "gcnn")],
                         ids=["C4-stacked", "D4-gcnn"])
def test_a_network_with_its_first_block_fused_is_the_same_function(act, hidden):
  # Asking for the equivariance report's records runs the first block composed, recording
  # its full-resolution map; the plain call runs it fused: the same logits and gradients
  # (D4 not abelian; its G-CNN lift fuses over the eight turned kernels side by side).
  model = models.EquivariantCNN(act, (4, 8), (2, 2), (16,), hidden=hidden)
  x = jax.random.normal(jax.random.key(0), (3, 12, 12, 1))
  params = jax.jit(model.init)(jax.random.key(1), x)
  fused = lambda p: model.apply(p, x)
  composed = lambda p: model.apply(p, x, mutable=["intermediates"])[0]
  both = lambda f: jax.jit(lambda p: (f(p), jax.grad(lambda p: jnp.sum(f(p) ** 2))(p)))(params)
  for g, w in zip(jax.tree.leaves(both(fused)), jax.tree.leaves(both(composed))):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)
  # Two different programs: the fused block's gradient keeps its picks behind a conditional.
  program = lambda f: str(jax.make_jaxpr(jax.grad(lambda p: jnp.sum(f(p) ** 2)))(params))
  assert " cond[" in program(fused) and " cond[" not in program(composed)
  assert "conv1" in jax.eval_shape(lambda p: model.apply(p, x, mutable=["intermediates"])[1],
                                   params)["intermediates"]
