r"""Equivarified CNN on rotated MNIST: reads digit and angle, trained on upright digits.

    python -m experiments.mnist_rotated --config=experiments/configs/default.py \
        --workdir=runs/default [--config.num_epochs=2 ...]

Flags only: everything else, the seed included, is in the config. On a cluster, run the same
command in every process; jax.distributed is initialised from the environment (Slurm, Open
MPI, Cloud TPU) or from --coordinator_address/--num_processes/--process_id.
"""

import sys
import time

_START = time.time()   # wall time counts from process start: data, compilation and all

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to an ml_collections config file "
                                "(optionally 'file.py:variant').", lock_config=True)
flags.DEFINE_string("workdir", None, "Where metrics, checkpoints, results and figures go.")
flags.DEFINE_enum("distributed", "auto", ["auto", "on", "off"],
                  "Initialise jax.distributed: auto = when the flags below or a cluster "
                  "environment ask for it.")
flags.DEFINE_string("coordinator_address", "", "host:port of process 0 (multi-process runs).")
flags.DEFINE_integer("num_processes", 0, "Number of processes (with --coordinator_address).")
flags.DEFINE_integer("process_id", -1, "This process's index (with --coordinator_address).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)   # orbax logs every file it writes at INFO
  from experiments import parallel  # after flag parsing: jax initialises once
  try:
    parallel.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                        FLAGS.distributed)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  from eqnn import data
  from experiments import train
  try:
    results = train.train_and_evaluate(FLAGS.config, FLAGS.workdir, start_time=_START)
  except (train.ConfigError, data.DataError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  if results.get("preempted"):
    sys.exit(0)   # a clean exit: the checkpoint is saved, the same command resumes


if __name__ == "__main__":
  app.run(main)
