"""Pictures of a finished run: the paper's Figure 4, training curves, a confusion matrix."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from eqnn import data, readouts  # noqa: E402
from experiments import logs  # noqa: E402


def figure4(path, task, state, test_split, digit: int = 7):
  """One upright test digit and its orbit, each with its |G| x K probability vector.

  For the lifted model the vectors are the same up to a shift by K slots per group step.
  """
  idx = int(np.nonzero(test_split.labels == digit)[0][0])
  x = jnp.asarray(data.to_float(test_split.inputs[idx:idx + 1]))
  orbit = task.action.orbit(x)[:, 0]                            # [|G|, H, W, C]
  logits = task.flat_logits(state.apply_fn(state.params, orbit))
  probs = np.asarray(jax.nn.softmax(logits, axis=-1))
  n, k = len(orbit), probs.shape[-1]
  num_classes = task.num_classes
  fig, axes = plt.subplots(n, 2, figsize=(11, 1.6 * n),
                           gridspec_kw={"width_ratios": [1, 7]}, squeeze=False)
  names = task.action.group.element_names
  for g in range(n):
    axes[g, 0].imshow(np.asarray(orbit[g, ..., 0]), cmap="gray_r")
    axes[g, 0].set_axis_off()
    axes[g, 0].set_title(f"{names[g]} . x", fontsize=9)
    axes[g, 1].bar(np.arange(k), probs[g], color="tab:blue")
    axes[g, 1].set_ylim(0, 1)
    axes[g, 1].set_xlim(-0.5, k - 0.5)
    for b in range(1, k // num_classes):
      axes[g, 1].axvline(b * num_classes - 0.5, color="gray", lw=0.5)
    top = int(probs[g].argmax())
    top_g, top_m = readouts.decode_joint(top, num_classes)
    axes[g, 1].set_title(f"argmax slot {top} = (g={names[top_g]}, digit {top_m}), "
                         f"p={probs[g, top]:.3f}", fontsize=9)
  axes[-1, 1].set_xlabel("slot g * 10 + m")
  fig.suptitle(f"Figure 4: a test {digit} and its orbit under {task.action.group.name}")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def training_curves(path, metrics_path):
  train, evals = [], []
  for r in logs.read_records(metrics_path):
    (train if r["kind"] == "train" else evals).append(r)
  fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
  a.plot([r["step"] for r in train], [r["loss"] for r in train], lw=0.8)
  a.set_yscale("log")
  a.set_xlabel("step")
  a.set_ylabel("training loss")
  for key, label in (("test_joint_accuracy", "joint"), ("test_class_accuracy", "digit"),
                     ("test_element_accuracy", "angle")):
    pts = [(r["run_s"], r[key]) for r in evals if key in r]
    if pts:
      b.plot(*zip(*pts), marker="o", label=label)
  b.axhline(0.968, color="gray", ls="--", lw=0.8, label="paper 96.8%")
  b.set_xlabel("wall time from the run's start (s)")
  b.set_ylabel("test accuracy")
  b.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def confusion_matrix(task, logits, labels, elements) -> np.ndarray:
  """Counts, rows true and columns predicted: over joint (g, class) labels (``|G| K`` square)
  for a task trained on them, else over classes alone (``K`` square: the invariant readout
  of an equivariant model trained on class labels, or a plain model's)."""
  truth = np.asarray(task.targets(labels, elements))
  pred = np.asarray(task.flat_logits(logits)).argmax(-1)
  size = task.group_order * task.num_classes if task.joint else task.num_classes
  mat = np.zeros((size, size), np.int64)
  np.add.at(mat, (truth, pred), 1)
  return mat


def confusion(path, task, logits, labels, elements):
  """:func:`confusion_matrix` drawn in log counts (class confusions also written as numbers)."""
  k = task.num_classes
  mat = confusion_matrix(task, logits, labels, elements)
  size = mat.shape[0]
  fig, ax = plt.subplots(figsize=(7, 6))
  im = ax.imshow(np.log10(mat + 1), cmap="viridis")
  if task.joint:
    ticks = np.arange(0, size, k)
    names = task.action.group.element_names
    ax.set_xticks(ticks, [f"{names[i // k]}" for i in ticks])
    ax.set_yticks(ticks, [f"{names[i // k]}" for i in ticks])
    ax.set_xlabel("predicted (group element block, digits 0-9 within)")
    ax.set_ylabel("true (group element block, digits 0-9 within)")
    ax.set_title("digit x angle confusion")
  else:
    ax.set_xticks(np.arange(k))
    ax.set_yticks(np.arange(k))
    for (i, j), count in np.ndenumerate(mat):
      if count and i != j:
        ax.text(j, i, str(count), ha="center", va="center", color="w", fontsize=7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"class confusion ({int(mat.sum() - np.trace(mat))} errors of {mat.sum()})")
  fig.colorbar(im, label="log10(count + 1)")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def make_all(workdir, task, state, test_split, logits, labels, elements):
  figure4(os.path.join(workdir, "figure4.png"), task, state, test_split)
  training_curves(os.path.join(workdir, "training_curves.png"),
                  os.path.join(workdir, "metrics.jsonl"))
  confusion(os.path.join(workdir, "confusion.png"), task, logits, labels, elements)
