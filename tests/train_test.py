"""The MNIST experiment: a smoke run end to end, the paper's claims, configs and errors."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.training import train_state

from eqnn import actions, data, testing
from eqnn import nn as enn
from experiments import train
from experiments.configs import default, paper, plain

from data_test import MNIST_DIR, needs_mnist

pytestmark = needs_mnist


def _config(module, variant, **overrides):
  c = module.get_config(variant)
  c.data_dir = MNIST_DIR
  for k, v in overrides.items():
    c[k] = v
  return c


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("smoke"))
  c = _config(default, "smoke", make_figures=True)
  return workdir, c, train.train_and_evaluate(c, workdir)


def test_smoke_run_writes_results_metrics_and_figures(smoke_run):
  workdir, c, results = smoke_run
  with open(os.path.join(workdir, "results.json")) as f:
    saved = json.load(f)
  for key in ("test_joint_accuracy", "test_digit_accuracy", "test_angle_accuracy", "wall_time_s",
              "train_images_per_s", "parameters", "ambiguity"):
    assert key in saved, key
  # LiftConv 3*3*1*4+4, GroupConv 3*3*16*8+8, GroupDense 7*7*32*16+16, Dense 16*10+10.
  assert saved["parameters"] == 40 + 1160 + 25104 + 170
  assert saved["steps"] == 2 * (512 // 64)
  assert 0.0 <= saved["test_joint_accuracy"] <= 1.0
  assert set(saved["figures"]) == {"figure4.png", "training_curves.png", "confusion.png"}
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  assert [r["epoch"] for r in records if r["kind"] == "eval"] == [1, 2]
  # Learning happened: the loss went down from log(40).
  assert records[-1]["train_loss"] < np.log(40)
  assert results["test_joint_accuracy"] == saved["test_joint_accuracy"]


def test_restart_resumes_from_the_checkpoint(smoke_run, capsys):
  workdir, c, results = smoke_run
  again = train.train_and_evaluate(c, workdir)
  assert "resumed from checkpoint at step 16" in capsys.readouterr().err
  assert again["test_joint_accuracy"] == results["test_joint_accuracy"]


@pytest.mark.parametrize("variant", ["smoke", "augmented_smoke"])
def test_plain_baselines_run(tmp_path, variant):
  results = train.train_and_evaluate(_config(plain, variant), str(tmp_path))
  assert "test_joint_accuracy" not in results and 0 <= results["test_digit_accuracy"] <= 1
  assert results["train_transformed"] == variant.startswith("augmented")


def _state(model, x, lr=0.1):
  # Plain SGD: the update is lr * gradient, so equal gradients give equal parameters up to
  # float32 rounding. (Adam divides by |g| + eps, which turns the rounding noise of
  # gradients near zero, ~1e-12, into visible differences of the update.)
  import optax
  params = model.init(jax.random.key(0), x[:1])
  return train_state.TrainState.create(apply_fn=model.apply, params=params, tx=optax.sgd(lr))


@pytest.mark.parametrize("gname", ["C4", "D4"])
def test_training_on_moved_images_gives_the_same_parameters(gname):
  """The paper's claim: a step on g . batch with equivariant labels equals a step on batch."""
  ds = data.load_mnist(MNIST_DIR)
  act = train.GROUP_ACTIONS[gname]()
  model = enn.LiftedCNN(act, (4, 8), (2, 2), (16,))
  x = jnp.asarray(data.to_float(ds.train.images[:32]))
  m = jnp.asarray(ds.train.labels[:32])
  step = jax.jit(train.update)
  upright, _ = step(_state(model, x), x, data.equivariant_labels(m, 0, 10))
  moved_x, g = data.transform_randomly(jax.random.key(3), x, act)
  moved, _ = step(_state(model, x), moved_x, data.equivariant_labels(m, g, 10))
  diff = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), upright.params, moved.params)
  assert max(jax.tree.leaves(diff)) < 1e-6
  # Control: with the labels left upright, the step differs.
  wrong, _ = step(_state(model, x), moved_x, data.equivariant_labels(m, 0, 10))
  diff = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), upright.params, wrong.params)
  assert max(jax.tree.leaves(diff)) > 1e-4


@pytest.mark.parametrize("cfg", [default.get_config(), paper.get_config()], ids=["default", "paper"])
def test_models_are_equivariant_on_real_test_images(cfg):
  ds = data.load_mnist(MNIST_DIR)
  problem = train.build_problem(cfg, 10)
  x = jnp.asarray(data.to_float(ds.test.images[:4 if cfg.conv_features[0] < 50 else 2]))
  params = problem.model.init(jax.random.key(0), x[:1])
  n = problem.group_order
  f = jax.jit(lambda x: enn.group_logits(problem.model.apply(params, x), n))
  err = testing.assert_equivariant(f, problem.action, actions.regular(problem.action.group, 1), x)
  assert err.max_rel < 1e-5
  inv = jax.jit(lambda x: enn.invariant_logits(problem.model.apply(params, x), n))
  testing.assert_invariant(inv, problem.action, x)


