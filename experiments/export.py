r"""Export a trained run for serving: ``model.jax`` (StableHLO) or ``model.onnx`` (ONNX).

    python -m experiments.export --workdir=runs/default [--format=stablehlo|onnx] [--out=...]

Both have the weights inside and a dynamic batch axis; the logits are ``[B, |G|, K]``.

Reads the run's config.json and its newest good checkpoint (a damaged one is reported and
set aside, as in training). Refuses a checkpoint whose model gives NaN or infinite logits.
"""

import os
import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A finished (or checkpointed) run of experiments.mnist_rotated.")
flags.DEFINE_enum("format", "stablehlo", ["stablehlo", "onnx"],
                  "stablehlo: serialized StableHLO for jax.export (no eqnn needed); onnx: an "
                  "ONNX model for onnxruntime (needs the onnx extra).")
flags.DEFINE_string("out", "", "Output file (default: WORKDIR/model.jax or WORKDIR/model.onnx).")
flags.mark_flags_as_required(["workdir"])


class ExportError(Exception):
  """A run that cannot be exported; the message says why."""


def export_run(workdir: str, out: str = "", log=lambda msg: None, fmt: str = "stablehlo") -> str:
  import jax.numpy as jnp
  import numpy as np
  from eqnn import export
  from experiments import checkpoints
  if not os.path.isdir(workdir):
    raise ExportError(f"--workdir={workdir} is not a folder")
  _, task, step, params = checkpoints.load_checkpoint(workdir, log=log)
  probe = task.model.apply(params, jnp.zeros((2,) + task.input_shape))
  if not np.all(np.isfinite(np.asarray(probe))):
    raise ExportError(f"the checkpoint at step {step} in {workdir} gives NaN or infinite "
                      f"logits; it is not worth serving")
  if fmt == "onnx":
    try:
      blob = export.export_onnx(task.model.apply, params, task.input_shape)
    except ImportError as e:
      raise ExportError(str(e)) from None
  else:
    blob = export.export_model(task.model.apply, params, task.input_shape)
  out = out or os.path.join(workdir, "model.onnx" if fmt == "onnx" else "model.jax")
  try:
    with open(out, "wb") as f:
      f.write(blob)
  except OSError as e:
    raise ExportError(f"cannot write {out} ({e.strerror})") from None
  return out


def main(argv):
  del argv
  from experiments import checkpoints, logs, workdir
  logs.quiet()
  try:
    path = export_run(FLAGS.workdir, FLAGS.out, log=logs.say, fmt=FLAGS.format)
  except (ExportError, checkpoints.CheckpointError, workdir.WorkdirError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(f"wrote {path} ({os.path.getsize(path):,} bytes)")


if __name__ == "__main__":
  app.run(main)
