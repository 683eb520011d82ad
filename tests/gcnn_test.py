"""G-CNN layers (Cohen & Welling): kernels turned, every slot's map in the image's frame.

Checked against their definition (a loop of plain convs with turned kernels), for exact
equivariance under the action they declare (C4, the non-abelian D4, and the quarter turns
inside a resampled C8), for the conversion into the paper's own-frame stacking, and with
negative controls: the two layouts carry different actions, and the resampled turns are
only approximate."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eqnn import actions, layers, models, ops, testing

ACTIONS = {"C4": actions.rotations(4), "D4": actions.rotations_reflections(4),
           "C8": actions.rotations(8, "bicubic")}
EXACT = {"C4": range(4), "D4": range(8), "C8": (0, 2, 4, 6)}   # C8: its quarter turns


def _disk(x):
  return x * actions.disk_mask(x.shape[1], x.shape[2])[None, :, :, None]


def _reference_gcnn_conv(y, w, b, act):
  """slot h = sum_j conv(y[j], h . W_{h^-1 j}): plain convs, kernels turned by the action."""
  g, n = act.group, act.group.order
  k, _, nc, f = w.shape
  blocks = w.reshape(k, k, n, nc // n, f)
  out = []
  for h in range(n):
    total = 0.0
    for j in range(n):
      wj = blocks[:, :, int(g.table[g.inverse[h], j])]                     # W_{h^-1 j}
      turned = act.apply(h, wj.reshape(k, k, -1)).reshape(wj.shape)
      total = total + ops.conv(y[..., j, :], turned)
    out.append(total + b)
  return jnp.stack(out, -2)


@pytest.mark.parametrize("name", list(ACTIONS))
def test_gcnn_conv_is_its_definition(name):
  act = ACTIONS[name]
  n = act.group.order
  y = jax.random.normal(jax.random.key(0), (2, 9, 9, n, 2))
  w = jax.random.normal(jax.random.key(1), (3, 3, n * 2, 3))
  b = jax.random.normal(jax.random.key(2), (3,))
  np.testing.assert_allclose(ops.gcnn_conv(y, w, b, act), _reference_gcnn_conv(y, w, b, act),
                             atol=2e-5)
  grads = [jax.grad(lambda w: jnp.sum(jnp.sin(f(y, w, b, act))))(w)
           for f in (ops.gcnn_conv, _reference_gcnn_conv)]
  np.testing.assert_allclose(grads[0], grads[1], atol=1e-4, rtol=1e-4)
  # Slot e reads the stack with the kernel as it is: the paper's group conv's slot e.
  np.testing.assert_allclose(ops.gcnn_conv(y, w, b, act)[..., 0, :],
                             ops.group_conv(y, w, b, act.group, impl="vmap")[..., 0, :],
                             atol=2e-5)
  x = jax.random.normal(jax.random.key(3), (2, 9, 9, 2))
  wl = jax.random.normal(jax.random.key(4), (3, 3, 2, 3))
  lifted = ops.gcnn_lift_conv(x, wl, b, act)
  for h in range(n):
    turned = act.apply(h, wl.reshape(3, 3, -1)).reshape(wl.shape)
    np.testing.assert_allclose(lifted[..., h, :], ops.conv(x, turned) + b, atol=2e-5)


@pytest.mark.parametrize("name", list(ACTIONS))
def test_gcnn_layers_are_equivariant_where_the_turns_are_exact(name):
  """Exact (float32 rounding) for every element of C4 and D4 and for C8's quarter turns;
  C8's turns by 45 degrees resample, and the error is measured, not hidden."""
  act = ACTIONS[name]
  n, exact = act.group.order, tuple(EXACT[name])
  gact = ops.gcnn_action(act)
  assert gact.approximate == (name == "C8")
  x = _disk(jax.random.normal(jax.random.key(0), (2, 12, 12, 1)))
  y = _disk(jax.random.normal(jax.random.key(1), (2, 12, 12, n * 2))).reshape(2, 12, 12, n, 2)
  wl = jax.random.normal(jax.random.key(2), (3, 3, 1, 2))
  w = jax.random.normal(jax.random.key(3), (3, 3, n * 2, 3))
  checks = [(lambda x: ops.gcnn_lift_conv(x, wl, None, act), act, gact, x),
            (lambda y: ops.gcnn_conv(y, w, None, act), gact, gact, y),
            (lambda y: ops.to_own_frames(y, act), gact, ops.block_action(act.group), y)]
  for f, ins, outs, arg in checks:
    # A resampled turn masks maps to their inscribed disk, the identity too (it is not quite
    # an action): compare on the disk, e . f(x), which is f(x) for the exact groups.
    on_disk = lambda v, f=f, outs=outs: outs.apply(0, f(v))
    testing.assert_equivariant(on_disk, ins, outs, arg, elements=exact)
    if name == "C8":
      err = testing.equivariance_error(on_disk, ins, outs, arg, elements=(1, 3))
      assert err.max_rel > 1e-3        # resampling: approximate, measured
  if name == "C8":
    return
  # The layers declare these actions themselves.
  lift = layers.GCNNLiftConv(act, 2)
  params = jax.jit(lift.init)(jax.random.key(4), x)
  testing.assert_equivariant(lift.bind(params), x, elements=exact)
  conv = layers.GCNNConv(act, 3)
  testing.assert_equivariant(conv.bind(jax.jit(conv.init)(jax.random.key(5), y)), y, elements=exact)


