r"""Export a trained run for serving: ``model.jax`` (serialized StableHLO, symbolic batch).

    python -m experiments.export --workdir=runs/default [--out=runs/default/model.jax]

Reads the run's config.json and latest checkpoint.
"""

import os

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A finished (or checkpointed) run of experiments.mnist_rotated.")
flags.DEFINE_string("out", "", "Output file (default: WORKDIR/model.jax).")
flags.mark_flags_as_required(["workdir"])


def export_run(workdir: str, out: str = "") -> str:
  from eqnn import export
  from experiments import checkpoints
  _, task, _, params = checkpoints.load_checkpoint(workdir)
  blob = export.export_model(task.model.apply, params, task.input_shape)
  out = out or os.path.join(workdir, "model.jax")
  with open(out, "wb") as f:
    f.write(blob)
  return out


def main(argv):
  del argv
  path = export_run(FLAGS.workdir, FLAGS.out)
  print(f"wrote {path} ({os.path.getsize(path):,} bytes)")


if __name__ == "__main__":
  app.run(main)
