"""The training loop end to end: a smoke run, resume, baselines, other groups, data errors."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eqnn import data, testing
from experiments import input_pipeline, tasks, train
from experiments.configs import d4, default, plain, point_sets, translations


def _config(module, variant, data_dir, **overrides):
  c = module.get_config(variant)
  c.data_dir = data_dir
  for k, v in overrides.items():
    c[k] = v
  return c


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, mnist_dir):
  workdir = str(tmp_path_factory.mktemp("smoke"))
  c = _config(default, "smoke", mnist_dir, make_figures=True)
  return workdir, c, train.train_and_evaluate(c, workdir)


def test_smoke_run_writes_results_metrics_and_figures(smoke_run):
  workdir, c, results = smoke_run
  with open(os.path.join(workdir, "results.json")) as f:
    saved = json.load(f)
  for key in ("test_joint_accuracy", "test_class_accuracy", "test_element_accuracy",
              "wall_time_s", "train_images_per_s", "parameters", "ambiguity"):
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


def test_the_run_exports_to_onnx_from_the_cli(smoke_run):
  """(StableHLO from the CLI: tests/faults_test.py; both formats in-process: export_test.)"""
  import subprocess
  import sys
  workdir, _, _ = smoke_run
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  for fmt, name in (("onnx", "model.onnx"),):
    p = subprocess.run([sys.executable, "-m", "experiments.export", f"--workdir={workdir}",
                        f"--format={fmt}"], cwd=root, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert f"wrote {os.path.join(workdir, name)}" in p.stdout and "Unable to initialize" not in p.stderr


def test_restart_resumes_from_the_checkpoint(smoke_run, capsys):
  workdir, c, results = smoke_run
  again = train.train_and_evaluate(c, workdir)
  assert "resumed from checkpoint at step 16" in capsys.readouterr().err
  assert again["test_joint_accuracy"] == results["test_joint_accuracy"]


@pytest.mark.parametrize("variant", ["smoke", "augmented_smoke"])
def test_plain_baselines_run(tmp_path, mnist_dir, variant):
  results = train.train_and_evaluate(_config(plain, variant, mnist_dir), str(tmp_path))
  assert "test_joint_accuracy" not in results and 0 <= results["test_class_accuracy"] <= 1
  assert results["train_transformed"] == variant.startswith("augmented")


@pytest.mark.parametrize("module", [d4, translations, point_sets],
                         ids=["d4", "translations", "point_sets"])
def test_other_groups_run_through_the_same_entry_point(tmp_path, mnist_dir, module):
  c = _config(module, "smoke", mnist_dir)
  results = train.train_and_evaluate(c, str(tmp_path))
  task = tasks.build_task(c)
  assert task.action.group.order == {d4: 8, translations: 16, point_sets: 24}[module]
  assert 0.0 <= results["test_joint_accuracy"] <= 1.0
  # The model is exactly equivariant to its group on real test inputs, from its declared actions.
  ds = input_pipeline.load_dataset(c)
  x = jnp.asarray(data.as_inputs(ds.test.inputs[:3]))
  testing.assert_equivariant(task.model.bind(jax.jit(task.model.init)(jax.random.key(0), x[:1])), x)


def test_make_trains_network_runs_with_gcnn_hidden_layers_in_slices(tmp_path, mnist_dir):
  """make train's network (default.py): G-CNN hidden layers, the batch in slices (2 in the
  config, its XLA CPU fusions measured; 8 here, shrunk)."""
  full = default.get_config()
  assert (full.hidden, full.microbatches, full.cpu_fusions) == ("gcnn", 2, "auto")
  c = _config(default, "smoke", mnist_dir, hidden="gcnn", microbatches=8)
  results = train.train_and_evaluate(c, str(tmp_path))
  assert results["model"] == "EquivariantCNN" and results["steps"] == 2 * (512 // 64)
  assert 0.0 <= results["test_joint_accuracy"] <= 1.0
  task = tasks.build_task(c)
  x = jnp.asarray(data.as_inputs(input_pipeline.load_dataset(c).test.inputs[:3]))
  testing.assert_equivariant(task.model.bind(jax.jit(task.model.init)(jax.random.key(0), x[:1])), x)


def test_bad_data_dir_is_a_clear_error(tmp_path):
  c = default.get_config("smoke")
  c.data_dir = str(tmp_path)
  with pytest.raises(data.DataError, match="is missing"):
    train.train_and_evaluate(c, str(tmp_path / "w"))


def test_the_loop_reads_top_to_bottom_in_under_100_lines():
  import inspect
  assert len(inspect.getsource(train.train_and_evaluate).splitlines()) < 100


def test_training_from_class_labels_with_continuous_rotations(tmp_path, mnist_dir):
  """Data without angles: the loss reads the invariant readout (it starts near log 10, not
  log 40), and every training image is turned by a random angle."""
  c = _config(default, "smoke", mnist_dir, labels="class", train_rotated=True)
  results = train.train_and_evaluate(c, str(tmp_path))
  with open(os.path.join(str(tmp_path), "metrics.jsonl")) as f:
    first = json.loads(f.readline())
  assert first["kind"] == "train" and first["loss"] < np.log(10) + 0.3
  assert 0.0 <= results["test_class_accuracy"] <= 1.0
  task = tasks.build_task(c)
  np.testing.assert_array_equal(task.nearest_elements(jnp.array([0.0, 1.6, 3.1, 4.7, 6.2])),
                                [0, 1, 2, 3, 0])
