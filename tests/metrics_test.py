"""Test metrics: accuracy up to a digit's own symmetry and the half-turn breakdown."""

import numpy as np
import pytest

from experiments import metrics, tasks
from experiments.configs import d4, default


def _onehot(pred, n, k=10):
  return np.eye(n * k)[pred].reshape(len(pred), n, k)


def test_ambiguity_breakdown_counts_half_turns():
  task = tasks.build_task(default.get_config())
  labels = np.array([0, 6, 9, 3, 8])
  elements = np.array([1, 0, 3, 0, 2])
  pred = np.array([3 * 10 + 0, 2 * 10 + 9, 1 * 10 + 6, 0 * 10 + 3, 0 * 10 + 8])
  out = metrics.ambiguity_breakdown(task, _onehot(pred, 4), labels, elements)
  assert out == {"errors": 4, "0_half_turn": 1, "1_half_turn": 0, "8_half_turn": 1,
                 "6_as_9_half_turn": 1, "9_as_6_half_turn": 1}


def test_accuracy_up_to_the_digits_own_symmetry():
  task = tasks.build_task(d4.get_config())
  grp = task.action.group
  labels = np.array([0, 0, 3, 3, 7])
  elements = np.array([1, 1, 0, 2, 0])
  f, r2 = grp.index("f"), grp.index("r^2")
  guess = [(grp.mul(1, f), 0),     # off by f: a 0 looks the same mirrored
           (grp.mul(1, r2), 6),    # wrong digit
           (grp.index("f r^2"), 3),  # off by f r^2: a 3 mirrored top-bottom
           (grp.mul(2, f), 3),     # off by f: a 3 does not look the same
           (0, 7)]                 # right
  pred = np.array([g * 10 + m for g, m in guess])
  m = metrics.evaluate(task, _onehot(pred, 8), labels, elements)
  assert m["joint_accuracy"] == pytest.approx(0.2)
  assert m["joint_accuracy_up_to_symmetry"] == pytest.approx(0.6)
  assert m["class_accuracy"] == pytest.approx(0.8)
