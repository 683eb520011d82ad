"""When a run first reached an accuracy: the first evaluation in ``WORKDIR/metrics.jsonl`` at
or above a target, with its wall time from the run's start (evaluation included).

    python -m experiments.time_to runs/default                     # 99.0% joint accuracy
    python -m experiments.time_to runs/rotmnist --metric=test_class_accuracy --target=0.99

Evaluations happen at epoch ends (``eval_every_epochs``), so this is an upper bound at that
granularity. A resumed run's time is summed over the processes that trained it (``run_s``,
:func:`experiments.logs.run_seconds`); the line says how many there were.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

from experiments import logs

FLAGS = flags.FLAGS
flags.DEFINE_string("metric", "test_joint_accuracy", "an evaluation record's key")
flags.DEFINE_float("target", 0.99, "the accuracy to reach, as a fraction")


def first_reaching(workdir: str, metric: str, target: float) -> dict | None:
  """The first evaluation record with ``record[metric] >= target`` (with ``run_s``, its wall
  time since the run's start, and ``segment``, the process that wrote it), or None."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist: is {workdir} a run's workdir?")
  evals = [r for r in logs.read_records(path) if r.get("kind") == "eval"]
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
  resumed = (f" (summed over {r['segment']} processes: the run was resumed)"
             if r["segment"] > 1 else "")
  print(f"{workdir}: {FLAGS.metric} {r[FLAGS.metric]:.4f} >= {FLAGS.target:g} at epoch "
        f"{r['epoch']} (step {r['step']}), {r['run_s']:.0f} s from the run's start{resumed}")


if __name__ == "__main__":
  app.run(main)
