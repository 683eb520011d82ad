"""The lift: equivariance and p . F_hat = F as properties over groups, elements and inputs.

Every action is an exact permutation, so tolerances are float32 rounding (1e-5).
"""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import eqnn
from eqnn import actions, groups, testing
from eqnn import layers

S3, S3_PERMS = groups.symmetric(3)
SEEDS = st.integers(0, 2**31 - 1)


def _mlp(shape, seed=1, width=16, out=5):
  """A non-linear MLP on the flattened input (not equivariant to anything)."""
  k1, k2 = jax.random.split(jax.random.key(seed))
  w1 = jax.random.normal(k1, (int(np.prod(shape)), width)) / 4
  w2 = jax.random.normal(k2, (width, out))
  return lambda x: jnp.tanh(x.reshape(-1) @ w1) @ w2


class _ConvNet(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(4, (3, 3))(x))
    x = nn.max_pool(x, (2, 2), (2, 2))
    return nn.Dense(3)(x.reshape(x.shape[0], -1))


def _convnet(shape, seed=1):
  model = _ConvNet()
  params = jax.jit(model.init)(jax.random.key(seed), jnp.zeros(shape))
  return lambda x: model.apply(params, x)


# (name, input action, input shape, F): C2, C4, D4, a product, S3 on points; MLP and conv net.
CASES = [
    ("C2-mlp", actions.rotations(2), (4, 4, 1), _mlp),
    ("C4-mlp", actions.rotations(), (5, 5, 2), _mlp),
    ("C4-conv", actions.rotations(), (2, 6, 6, 1), _convnet),
    ("D4-mlp", actions.rotations_reflections(), (4, 4, 1), _mlp),
    ("D4-conv", actions.rotations_reflections(), (2, 6, 6, 1), _convnet),
    ("C2xC3-conv", actions.translations(2, 3), (2, 2, 3, 1), _convnet),
    ("S3-points-mlp", actions.permute_points(S3, S3_PERMS), (3, 2), _mlp),
]
# Build F and the jitted lift once, at import, so examples reuse one compilation.
LIFTED = {name: (act, shape, f, jax.jit(eqnn.equivarify(f, act)))
          for name, act, shape, make in CASES for f in [make(shape)]}
IDS = [c[0] for c in CASES]