@pytest.mark.parametrize("name", ["C4", "D4"])
def test_the_two_layouts_carry_different_actions(name):
  """Negative controls: a G-CNN map does not transform by slot moves alone, and the paper's
  group conv (slots in their own frames) is not equivariant under turned slots. Turning the
  G-CNN lift's slots into their own frames gives the paper's lift exactly."""
  act = ACTIONS[name]
  n = act.group.order
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
  y = jax.random.normal(jax.random.key(1), (2, 8, 8, n, 2))
  wl = jax.random.normal(jax.random.key(2), (3, 3, 1, 2))
  w = jax.random.normal(jax.random.key(3), (3, 3, n * 2, 3))
  blocks, gact = ops.block_action(act.group), ops.gcnn_action(act)
  assert testing.equivariance_error(lambda x: ops.gcnn_lift_conv(x, wl, None, act), act,
                                    blocks, x).max_rel > 0.1
  assert testing.equivariance_error(lambda y: ops.group_conv(y, w, None, act.group), gact,
                                    gact, y).max_rel > 0.1
  np.testing.assert_allclose(ops.to_own_frames(ops.gcnn_lift_conv(x, wl, None, act), act),
                             ops.lift_conv(x, wl, None, act, impl="vmap"), atol=2e-5)


@pytest.mark.parametrize("name", ["C4", "D4"])
def test_a_gcnn_conv_is_the_lift_of_a_conv_when_g_turns_the_slots_maps(name):
  """The G-CNN is equivarification too: the lift (eqnn.equivarify) of the plain conv on the
  stack, G acting on the stack by turning every slot's map and moving the slots
  (TurnedBlocks), is the G-CNN conv with each slot turned into its own frame."""
  import eqnn
  act = ACTIONS[name]
  n = act.group.order
  y = jax.random.normal(jax.random.key(0), (2, 7, 7, n, 2))
  w = jax.random.normal(jax.random.key(1), (3, 3, n * 2, 3))
  b = jax.random.normal(jax.random.key(2), (3,))
  plain = lambda y: ops.conv(ops.to_channels(y), w) + b
  lifted = jnp.moveaxis(eqnn.equivarify(plain, ops.gcnn_action(act))(y), 0, -2)
  np.testing.assert_allclose(ops.to_own_frames(ops.gcnn_conv(y, w, b, act), act), lifted,
                             atol=2e-5)


def test_resampled_kernel_turns_keep_the_quarter_turns_exact():
  """Inside C8, turning a kernel by 90 + 45 degrees is rot90 of turning it by 45, bit for bit."""
  w = jax.random.normal(jax.random.key(0), (5, 5, 2, 3))
  turned = ops.turn_kernels(w, ACTIONS["C8"])
  for g in range(6):
    np.testing.assert_array_equal(turned[g + 2], jnp.rot90(turned[g], 1, axes=(0, 1)))
  np.testing.assert_array_equal(turned[0], w * actions.disk_mask(5, 5)[:, :, None, None])


def test_gcnn_layers_refuse_what_they_cannot_do():
  c4 = actions.rotations()
  x = jnp.ones((1, 8, 8, 1))
  with pytest.raises(ValueError, match="odd kernel with SAME"):
    ops.gcnn_lift_conv(x, jnp.ones((2, 2, 1, 2)), None, c4)
  with pytest.raises(ValueError, match="rotations and mirrors of the pixel grid"):
    ops.gcnn_lift_conv(x, jnp.ones((3, 3, 1, 2)), None, actions.translations(8, 8, 2))
  with pytest.raises(ValueError, match="needs square images"):
    ops.gcnn_lift_conv(jnp.ones((1, 8, 6, 1)), jnp.ones((3, 3, 1, 2)), None, c4)
  with pytest.raises(ValueError, match="input channels"):
    ops.gcnn_conv(jnp.ones((1, 8, 8, 4, 2)), jnp.ones((3, 3, 4, 2)), None, c4)
  with pytest.raises(ValueError, match=r"\|G\| = 4"):
    ops.gcnn_conv(jnp.ones((1, 8, 8, 8, 2)), jnp.ones((3, 3, 16, 2)), None, c4)


@pytest.mark.parametrize("name", ["C4", "D4", "C8"])
def test_a_gcnn_network_is_equivariant(name):
  """EquivariantCNN(hidden="gcnn"): G-CNN convs, then the paper's head on own-frame slots;
  the same parameter count as the paper's network, exactly equivariant on the exact turns."""
  act = ACTIONS[name]
  kw = dict(conv_features=(3, 4, 5), pools=(2, 2, 2), dense_features=(8,), norm=True)
  x = _disk(jax.random.normal(jax.random.key(0), (2, 16, 16, 1)))
  model = models.EquivariantCNN(act, hidden="gcnn", **kw)
  params = jax.jit(model.init)(jax.random.key(1), x)
  stacked = jax.eval_shape(models.EquivariantCNN(act, **kw).init, jax.random.key(1), x)
  shapes = lambda v: sorted(p.shape for p in jax.tree.leaves(v["params"]))
  assert shapes(params) == shapes(stacked)
  testing.assert_equivariant(model.bind(params), x, elements=tuple(EXACT[name]))
  with pytest.raises(ValueError, match="does not tile"):
    models.EquivariantCNN(act, hidden="gcnn", **{**kw, "pools": (3, 2, 2)}).init(
        jax.random.key(1), x)
  with pytest.raises(ValueError, match="odd kernels"):
    models.EquivariantCNN(act, hidden="gcnn", kernel_size=(3, 4, 3),
                          **kw).init(jax.random.key(1), x)
