"""experiments.time_to: the first evaluation at or above a target."""

import json

import pytest

from experiments import time_to


def _write(tmp_path, records):
  with open(tmp_path / "metrics.jsonl", "w") as f:
    for r in records:
      f.write(json.dumps(r) + "\n")


def test_first_evaluation_at_or_above_the_target(tmp_path):
  _write(tmp_path, [
      {"kind": "train", "step": 10, "epoch": 1, "loss": 0.5, "elapsed_s": 5.0},
      {"kind": "eval", "step": 20, "epoch": 1, "elapsed_s": 30.0, "test_joint_accuracy": 0.98},
      {"kind": "eval", "step": 40, "epoch": 2, "elapsed_s": 60.0, "test_joint_accuracy": 0.99},
      {"kind": "eval", "step": 60, "epoch": 3, "elapsed_s": 90.0, "test_joint_accuracy": 0.995}])
  assert time_to.first_reaching(str(tmp_path), "test_joint_accuracy", 0.99)["elapsed_s"] == 60.0
  assert time_to.first_reaching(str(tmp_path), "test_joint_accuracy", 0.97)["epoch"] == 1
  assert time_to.first_reaching(str(tmp_path), "test_joint_accuracy", 0.999) is None


def test_a_missing_file_or_metric_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
    time_to.first_reaching(str(tmp_path), "test_joint_accuracy", 0.99)
  _write(tmp_path, [{"kind": "eval", "step": 1, "epoch": 1, "elapsed_s": 1.0,
                     "test_class_accuracy": 0.9}])
  with pytest.raises(KeyError, match="test_class_accuracy"):
    time_to.first_reaching(str(tmp_path), "test_joint_accuracy", 0.99)


def test_a_resumed_run_counts_every_process(tmp_path, capsys):
  """Each process's ``elapsed_s`` restarts at its own start: the run's time sums them (the
  first process to its last record), and the command says the run was resumed."""
  _write(tmp_path, [
      {"kind": "eval", "step": 20, "epoch": 1, "elapsed_s": 30.0, "test_joint_accuracy": 0.98},
      {"kind": "train", "step": 30, "epoch": 2, "loss": 0.1, "elapsed_s": 45.0},
      {"kind": "train", "step": 30, "epoch": 2, "loss": 0.1, "elapsed_s": 4.0},   # resumed
      {"kind": "eval", "step": 40, "epoch": 2, "elapsed_s": 20.0, "test_joint_accuracy": 0.99}])
  r = time_to.first_reaching(str(tmp_path), "test_joint_accuracy", 0.99)
  assert (r["elapsed_s"], r["run_s"], r["segment"]) == (20.0, 65.0, 2)
  first = time_to.first_reaching(str(tmp_path), "test_joint_accuracy", 0.97)
  assert (first["run_s"], first["segment"]) == (30.0, 1)
  from absl.testing import flagsaver
  with flagsaver.flagsaver(), pytest.raises(SystemExit) as done:
    time_to.FLAGS(["time_to"])
    time_to.main(["time_to", str(tmp_path)])
    raise SystemExit(0)
  assert done.value.code == 0
  out = capsys.readouterr().out
  assert "65 s from the run's start (summed over 2 processes" in out