@pytest.mark.parametrize("name", IDS)
@given(data=st.data(), seed=SEEDS)
def test_lift_is_equivariant(name, data, seed):
  act, shape, _, f_hat = LIFTED[name]
  g = data.draw(testing.group_elements(act.group), label="g")
  x = jax.random.normal(jax.random.key(seed), shape)
  lhs = f_hat(act(g, x))
  rhs = actions.regular(act.group)(g, f_hat(x))
  np.testing.assert_allclose(lhs, rhs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", IDS)
@given(seed=SEEDS)
def test_projection_gives_back_f(name, seed):
  act, shape, f, f_hat = LIFTED[name]
  x = jax.random.normal(jax.random.key(seed), shape)
  s = f_hat(x)
  assert s.shape[0] == act.group.order
  np.testing.assert_allclose(eqnn.project(s), f(x), atol=1e-5, rtol=1e-5)
  # Slot g holds F(g^-1 x): the paper's formula, element by element.
  for g in range(act.group.order):
    np.testing.assert_allclose(s[g], f(act(act.group.inv(g), x)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", IDS)
def test_unlifted_f_is_neither_invariant_nor_equivariant(name):
  # Negative control: the same checks that pass for the lift fail for F itself.
  act, shape, f, _ = LIFTED[name]
  x = jax.random.normal(jax.random.key(3), shape)
  with pytest.raises(AssertionError, match="not equivariant"):
    testing.assert_invariant(f, act, x)


@pytest.mark.parametrize("vectorize", [False, 3, 4])
@pytest.mark.parametrize("name", ["D4-conv", "S3-points-mlp"])
def test_sequential_and_chunked_lifts_are_the_same_function(name, vectorize):
  # False: one call per element; 3: chunks of 3 (a ragged last chunk for D4 and S3); 4.
  act, shape, f, f_hat = LIFTED[name]
  x = jax.random.normal(jax.random.key(5), shape)
  np.testing.assert_allclose(jax.jit(eqnn.equivarify(f, act, vectorize=vectorize))(x), f_hat(x),
                             atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["C4-conv", "D4-conv", "C2xC3-conv"])
def test_the_lift_in_f_s_batch_is_the_same_function(name):
  # vectorize="batch": F once on the |G| B moved images as one batch, no vmap.
  act, shape, f, f_hat = LIFTED[name]
  x = jax.random.normal(jax.random.key(6), shape)
  in_batch = jax.jit(eqnn.equivarify(f, act, vectorize="batch"))
  np.testing.assert_allclose(in_batch(x), f_hat(x), atol=1e-5, rtol=1e-5)
  testing.assert_equivariant(in_batch, act, actions.regular(act.group), x)
  # Pytree outputs split back leaf by leaf; the minimal lift takes the same form.
  both = lambda x: {"logits": f(x), "mean": jnp.mean(x, axis=(1, 2, 3))}
  out = eqnn.equivarify(both, act, vectorize="batch")(x)
  chex.assert_trees_all_close(out, eqnn.equivarify(both, act)(x), atol=1e-5, rtol=1e-5)
  if name == "D4-conv":
    h = SUBGROUPS["flip"]
    f_h = _h_invariant(f, act, h)
    np.testing.assert_allclose(eqnn.equivarify_minimal(f_h, act, h, vectorize="batch")(x),
                               eqnn.equivarify_minimal(f_h, act, h)(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", IDS)
def test_the_default_lift_folds_exactly_where_it_is_proved_the_same(name):
  # "auto" (the default) runs as the fold, the same program as vectorize="batch", where the
  # input has a batch axis and F maps each image on its own (the conv nets); else as the vmap
  # (the MLPs flatten one example: no batch axis). Either way the same function as the vmap.
  act, shape, f, f_hat = LIFTED[name]
  x = jax.random.normal(jax.random.key(8), shape)
  verdict = eqnn.lift.folds(f, act, x)
  assert bool(verdict) == name.endswith("conv"), verdict.reason
  other = "batch" if verdict else True
  assert (str(jax.make_jaxpr(eqnn.equivarify(f, act))(x))
          == str(jax.make_jaxpr(eqnn.equivarify(f, act, vectorize=other))(x)))
  np.testing.assert_allclose(f_hat(x), jax.jit(eqnn.equivarify(f, act, vectorize=True))(x),
                             atol=1e-5, rtol=1e-5)


def test_the_default_lift_splits_its_fold_by_a_byte_budget_on_cpu(monkeypatch):
  # On CPU, "auto" folds as many group elements per call of F as keep F's batched
  # intermediates within FOLD_BYTES_CPU (at most FOLD_MAX_CALLS calls, split evenly); the
  # same function as the vmap, still equivariant, and F traced at the calls' batch sizes.
  act, shape, f, f_hat = LIFTED["D4-conv"]
  x = jax.random.normal(jax.random.key(9), shape)               # B = 2, |G| = 8
  per_copy = eqnn.lift.folds(f, act, x).bytes_per_example * shape[0]
  assert per_copy > 0
  sizes = []
  traced = lambda x: (sizes.append(x.shape[0]), f(x))[1]
  for budget, calls, per_call in ((3 * per_copy, 16, 3), (per_copy, 16, 1), (1, 2, 4),
                                  (8 * per_copy, 16, 8)):
    monkeypatch.setattr(eqnn.fold, "FOLD_BYTES_CPU", budget)
    monkeypatch.setattr(eqnn.fold, "FOLD_MAX_CALLS", calls)
    assert eqnn.lift.fold_calls(per_copy, 8, "cpu") == per_call
    sizes.clear()
    lifted = jax.jit(eqnn.equivarify(traced, act))
    np.testing.assert_allclose(lifted(x), f_hat(x), atol=1e-5, rtol=1e-5)
    last = 8 - per_call * (-(-8 // per_call) - 1)
    assert sorted(set(sizes[-(-(-8 // per_call)):])) == sorted({2 * per_call, 2 * last})
  testing.assert_equivariant(lifted, act, actions.regular(act.group), x)
  # Off the CPU (or with nothing counted), one call.
  assert eqnn.lift.fold_calls(per_copy, 8, "gpu") == 8
  assert eqnn.lift.fold_calls(0, 8, "cpu") == 8


def test_a_split_fold_is_proved_at_its_calls_sizes(monkeypatch):
  # The same program at B and |G| B but another at a call's size: not proved, so the vmap.
  monkeypatch.setattr(eqnn.fold, "FOLD_BYTES_CPU", 1)                # one element per call
  monkeypatch.setattr(eqnn.fold, "FOLD_MAX_CALLS", 4)                # D4: calls of 2 x B
  act = actions.rotations_reflections()
  x = jax.random.normal(jax.random.key(10), (3, 4, 4, 1))
  f = lambda x: x * (3.0 if x.shape[0] == 6 else 2.0)
  verdict = eqnn.lift.folds(f, act, x)
  assert not verdict and verdict.reason.endswith("Python that branches on it)"), verdict.reason
  assert "than at 6" in verdict.reason
  np.testing.assert_allclose(eqnn.equivarify(f, act)(x), eqnn.equivarify(f, act, vectorize=True)(x))


def test_the_lift_in_f_s_batch_refuses_what_has_no_batch_axis():
  act, shape, f, _ = LIFTED["D4-conv"]
  x = jax.random.normal(jax.random.key(6), shape)
  with pytest.raises(ValueError, match="one example x\\[0\\] is not a valid input"):
    eqnn.equivarify(f, act, vectorize="batch")(x[0])                 # one image, no batch
  with pytest.raises(ValueError, match="f must map a batch to a batch"):
    eqnn.equivarify(lambda x: jnp.sum(f(x)), act, vectorize="batch")(x)
  with pytest.raises(ValueError, match="same size on every leaf"):
    eqnn.equivarify(lambda t: t[0], actions.on_pytree((act, act)), vectorize="batch")(
        (x, x[:1]))
  # The Flax module folds the same way (eqnn.lift.lift_in_batch), with the same checks.
  with pytest.raises(ValueError, match="one example x\\[0\\] is not a valid input"):
    layers.Equivarified(_ConvNet(), act).init(jax.random.key(0), x[0])


@pytest.mark.parametrize("act", [actions.rotations(), actions.rotations_reflections()],
                         ids=["C4", "D4"])
def test_a_batch_coupled_f_lifted_in_its_batch_is_equivariant_but_not_f(act):
  # F subtracts its batch's mean image (batch statistics). In F's batch the lift sees the
  # whole orbit's mean, which h only permutes: exactly equivariant, but slot e is not F(x).
  f = lambda x: jnp.tanh(x - jnp.mean(x, axis=0)) * jnp.arange(1.0, 7.0)[:, None, None]
  x = jax.random.normal(jax.random.key(7), (3, 6, 6, 1))
  in_batch = eqnn.equivarify(f, act, vectorize="batch")
  testing.assert_equivariant(in_batch, act, actions.regular(act.group), x)
  assert float(jnp.max(jnp.abs(eqnn.project(in_batch(x)) - f(x)))) > 0.05
  # The default ("auto") does not fold it (the batch's mean is not proved per example): its
  # slot e is F(x), as with the vmap.
  assert eqnn.lift.folds(f, act, x).reason.startswith("reduce_sum: reduces over the batch")
  np.testing.assert_allclose(eqnn.project(eqnn.equivarify(f, act)(x)), f(x), atol=1e-6)


@pytest.mark.parametrize("bad", [0, -2, 1.5, "fold"])
def test_a_bad_chunk_is_refused(bad):
  with pytest.raises(ValueError, match="vectorize"):
    eqnn.equivarify(lambda x: x, actions.rotations(), vectorize=bad)


def test_c4_lift_formula_and_shift():
  act = actions.rotations()
  f = _mlp((4, 4, 1))
  x = jax.random.normal(jax.random.key(0), (4, 4, 1))
  s = eqnn.equivarify(f, act)(x)
  rot = lambda k: jnp.rot90(x, k, axes=(0, 1))
  # F_hat(x) = (F(x), F(g^-1 x), F(g^-2 x), F(g^-3 x)), g counter-clockwise.
  for k in range(4):
    np.testing.assert_allclose(s[k], f(rot(-k)), atol=1e-6)
  # F_hat(g x) = (z3, z0, z1, z2).
  np.testing.assert_allclose(eqnn.equivarify(f, act)(rot(1)), s[jnp.array([3, 0, 1, 2])],
                             atol=1e-5)


def test_swapping_g_and_inverse_fails_on_d4():
  # Negative control 1: a lift that uses F(g . x) instead of F(g^-1 . x).
  act = actions.rotations_reflections()
  d4 = act.group
  f = _mlp((4, 4, 1))
  wrong = lambda x: jax.vmap(lambda g: f(act(g, x)))(jnp.arange(8))
  x = jax.random.normal(jax.random.key(0), (4, 4, 1))
  with pytest.raises(AssertionError, match="not equivariant"):
    testing.assert_equivariant(wrong, act, actions.regular(d4), x)
  # Negative control 2: the right lift, but G acting on it by s(g h^-1) instead of s(h^-1 g).
  # On an abelian group the two coincide, so only D4 can catch it.
  right_mult = lambda grp: actions.TableAction(grp, grp.table[:, grp.inverse].T, 0, 1)
  f_hat = eqnn.equivarify(f, act)
  testing.assert_equivariant(f_hat, act, actions.regular(d4), x)
  with pytest.raises(AssertionError, match="not equivariant"):
    testing.assert_equivariant(f_hat, act, right_mult(d4), x)
  c4 = actions.rotations()
  testing.assert_equivariant(eqnn.equivarify(f, c4), c4, right_mult(c4.group), x)


def test_pytree_valued_f():
  act = actions.rotations_reflections()
  mlp = _mlp((4, 4, 1))
  f = lambda x: {"a": mlp(x), "b": (jnp.sum(x[0]), x[1:3, 0])}
  f_hat = eqnn.equivarify(f, act)
  x = jax.random.normal(jax.random.key(0), (4, 4, 1))
  out = f_hat(x)
  assert out["a"].shape == (8, 5) and out["b"][0].shape == (8,) and out["b"][1].shape == (8, 2, 1)
  testing.assert_equivariant(f_hat, act, actions.regular(act.group), x)
  chex.assert_trees_all_close(eqnn.project(out), f(x), atol=1e-6)


def test_extra_arguments_pass_through():
  model = _ConvNet()
  act = actions.rotations()
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 1))
  params = jax.jit(model.init)(jax.random.key(1), x)
  f_hat = eqnn.equivarify(model.apply, act, argnum=1)
  out = f_hat(params, x)
  np.testing.assert_allclose(out[0], model.apply(params, x), atol=1e-6)
  with pytest.raises(ValueError, match="positional argument 1"):
    f_hat(x)


def test_lift_compiles_once_per_shape():
  act = actions.rotations()
  calls = []

  def f(x):
    calls.append(x.shape)
    return jnp.sum(x * x, axis=(-3, -2, -1))

  for vectorize in (True, "auto"):
    calls.clear()
    chex.clear_trace_counter()
    f_hat = jax.jit(chex.assert_max_traces(eqnn.equivarify(f, act, vectorize=vectorize), n=2))
    for seed in range(3):
      f_hat(jax.random.normal(jax.random.key(seed), (2, 4, 4, 1)))
    f_hat(jnp.zeros((3, 4, 4, 1)))
    # One trace of F per input shape, not one per group element: under the vmap ([2, 4, 4, 1]
    # per copy), or folded ([4 x 2, ...]) after the proof's two abstract traces (at the
    # fold's batch and the vmap's) that F maps each image on its own.
    batches = [s[0] for s in calls]
    assert batches == ([2, 3] if vectorize is True else [8, 2, 8, 12, 3, 12])


def test_flax_module_shares_one_parameter_set():
  act = actions.rotations_reflections()
  inner = _ConvNet()
  lifted = layers.Equivarified(inner, act)
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 1))
  params = jax.jit(lifted.init)(jax.random.key(1), x)
  # The lift's parameters are the plain module's, keyed the same way (no "inner" level).
  assert jax.tree.map(jnp.shape, params) == jax.tree.map(
      jnp.shape, jax.jit(inner.init)(jax.random.key(1), x))
  out = lifted.apply(params, x)
  np.testing.assert_allclose(eqnn.project(out), inner.apply(params, x), atol=1e-6)
  testing.assert_equivariant(lambda x: lifted.apply(params, x), act, actions.regular(act.group), x)


@pytest.mark.parametrize("reduce", ["max", "mean", "sum", "logsumexp"])
def test_invariant_readouts(reduce):
  act = actions.rotations_reflections()
  f_hat = eqnn.equivarify(_mlp((4, 4, 1)), act)
  x = jax.random.normal(jax.random.key(0), (4, 4, 1))
  testing.assert_invariant(lambda x: eqnn.invariant(f_hat(x), reduce), act, x)
  with pytest.raises(AssertionError):   # the lift itself is equivariant, not invariant
    testing.assert_invariant(f_hat, act, x)


def test_unknown_readout_is_refused():
  with pytest.raises(ValueError, match="unknown reduction 'median'"):
    eqnn.invariant(jnp.zeros((4, 2)), "median")


# --- minimal equivarification (paper appendix 5.4) ------------------------------------

D4_ACT = actions.rotations_reflections()
# {e, r^2} is normal, {e, f} is not: both must work, with left cosets.
SUBGROUPS = {"half-turn": D4_ACT.group.subgroup([0, 2]), "flip": D4_ACT.group.subgroup([0, 4]),
             "rotations": D4_ACT.group.subgroup([0, 1, 2, 3])}


def _h_invariant(f, act, h):
  """F symmetrised over H: F_H(x) = mean_h F(h x), exactly H-invariant."""
  return lambda x: jnp.mean(jnp.stack([f(act(e, x)) for e in h.elements]), axis=0)


@pytest.mark.parametrize("hname", list(SUBGROUPS))
@given(g=st.integers(0, 7), seed=SEEDS)
def test_minimal_lift_is_equivariant_and_factors_the_full_lift(hname, g, seed):
  h = SUBGROUPS[hname]
  f = _h_invariant(_mlp((4, 4, 1)), D4_ACT, h)
  x = jax.random.normal(jax.random.key(seed), (4, 4, 1))
  f_min = eqnn.equivarify_minimal(f, D4_ACT, h)
  s_min = f_min(x)
  assert s_min.shape == (h.index, 5)
  np.testing.assert_allclose(f_min(D4_ACT(g, x)), actions.on_cosets(h)(g, s_min),
                             atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(eqnn.expand_minimal(s_min, h), eqnn.equivarify(f, D4_ACT)(x),
                             atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("vectorize", [False, 3])
def test_minimal_lift_in_chunks_is_the_same_function(vectorize):
  h = SUBGROUPS["flip"]                                 # 4 cosets: chunks of 3 and 1
  f = _h_invariant(_mlp((4, 4, 1)), D4_ACT, h)
  x = jax.random.normal(jax.random.key(1), (4, 4, 1))
  np.testing.assert_allclose(eqnn.equivarify_minimal(f, D4_ACT, h, vectorize=vectorize)(x),
                             eqnn.equivarify_minimal(f, D4_ACT, h)(x), atol=1e-5, rtol=1e-5)


def test_minimal_lift_needs_h_invariance():
  h = SUBGROUPS["flip"]
  f = _mlp((4, 4, 1))                                   # not flip-invariant
  x = jax.random.normal(jax.random.key(0), (4, 4, 1))
  assert testing.invariance_error(f, D4_ACT, x, elements=h.elements).max_rel > 1e-2
  f_min = eqnn.equivarify_minimal(f, D4_ACT, h)
  with pytest.raises(AssertionError, match="not equivariant"):
    testing.assert_equivariant(f_min, D4_ACT, actions.on_cosets(h), x)
  with pytest.raises(ValueError, match="subgroup lives in C4"):
    eqnn.equivarify_minimal(f, D4_ACT, groups.cyclic(4).subgroup([0, 2]))


# --- pytrees, group averages, nested lifts (any model, any finite group) -------------------

S5, S5_MAPS = groups.symmetric(5)
GRAPH5 = actions.on_pytree((actions.permute_axes(S5, S5_MAPS), actions.permute_points(S5, S5_MAPS)))
NODES5 = actions.permute_points(S5, S5_MAPS)


def _graph(seed):
  return (jax.random.normal(jax.random.key(seed), (5, 5)),
          jax.random.normal(jax.random.key(seed + 1), (5, 2)))


def _node_model(graph):
  """Per-node outputs that depend on the node's index: not permutation-equivariant."""
  a, x = graph
  return jnp.tanh(a @ x @ jnp.ones((2, 3)) + jnp.arange(15.0).reshape(5, 3) / 10)


def test_lift_of_a_graph_model_is_equivariant_on_pytree_inputs():
  g = _graph(0)
  f_hat = jax.jit(eqnn.equivarify(lambda gr: jnp.sum(_node_model(gr)), GRAPH5))
  testing.assert_equivariant(f_hat, GRAPH5, actions.regular(S5), g)


def test_group_average_is_exactly_equivariant_in_the_output_space():
  g = _graph(2)
  assert testing.equivariance_error(_node_model, GRAPH5, NODES5, g).max_rel > 0.1
  node_level = jax.jit(eqnn.symmetrize(_node_model, GRAPH5, NODES5))
  testing.assert_equivariant(node_level, GRAPH5, NODES5, g)
  # S5's 120 elements in vmaps of 32 (the last chunk ragged, 24): the same average.
  chunked = jax.jit(eqnn.symmetrize(_node_model, GRAPH5, NODES5, vectorize=32))
  np.testing.assert_allclose(chunked(g), node_level(g), atol=1e-5, rtol=1e-5)
  # Linear output action: a point cloud's mean offset turns with its coordinates (D4).
  d4v = actions.rotate_reflect_vectors(4)
  w = jax.random.normal(jax.random.key(5), (2, 2))
  f = lambda pts: jnp.mean(pts, axis=0) @ w                   # not rotation-equivariant
  pts = jax.random.normal(jax.random.key(6), (7, 2))
  assert testing.equivariance_error(f, d4v, d4v, pts).max_rel > 0.1
  testing.assert_equivariant(jax.jit(eqnn.symmetrize(f, d4v, d4v)), d4v, d4v, pts)
  # An f that is already equivariant is its own average.
  np.testing.assert_allclose(eqnn.symmetrize(lambda p: p * 2.0, d4v, d4v)(pts), pts * 2.0,
                             atol=1e-5)


def test_nested_lift_equals_the_lift_over_the_product():
  rows, cols = actions.shifts(4, axis=-3), actions.shifts(4, axis=-2)
  both = actions.product(rows, cols)
  w = jax.random.normal(jax.random.key(0), (16, 3))
  f = lambda x: jnp.tanh(x.reshape(-1) @ w)
  x = jax.random.normal(jax.random.key(1), (4, 4, 1))
  nested = eqnn.equivarify_nested(f, rows, cols)(x)                  # [4, 4, 3]
  flat = eqnn.equivarify(f, both)(x)                                 # [16, 3]
  np.testing.assert_allclose(nested.reshape(16, 3), flat, atol=1e-6)
  nested_regular = actions.product(actions.regular(rows.group, axis=0),
                                   actions.regular(cols.group, axis=1))
  testing.assert_equivariant(eqnn.equivarify_nested(f, rows, cols), both, nested_regular, x)
