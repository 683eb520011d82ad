r"""Export a trained run for serving: ``model.jax`` (serialized StableHLO, symbolic batch).

    python -m experiments.export --workdir=runs/default [--out=runs/default/model.jax]

Reads the run's config.json and latest checkpoint.
"""

import json
import os

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A finished (or checkpointed) run of experiments.mnist_rotated.")
flags.DEFINE_string("out", "", "Output file (default: WORKDIR/model.jax).")
flags.mark_flags_as_required(["workdir"])


def export_run(workdir: str, out: str = "") -> str:
  import jax
  import ml_collections
  import orbax.checkpoint as ocp
  from eqnn import export
  from experiments import train
  with open(os.path.join(workdir, "config.json")) as f:
    config = ml_collections.ConfigDict(json.load(f))
  problem = train.build_problem(config, 10)
  mngr = ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")))
  if mngr.latest_step() is None:
    raise FileNotFoundError(f"no checkpoint in {workdir}/checkpoints: train first")
  restored = mngr.restore(mngr.latest_step(), args=ocp.args.StandardRestore())
  params = jax.tree.map(jax.numpy.asarray, restored["params"])
  blob = export.export_model(problem.model.apply, params, (28, 28, 1))
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
