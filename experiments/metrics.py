"""Test metrics from a run's logits, through :mod:`eqnn.readouts`.

*class* accuracy reads the invariant readout (the digit, for MNIST), *element* accuracy the
group element alone (the angle, for rotations), *joint* both at once. For digits and groups
that contain a half turn, joint accuracy up to the digit's own symmetry and a breakdown of
the joint errors that a half turn explains are reported too.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from eqnn import readouts
from experiments import tasks

# Digits that look the same after some elements of D4 (f mirrors left-right, so f r^2
# mirrors top-bottom): a prediction off by such an element is right "up to the digit's
# own symmetry".
DIGIT_SYMMETRIES = {0: ("r^2", "f", "f r^2"), 1: ("r^2", "f", "f r^2"),
                    8: ("r^2", "f", "f r^2"), 3: ("f r^2",)}


def _digits_with_half_turn(task: tasks.Task) -> bool:
  return task.equivariant and task.num_classes == 10 and "r^2" in task.action.group.element_names


def evaluate(task: tasks.Task, logits, labels, elements) -> dict[str, Any]:
  """Accuracies of ``logits`` (the model's output) against class labels and group elements."""
  if not task.equivariant:
    return {"class_accuracy": float(np.mean(np.asarray(logits).argmax(-1) == labels))}
  pred = readouts.predictions(logits)
  out = {"class_accuracy": float(np.mean(pred["class"] == labels)),
         "joint_accuracy": float(np.mean(
             pred["joint"] == readouts.joint_labels(labels, elements, task.num_classes))),
         "element_accuracy": float(np.mean(pred["element"] == elements))}
  if _digits_with_half_turn(task):
    group = task.action.group
    pg, pm = readouts.decode_joint(pred["joint"], task.num_classes)
    ok = np.zeros((10, group.order), bool)           # ok[m, s]: digit m looks the same after s
    ok[:, 0] = True
    for m, names in DIGIT_SYMMETRIES.items():
      for name in names:
        if name in group.element_names:
          ok[m, group.index(name)] = True
    rel = group.table[group.inverse[elements], pg]     # g^-1 g': the element the guess is off by
    out["joint_accuracy_up_to_symmetry"] = float(np.mean((pm == labels) & ok[labels, rel]))
  return out


def ambiguity_breakdown(task: tasks.Task, logits, labels, elements) -> dict[str, int]:
  """Joint errors explained by a half turn: (m, g) -> (m, g r^2) for m in {0, 1, 8}, and
  (6, g) <-> (9, g r^2). Only for digits under groups that contain r^2 (C4, D4)."""
  if not _digits_with_half_turn(task):
    return {}
  group = task.action.group
  half = group.index("r^2")
  pg, pm = readouts.decode_joint(readouts.predictions(logits)["joint"], task.num_classes)
  wrong = (pg != elements) | (pm != labels)
  turned = pg == group.table[elements, half]
  out = {"errors": int(wrong.sum())}
  for m in (0, 1, 8):
    out[f"{m}_half_turn"] = int(np.sum(wrong & (labels == m) & (pm == m) & turned))
  out["6_as_9_half_turn"] = int(np.sum(wrong & (labels == 6) & (pm == 9) & turned))
  out["9_as_6_half_turn"] = int(np.sum(wrong & (labels == 9) & (pm == 6) & turned))
  return out
