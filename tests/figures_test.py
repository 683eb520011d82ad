"""The confusion matrix counts what the run was trained to predict."""

import numpy as np

from experiments import figures, tasks
from experiments.configs import rotated_mnist


def _task(labels):
  c = rotated_mnist.get_config("smoke")
  c.group, c.labels = "C4", labels
  return tasks.build_task(c)


def test_class_confusion_for_a_class_label_run_and_joint_otherwise(tmp_path):
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(50, 4, 10)).astype(np.float32)
  labels, elements = rng.integers(0, 10, 50), rng.integers(0, 4, 50)
  classes = figures.confusion_matrix(_task("class"), logits, labels, elements)
  pred = np.log(np.exp(logits).sum(1)).argmax(-1)          # the invariant readout
  assert classes.shape == (10, 10) and classes.sum() == 50
  assert np.trace(classes) == np.sum(pred == labels)
  joint = figures.confusion_matrix(_task("joint"), logits, labels, elements)
  assert joint.shape == (40, 40) and joint.sum() == 50
  assert np.trace(joint) == np.sum(logits.reshape(50, 40).argmax(-1) == elements * 10 + labels)
  figures.confusion(str(tmp_path / "c.png"), _task("class"), logits, labels, elements)
  assert (tmp_path / "c.png").stat().st_size > 1000
