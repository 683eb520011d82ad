"""Example models: the lifted CNN and MLP declare their actions and are equivariant; their
class readout is invariant; the plain CNN is neither (negative control)."""

import jax
import jax.numpy as jnp
import pytest

from eqnn import actions, groups, models, readouts, testing

IMAGE_ACTIONS = {"C4": actions.rotations(), "D4": actions.rotations_reflections()}


@pytest.mark.parametrize("gname", list(IMAGE_ACTIONS))
def test_lifted_cnn_is_equivariant_and_its_readout_invariant(gname):
  act = IMAGE_ACTIONS[gname]
  model = models.EquivariantCNN(act, (4, 6, 6), (2, 2, 1), (8,))
  x = jax.random.normal(jax.random.key(0), (3, 12, 12, 1))
  bound = model.bind(jax.jit(model.init)(jax.random.key(1), x))
  assert bound(x).shape == (3, act.group.order, 10)
  testing.assert_equivariant(bound, x)              # from its declared actions, in one line
  fast = jax.jit(bound.__call__)
  testing.assert_invariant(lambda x: readouts.class_logits(fast(x)), act, x)
  # Negative control: the plain CNN is not rotation-invariant.
  plain = models.PlainCNN((4, 6, 6), (2, 2, 1), (8,))
  pbound = plain.bind(jax.jit(plain.init)(jax.random.key(1), x))
  with pytest.raises(AssertionError):
    testing.assert_invariant(pbound, act, x)


@pytest.mark.parametrize("gname", list(IMAGE_ACTIONS))
def test_a_network_with_turned_kernels_is_the_same_function(gname):
  """impl per layer kind: the input lift turning its kernels, the rest as "auto"; the same
  parameters give the same logits."""
  act = IMAGE_ACTIONS[gname]
  x = jax.random.normal(jax.random.key(0), (3, 12, 12, 1))
  ref = models.EquivariantCNN(act, (4, 6), (2, 2), (8,))
  params = jax.jit(ref.init)(jax.random.key(1), x)
  turned = models.EquivariantCNN(act, (4, 6), (2, 2), (8,), impl="lift_conv=kernels")
  assert jnp.allclose(turned.apply(params, x), ref.apply(params, x), atol=1e-4)


def test_lifted_mlp_over_s4_is_equivariant():
  s4, perms = groups.symmetric(4)
  act = actions.permute_points(s4, perms)
  model = models.EquivariantMLP(act, (8,), 5)
  x = jax.random.normal(jax.random.key(0), (3, 4, 2))
  bound = model.bind(jax.jit(model.init)(jax.random.key(1), x))
  assert bound(x).shape == (3, 24, 5)
  testing.assert_equivariant(bound, x)
  with pytest.raises(AssertionError):        # the plain MLP is not permutation-invariant
    plain = models.MLP((8,), 5)
    testing.assert_invariant(plain.bind(jax.jit(plain.init)(jax.random.key(1), x)), act, x)


def test_pools_must_match_convs():
  with pytest.raises(ValueError, match="one pool window per conv"):
    models.EquivariantCNN(actions.rotations(), (4, 4), (2,)).init(jax.random.key(0),
                                                              jnp.zeros((1, 8, 8, 1)))


@pytest.mark.parametrize("head_pool,hidden,gname", [("none", "stacked", "C4"),
                                                    ("max", "gcnn", "C4"), ("none", "gcnn", "D4")])
def test_the_features_and_the_head_compose_to_the_network(head_pool, hidden, gname):
  """``stage="features"`` then ``stage="head"`` is the network, with the same parameters
  (the head's modules keep their names alone), over C4 and D4 (not abelian); dropout in the
  head draws the same mask."""
  act = IMAGE_ACTIONS[gname]
  model = models.EquivariantCNN(act, (4, 8), (2, 1), (16,), head_pool=head_pool,
                                hidden=hidden, dropout=0.5)
  x = jax.random.normal(jax.random.key(1), (3, 12, 12, 1))
  params = model.init(jax.random.key(0), x)
  rngs = {"dropout": jax.random.key(2)}
  whole = model.apply(params, x, train=True, rngs=rngs)
  y = model.apply(params, x, stage="features")
  n = act.group.order
  assert y.shape == ((3, 1, 1, n, 8) if head_pool == "max" else (3, 6, 6, n, 8))
  head = model.apply(params, y, train=True, stage="head", rngs=rngs)
  assert jnp.allclose(whole, head, atol=1e-5)
  other = model.apply(params, y, train=True, stage="head", rngs={"dropout": jax.random.key(3)})
  assert not jnp.allclose(whole, other, atol=1e-3)          # control: dropout acts
  with pytest.raises(ValueError, match="stage 'head0': choose one of"):
    model.apply(params, x, stage="head0")


@pytest.mark.parametrize("gname", ["C4", "D4", "C8"])
def test_batch_norm_and_dropout_keep_training_mode_equivariant(gname):
  """Statistics shared over the |G| blocks and a dropout mask shared over them: the training
  forward pass itself is equivariant (exactly on the pixel grid's symmetries), and so is
  evaluation with the running averages."""
  act = {"C8": actions.rotations(8), **IMAGE_ACTIONS}[gname]
  head_pool = {"C4": "none", "D4": "max", "C8": "mean"}[gname]     # pooled heads too
  model = models.EquivariantCNN(act, (4, 6), (2, 2), (8,), norm=True, dropout=0.5,
                                head_pool=head_pool)
  x = jax.random.normal(jax.random.key(0), (4, 12, 12, 1)) * actions.disk_mask(12, 12)[..., None]
  variables = jax.jit(model.init)(jax.random.key(1), x)
  assert set(variables) == {"params", "batch_stats"}

  def train_mode(x):
    out, _ = model.apply(variables, x, train=True, mutable=["batch_stats"],
                         rngs={"dropout": jax.random.key(2)})
    return out
  exact = [g for g in range(act.group.order) if not act.approximate or g % 2 == 0]
  out_action = actions.regular(act.group, axis=-2)
  testing.assert_equivariant(jax.jit(train_mode), act, out_action, x, elements=exact, atol=1e-5)
  testing.assert_equivariant(model.bind(variables), x, elements=exact, atol=1e-5)
  # Dropout is active in training (outputs differ from evaluation) and off in evaluation.
  assert float(jnp.max(jnp.abs(train_mode(x) - model.apply(variables, x)))) > 1e-3


def test_kernel_size_per_conv():
  """One kernel size per conv (a larger first kernel): the kernels have those shapes, and a
  list of the wrong length is refused by name."""
  import jax
  import pytest
  from eqnn import actions, models
  x = jnp.zeros((1, 28, 28, 1))
  for model in (models.EquivariantCNN(actions.rotations(4), (2, 3), (2, 2), (8,),
                                      kernel_size=(5, 3)),
                models.PlainCNN((2, 3), (2, 2), (8,), kernel_size=(5, 3))):
    shapes = [v.shape for v in jax.tree.leaves(jax.eval_shape(model.init, jax.random.key(0), x))
              if v.ndim == 4]
    # The first conv reads the 1-channel image; the second reads the first's output.
    assert sorted((s[2] == 1, s[:2]) for s in shapes) == [(False, (3, 3)), (True, (5, 5))]
    with pytest.raises(ValueError, match="one size per conv"):
      model.clone(kernel_size=(5, 3, 3)).init(jax.random.key(0), x)