def test_paper_config_matches_the_authors_network():
  problem = train.build_problem(paper.get_config(), 10)
  params = problem.model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
  shapes = {k: jax.tree.map(jnp.shape, v) for k, v in params.items()}
  assert shapes["LiftConv_0"]["conv"]["kernel"] == (3, 3, 1, 80)
  assert shapes["GroupConv_0"]["conv"]["kernel"] == (3, 3, 320, 80)
  assert shapes["GroupConv_1"]["conv"]["kernel"] == (3, 3, 320, 32)
  assert shapes["GroupDense_0"]["kernel"] == (7 * 7 * 128, 1024)
  assert shapes["Dense_0"]["kernel"] == (1024, 10)
  out = problem.model.apply({"params": params}, jnp.zeros((2, 28, 28, 1)))
  assert out.shape == (2, 40)


def test_ambiguity_breakdown_counts_half_turns():
  problem = train.build_problem(default.get_config(), 10)
  labels = np.array([0, 6, 9, 3, 8])
  elements = np.array([1, 0, 3, 0, 2])
  pred = np.array([3 * 10 + 0, 2 * 10 + 9, 1 * 10 + 6, 0 * 10 + 3, 0 * 10 + 8])
  logits = np.eye(40)[pred]
  out = train.ambiguity_breakdown(problem, logits, labels, elements)
  assert out == {"errors": 4, "0_half_turn": 1, "1_half_turn": 0, "8_half_turn": 1,
                 "6_as_9_half_turn": 1, "9_as_6_half_turn": 1}


@pytest.mark.parametrize("field, value, match", [
    ("group", "C3", "config.group = 'C3'"),
    ("model", "resnet", "config.model"),
    ("pools", (2,), "one pool window per conv"),
    ("batch_size", 0, "must be positive"),
    ("schedule", "linear", "cosine"),
])
def test_bad_config_values_are_named(field, value, match):
  c = default.get_config()
  c[field] = value
  with pytest.raises(train.ConfigError, match=match):
    train.validate_config(c)


def test_bad_data_dir_is_a_clear_error(tmp_path):
  c = default.get_config("smoke")
  c.data_dir = str(tmp_path)
  with pytest.raises(data.DataError, match="is missing"):
    train.train_and_evaluate(c, str(tmp_path / "w"))


def test_unknown_variants_are_refused():
  for module in (default, paper, plain):
    with pytest.raises(ValueError, match="unknown variant"):
      module.get_config("huge")


from experiments.configs import d4, point_sets, translations  # noqa: E402


@pytest.mark.parametrize("module", [d4, translations, point_sets],
                         ids=["d4", "translations", "point_sets"])
def test_other_groups_run_through_the_same_entry_point(tmp_path, module):
  c = _config(module, "smoke")
  results = train.train_and_evaluate(c, str(tmp_path))
  problem = train.build_problem(c, 5 if module is point_sets else 10)
  order = problem.action.group.order
  assert order == {d4: 8, translations: 16, point_sets: 24}[module]
  assert 0.0 <= results["test_joint_accuracy"] <= 1.0
  # The trained model is exactly equivariant to its group on moved test inputs.
  ds = train.load_dataset(c)
  x = jnp.asarray(data.as_inputs(ds.test.images[:3]))
  params = problem.model.init(jax.random.key(0), x[:1])
  f = jax.jit(lambda x: enn.group_logits(problem.model.apply(params, x), order))
  testing.assert_equivariant(f, problem.action, actions.regular(problem.action.group, 1), x)


def test_accuracy_up_to_the_digits_own_symmetry():
  problem = train.build_problem(d4.get_config(), 10)
  grp = problem.action.group
  labels = np.array([0, 0, 3, 3, 7])
  elements = np.array([1, 1, 0, 2, 0])
  f, r2 = grp.index("f"), grp.index("r^2")
  guess = [(grp.mul(1, f), 0),     # off by f: a 0 looks the same mirrored
           (grp.mul(1, r2), 6),    # wrong digit
           (grp.index("f r^2"), 3),  # off by f r^2: a 3 mirrored top-bottom
           (grp.mul(2, f), 3),     # off by f: a 3 does not look the same
           (0, 7)]                 # right
  pred = np.array([g * 10 + m for g, m in guess])
  m = train.metrics_from_predictions(problem, np.eye(80)[pred], labels, elements)
  assert m["joint_accuracy"] == pytest.approx(0.2)
  assert m["joint_accuracy_up_to_symmetry"] == pytest.approx(0.6)


def test_microbatches_give_the_same_step():
  ds = data.load_mnist(MNIST_DIR)
  model = enn.LiftedCNN(actions.rotations(), (4, 8), (2, 2), (16,))
  x = jnp.asarray(data.to_float(ds.train.images[:32]))
  y = data.equivariant_labels(jnp.asarray(ds.train.labels[:32]), 0, 10)
  one, l1 = jax.jit(train.update)(_state(model, x), x, y)
  four, l4 = jax.jit(train.update, static_argnums=3)(_state(model, x), x, y, 4)
  assert abs(float(l1) - float(l4)) < 1e-5
  diff = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), one.params, four.params)
  assert max(jax.tree.leaves(diff)) < 1e-6
