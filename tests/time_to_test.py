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
