"""The plain operations (eqnn/spatial.py): pooling and its gradient, continuous turns."""

import flax.linen as nn
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eqnn import actions, ops, spatial


def test_max_pool_is_flaxs_and_drops_a_ragged_edge():
  x = jax.random.normal(jax.random.key(0), (2, 9, 8, 3))
  for window in (2, 3):
    np.testing.assert_array_equal(spatial.max_pool(x, window),
                                  nn.max_pool(x, (window, window), (window, window)))


def test_max_pool_gradient_goes_to_one_entry_per_window_ties_included():
  # All four entries of each window tie: the first takes the whole gradient, never 0 / 0.
  x = jnp.ones((1, 4, 4, 1))
  g = jax.grad(lambda x: spatial.max_pool(x, 2).sum())(x)
  np.testing.assert_array_equal(g[0, :, :, 0], [[1, 0, 1, 0], [0, 0, 0, 0],
                                                [1, 0, 1, 0], [0, 0, 0, 0]])
  # No ties: the whole gradient goes to the maximum, on any trailing axes and windows.
  x = jax.random.normal(jax.random.key(0), (2, 6, 9, 3, 2))
  for window in (2, 3):
    g = jax.grad(lambda x: (spatial.max_pool(x, window) * 2.0).sum())(x)
    want = jax.grad(lambda x: (nn.max_pool(x.reshape(2, 6, 9, 6), (window, window),
                                           (window, window)) * 2.0).sum())(x)
    np.testing.assert_array_equal(g, want)


def test_max_pool_forward_mode_derivative_is_the_argmax_entrys():
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 3))
  v = jax.random.normal(jax.random.key(1), x.shape)
  y, dy = jax.jvp(lambda x: spatial.max_pool(x, 2), (x,), (v,))
  _, want = jax.jvp(lambda x: nn.max_pool(x, (2, 2), (2, 2)), (x,), (v,))
  np.testing.assert_array_equal(y, nn.max_pool(x, (2, 2), (2, 2)))
  np.testing.assert_array_equal(dy, want)


def test_max_pool_derivative_finds_the_max_and_its_entry_in_one_reduction():
  # One variadic reduction gives both (not a max beside an argmax: two passes), NaN maximal.
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 3))
  text = jax.jit(lambda x, v: jax.jvp(lambda x: spatial.max_pool(x, 2), (x,), (v,))).lower(
      x, x).as_text()
  # The max with its index, and the tangent's sum of the picked entries; no max beside them.
  assert text.count("stablehlo.reduce") == 2 and "stablehlo.maximum" not in text, text
  v = jnp.arange(x.size, dtype=x.dtype).reshape(x.shape)
  with jax.debug_nans(False):                 # tests/conftest.py turns NaNs into errors
    x = x.at[0, 0, 1, 0].set(jnp.nan)
    y, dy = jax.jvp(lambda x: spatial.max_pool(x, 2), (x,), (v,))
    assert np.isnan(np.asarray(y)[0, 0, 0, 0]) and dy[0, 0, 0, 0] == v[0, 0, 1, 0]


def test_batch_norm_then_pool_has_a_finite_gradient_under_jit():
  """The regression: a max reduction's gradient divided by the count of entries equal to the
  max, which XLA's recomputed (fused) batch norm made 0 on an AVX-512 CPU: NaN under jit only."""
  act = actions.rotations()
  x = jax.random.uniform(jax.random.key(0), (16, 28, 28, 1))
  k = jax.random.normal(jax.random.key(1), (3, 3, 1, 4)) * 0.3
  bn = nn.BatchNorm(use_running_average=False, axis=-1)
  v = jax.jit(bn.init)(jax.random.key(3), ops.lift_conv(x, k, None, act))

  def f(params, k):
    y, _ = bn.apply({"params": params, "batch_stats": v["batch_stats"]},
                    ops.lift_conv(x, k, None, act, impl="patches"), mutable=["batch_stats"])
    return jnp.sum(jnp.sin(spatial.max_pool(nn.relu(ops.to_channels(y)), 2)))

  jitted = jax.jit(jax.grad(f, argnums=(0, 1)))(v["params"], k)
  with jax.disable_jit():
    eager = jax.grad(f, argnums=(0, 1))(v["params"], k)
  for a, b in zip(jax.tree.leaves(jitted), jax.tree.leaves(eager)):
    assert jnp.all(jnp.isfinite(a))
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-2)


