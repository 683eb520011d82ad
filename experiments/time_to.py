"""When a run first reached an accuracy: the first evaluation in ``WORKDIR/metrics.jsonl`` at
or above a target, with its wall time from the process's start (evaluation included).

    python -m experiments.time_to runs/default                     # 99.0% joint accuracy
    python -m experiments.time_to runs/rotmnist --metric=test_class_accuracy --target=0.99

Evaluations happen at epoch ends (``eval_every_epochs``), so this is an upper bound at that
granularity. A resumed run's records count from the resumed process's start, so the figure
is a time from the start only for a run that was not interrupted.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("metric", "test_joint_accuracy", "an evaluation record's key")
flags.DEFINE_float("target", 0.99, "the accuracy to reach, as a fraction")


def first_reaching(workdir: str, metric: str, target: float) -> dict | None:
  """The first evaluation record with ``record[metric] >= target``, or None."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist: is {workdir} a run's workdir?")
  with open(path) as f:
    evals = [r for r in map(json.loads, f) if r.get("kind") == "eval"]
  if evals and metric not in evals[0]:
    keys = sorted(k for k in evals[0] if k.startswith("test_"))
    raise KeyError(f"the evaluations in {path} have no {metric!r}; they have {keys}")
  return next((r for r in evals if r[metric] >= target), None)


def main(argv):
  if len(argv) != 2:
    raise app.UsageError("give one workdir: python -m experiments.time_to WORKDIR")
  workdir = argv[1]
  try:
    r = first_reaching(workdir, FLAGS.metric, FLAGS.target)
  except (FileNotFoundError, KeyError) as e:
    sys.exit(f"error: {e.args[0]}")
  if r is None:
    print(f"{workdir}: {FLAGS.metric} never reached {FLAGS.target:g}")
    sys.exit(1)
  print(f"{workdir}: {FLAGS.metric} {r[FLAGS.metric]:.4f} >= {FLAGS.target:g} at epoch "
        f"{r['epoch']} (step {r['step']}), {r['elapsed_s']:.0f} s from the process's start")


if __name__ == "__main__":
  app.run(main)