def test_rotate_scale_and_shift():
  x = jax.image.resize(jax.random.normal(jax.random.key(0), (2, 7, 7, 1)), (2, 28, 28, 1),
                       "bilinear") * actions.disk_mask(28, 28)[None, :, :, None]
  angles = jnp.array([0.3, 2.0])
  np.testing.assert_array_equal(spatial.rotate(x, angles, jnp.ones(2), jnp.zeros((2, 2))),
                                spatial.rotate(x, angles))
  # A centred blob, shifted 2 pixels right and 3 up, then magnified 1.5x about the centre.
  i, j = np.meshgrid(np.arange(28), np.arange(28), indexing="ij")
  blob = jnp.asarray(np.exp(-((i - 13.5) ** 2 + (j - 13.5) ** 2) / 16.0))[None, :, :, None]
  centre = lambda img: np.array([np.sum(img * i), np.sum(img * j)]) / np.sum(img)
  moved = spatial.rotate(blob, jnp.zeros(1), shifts=jnp.array([[2.0, 3.0]]))[0, :, :, 0]
  np.testing.assert_allclose(centre(np.asarray(moved)), [13.5 - 3, 13.5 + 2], atol=0.05)
  big = spatial.rotate(blob, jnp.zeros(1), scales=jnp.array([1.5]))[0, :, :, 0]
  spread = lambda img: np.sum(img * ((i - 13.5) ** 2 + (j - 13.5) ** 2)) / np.sum(img)
  np.testing.assert_allclose(spread(np.asarray(big)) / spread(np.asarray(blob[0, :, :, 0])),
                             1.5 ** 2, rtol=0.05)
  with pytest.raises(ValueError, match="angles of shape"):
    spatial.rotate(x, jnp.zeros(3))
  with pytest.raises(ValueError, match="scales"):
    spatial.rotate(x, angles, shifts=jnp.zeros((2, 3)))


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_rotate_on_the_device_is_turn_images_on_the_host(interpolation):
  x = np.asarray(jax.random.uniform(jax.random.key(0), (6, 12, 12, 2)))
  x = x * actions.disk_mask(12, 12)[None, :, :, None]
  angles = np.random.default_rng(0).uniform(0, 2 * np.pi, 6)
  want = actions.turn_images(x, angles, interpolation)
  got = spatial.rotate(jnp.asarray(x), jnp.asarray(angles, jnp.float32),
                       interpolation=interpolation)
  np.testing.assert_allclose(got, want, atol=2e-5)
  with pytest.raises(ValueError, match="interpolation"):
    spatial.rotate(jnp.asarray(x), jnp.asarray(angles), interpolation="nearest")


# --- conv: the kernel gradient by shifted-window matmuls --------------------------------

@pytest.mark.parametrize("k,padding,shape", [(3, "SAME", (2, 7, 5, 6)), (3, "VALID", (3, 8, 6, 4)),
                                             (2, "SAME", (2, 5, 5, 3)), (4, "SAME", (1, 6, 7, 2)),
                                             (1, "VALID", (2, 4, 4, 3))])
def test_windowed_kernel_gradient_is_xlas(k, padding, shape):
  x = jax.random.normal(jax.random.key(0), shape)
  kernel = jax.random.normal(jax.random.key(1), (k, k, shape[-1], 5))
  conv = lambda x, w, how: spatial.conv(x, w, padding, weight_grad=how)
  loss = lambda x, w, how: jnp.sum(jnp.sin(conv(x, w, how)))
  # The loss, both gradients and forward-mode tangents (a custom JVP) in the input and in
  # the kernel, of each form, one program each.
  run = lambda how: jax.jit(lambda x, w: (
      loss(x, w, how), jax.grad(loss, (0, 1))(x, w, how),
      [jax.jvp(lambda a, b: conv(a, b, how), (x, w), t)[1]
       for t in ((x * 0.5, w * 0.0), (x * 0.0, w * 0.3))]))(x, kernel)
  (got_loss, got, got_t), (want_loss, want, want_t) = run("windows"), run("xla")
  np.testing.assert_allclose(got_loss, want_loss, rtol=1e-6)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, atol=1e-4, rtol=1e-4)
  for g, w in zip(got_t, want_t):
    np.testing.assert_allclose(g, w, atol=1e-4, rtol=1e-4)


def test_auto_kernel_gradient_picks_windows_for_wide_convs_only():
  def uses_windows(c_in, c_out, **kw):
    x, w = jnp.zeros((1, 4, 4, c_in)), jnp.zeros((3, 3, c_in, c_out))
    jaxpr = jax.make_jaxpr(lambda w: spatial.conv(x, w, **{"form": "xla", **kw}))(w)
    return "custom_jvp_call" in str(jaxpr)
  on_cpu = jax.default_backend() == "cpu"
  assert uses_windows(spatial.WINDOWS_MIN_IN, spatial.WINDOWS_MIN_OUT) == on_cpu
  assert not uses_windows(spatial.WINDOWS_MIN_IN - 1, 128)
  assert not uses_windows(128, spatial.WINDOWS_MIN_OUT - 1)
  assert not uses_windows(128, 128, weight_grad="xla")
  assert uses_windows(2, 3, weight_grad="windows")
  with spatial.kernel_gradients("xla"):
    assert not uses_windows(128, 128)
  with spatial.kernel_gradients("windows"):
    assert uses_windows(2, 3) and not uses_windows(2, 3, weight_grad="xla")
  assert uses_windows(128, 128) == on_cpu          # the default is back after the block


def test_bad_kernel_gradient_forms_are_refused():
  x, w = jnp.zeros((1, 4, 4, 2)), jnp.zeros((3, 3, 2, 3))
  with pytest.raises(ValueError, match="weight_grad 'fast'"):
    spatial.conv(x, w, weight_grad="fast")
  with pytest.raises(ValueError, match="kernel gradients 'fast'"):
    with spatial.kernel_gradients("fast"):
      pass
  with pytest.raises(ValueError, match="feature_groups=1"):
    spatial.conv(jnp.zeros((1, 4, 4, 4)), jnp.zeros((3, 3, 2, 4)), feature_groups=2,
                 weight_grad="windows")
  with pytest.raises(ValueError, match="2-D conv"):
    spatial.conv(jnp.zeros((1, 4, 2)), jnp.zeros((3, 2, 4)), weight_grad="windows")
  # A block's default applies where it can: grouped and 1-D convs keep XLA's.
  with spatial.kernel_gradients("windows"):
    assert spatial.conv(jnp.zeros((1, 4, 4, 4)), jnp.zeros((3, 3, 2, 4)),
                        feature_groups=2).shape == (1, 4, 4, 4)
    assert spatial.conv(jnp.zeros((1, 4, 2)), jnp.zeros((3, 2, 4))).shape == (1, 4, 4)


# --- conv: Winograd's F(2 x 2, 3 x 3) ------------------------------------------------------

@pytest.mark.parametrize("padding,shape", [("SAME", (2, 8, 8, 6)), ("SAME", (2, 7, 9, 3)),
                                           ("VALID", (3, 8, 5, 4)), ("VALID", (1, 3, 3, 2))])
def test_the_winograd_conv_is_xlas(padding, shape):
  # The same function as XLA's conv, to float rounding, with its derivatives in both
  # arguments, reverse and forward mode; odd sizes pad to whole tiles and crop.
  x = jax.random.normal(jax.random.key(2), shape)
  kernel = jax.random.normal(jax.random.key(3), (3, 3, shape[-1], 5))
  conv = lambda x, w, form: spatial.conv(x, w, padding, form=form)
  loss = lambda x, w, form: jnp.sum(jnp.sin(conv(x, w, form)))
  # Values, both gradients and the forward-mode tangent of each form, one program each.
  run = lambda form: jax.jit(lambda x, w: (
      conv(x, w, form), jax.grad(loss, (0, 1))(x, w, form),
      jax.jvp(lambda a, b: conv(a, b, form), (x, w), (x * 0.5, w * 0.3))[1]))(x, kernel)
  (got, got_grads, got_t), (want, want_grads, want_t) = run("winograd"), run("xla")
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
  assert want.shape[1:3] == ((shape[1], shape[2]) if padding == "SAME"
                             else (shape[1] - 2, shape[2] - 2))
  for g, w in zip(got_grads, want_grads):
    np.testing.assert_allclose(g, w, atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(got_t, want_t, atol=1e-4, rtol=1e-4)


def test_conv_forms_auto_picks_winograd_for_wide_3x3_convs_on_cpu_only():
  def uses_winograd(c_in, c_out, k=3, **kw):
    x, w = jnp.zeros((1, 6, 6, c_in)), jnp.zeros((k, k, c_in, c_out))
    return "conv_general_dilated" not in str(jax.make_jaxpr(lambda w: spatial.conv(x, w, **kw))(w))
  on_cpu = jax.default_backend() == "cpu"
  assert uses_winograd(spatial.WINOGRAD_MIN_IN, spatial.WINOGRAD_MIN_OUT) == on_cpu  # "auto"
  assert not uses_winograd(spatial.WINOGRAD_MIN_IN - 1, 256)
  assert not uses_winograd(256, spatial.WINOGRAD_MIN_OUT - 1)
  assert not uses_winograd(256, 256, k=5)
  assert not uses_winograd(256, 256, form="xla")
  assert uses_winograd(2, 3, form="winograd")
  with spatial.conv_forms("xla"):
    assert not uses_winograd(256, 256) and uses_winograd(2, 3, form="winograd")
  with spatial.conv_forms("winograd"):
    assert uses_winograd(2, 3) and not uses_winograd(2, 3, form="xla")
    assert spatial.conv(jnp.zeros((1, 6, 6, 2)), jnp.zeros((5, 5, 2, 3))).shape == (1, 6, 6, 3)
  assert uses_winograd(256, 256) == on_cpu           # the default is back after the block
  with pytest.raises(ValueError, match="conv form 'fast'"):
    spatial.conv(jnp.zeros((1, 4, 4, 2)), jnp.zeros((3, 3, 2, 3)), form="fast")
  with pytest.raises(ValueError, match="3 x 3 kernel"):
    spatial.conv(jnp.zeros((1, 4, 4, 2)), jnp.zeros((5, 5, 2, 3)), form="winograd")
  with pytest.raises(ValueError, match="leaves no output"):
    spatial.conv(jnp.zeros((1, 2, 4, 2)), jnp.zeros((3, 3, 2, 3)), "VALID", form="winograd")


def test_the_winograd_conv_takes_its_kernel_gradient_as_weight_grad_says():
  # The input gradient is a Winograd conv (no XLA conv in the gradient's program); the
  # kernel's comes from Winograd's own tiles ("auto"), the window matmuls or XLA's conv.
  x = jax.random.normal(jax.random.key(4), (2, 7, 6, 4))
  w = jax.random.normal(jax.random.key(5), (3, 3, 4, 5))
  def grad_convs(weight_grad):
    loss = lambda x, w: jnp.sum(spatial.conv(x, w, form="winograd", weight_grad=weight_grad) ** 2)
    return str(jax.make_jaxpr(jax.grad(loss, (0, 1)))(x, w)).count("conv_general_dilated")
  assert grad_convs("auto") == grad_convs("windows") == 0
  assert grad_convs("xla") == 1
  for padding in ("SAME", "VALID"):
    g = [jax.jit(jax.grad(lambda w, wg=wg: jnp.sum(jnp.sin(spatial.conv(
        x, w, padding, form="winograd" if wg else "xla", weight_grad=wg)))))(w)
         for wg in (None, "auto", "windows", "xla")]
    for other in g[1:]:
      np.testing.assert_allclose(other, g[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("act", [actions.rotations(), actions.rotations_reflections()],
                         ids=["C4", "D4"])
def test_a_lifted_network_trains_alike_with_any_conv_form_or_kernel_gradient(act):
  # Every conv of a small network (lift, group convs in C4's Fourier basis or D4's irreps, D4
  # not abelian) with windows, or in Winograd's form (its own derivatives), against XLA.
  from eqnn import models
  model = models.EquivariantCNN(act, (4, 8), (2, 2), (16,), norm=True)
  x = jax.random.normal(jax.random.key(0), (4, 12, 12, 1))
  params = jax.jit(model.init)(jax.random.key(1), x)

  def grads(how, form="xla"):
    with spatial.kernel_gradients(how), spatial.conv_forms(form):
      loss = lambda p: jnp.sum(model.apply(p, x, train=True, mutable=["batch_stats"])[0] ** 2)
      return jax.jit(jax.grad(loss))(params)
  want = jax.tree.leaves(grads("xla"))
  for got in (grads("windows"), grads("auto", "winograd")):
    for g, w in zip(jax.tree.leaves(got), want):
      np.testing.assert_allclose(g, w, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("act", [actions.rotations(), actions.rotations_reflections()],
                         ids=["C4", "D4"])
def test_a_network_sets_its_own_conv_forms(act):
  """EquivariantCNN's ``conv_form`` and ``kernel_gradient`` (V1's config sets them) pick the
  forms while it is traced, over a surrounding block's, with the same parameters and the same
  gradients (C4's Fourier basis; D4's irreps, not abelian); an unknown form is refused by
  name, in linen and NNX."""
  from eqnn import models, nnx_modules
  net = lambda **kw: models.EquivariantCNN(act, (4, 8), (1, 2), (16,), **kw)
  x = jax.random.normal(jax.random.key(0), (4, 12, 12, 1))
  params = jax.jit(net().init)(jax.random.key(1), x)
  loss = lambda model: lambda p: jnp.sum(model.apply(p, x) ** 2)

  def convs(model, form):                  # XLA convs traced, inside a block of ``form``
    with spatial.conv_forms(form):
      return str(jax.make_jaxpr(jax.grad(loss(model)))(params)).count("conv_general_dilated")
  xla, wino = net(conv_form="xla"), net(conv_form="winograd", kernel_gradient="windows")
  # Winograd's form runs the group convs as matmuls of transformed tiles: fewer XLA convs.
  assert convs(wino, "xla") < convs(xla, "winograd")
  assert convs(net(), "winograd") == convs(wino, "xla")        # None: the block's form
  with spatial.conv_forms("winograd"):
    want = jax.jit(jax.grad(loss(xla)))(params)
  got = jax.jit(jax.grad(loss(wino)))(params)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, w, atol=1e-4, rtol=1e-4)
  assert jax.tree.structure(jax.eval_shape(xla.init, jax.random.key(1), x)) \
      == jax.tree.structure(params)
  with pytest.raises(ValueError, match="conv form 'direct'"):
    jax.eval_shape(net(conv_form="direct").apply, params, x)
  with pytest.raises(ValueError, match="kernel gradients 'tiles'"):
    nnx_modules.EquivariantCNN(act, (12, 12, 1), (4, 8), (1, 2), (16,),
                               kernel_gradient="tiles", rngs=nnx.Rngs(0))
  lin = net(conv_form="xla", kernel_gradient="xla")
  nnx_net = nnx_modules.from_linen(lin, params, (12, 12, 1))
  assert (nnx_net.conv_form, nnx_net.kernel_gradient) == ("xla", "xla")
  np.testing.assert_allclose(nnx.jit(lambda m, x: m(x))(nnx_net, x),
                             jax.jit(lin.apply)(params, x), atol=1e-5)


def test_a_bias_added_either_way_is_the_same_and_its_gradient_is_summed_as_said():
  """``add_bias`` in ``bias_sums("dot")`` (the bias as ones @ bias) and in the default
  ("reduce") give equal values, gradients in both arguments and forward-mode tangents; the
  dot form's gradient in the bias is a dot, the default's none; a bad form is named."""
  y = jax.random.normal(jax.random.key(0), (3, 5, 5, 4, 6))
  b = jax.random.normal(jax.random.key(1), (6,))
  cot = jax.random.normal(jax.random.key(2), y.shape)

  def grads(form):
    with spatial.bias_sums(form):
      out = spatial.add_bias(y, b)
      g = jax.grad(lambda y, b: jnp.vdot(jax.nn.relu(spatial.add_bias(y, b)), cot), (0, 1))(y, b)
      tangent = jax.jvp(lambda b: spatial.add_bias(y, b), (b,), (jnp.ones_like(b),))[1]
      text = jax.jit(jax.grad(lambda b: jnp.sum(spatial.add_bias(y, b) ** 2))).lower(
          b).as_text()
    return out, g, tangent, text
  ref, dots = grads("reduce"), grads("dot")
  np.testing.assert_array_equal(ref[0], dots[0])
  for a, d in zip(ref[1], dots[1]):
    np.testing.assert_allclose(a, d, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(ref[2], dots[2])
  assert "dot_general" in dots[3] and "dot_general" not in ref[3]
  assert spatial.default_bias_sums() == "reduce"                   # the block is left
  with pytest.raises(ValueError, match="bias sums 'matmul'"):
    with spatial.bias_sums("matmul"):
      pass
