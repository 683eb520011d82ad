r"""Equivarified CNN on rotated MNIST: reads digit and angle, trained on upright digits.

    python -m experiments.mnist_rotated --config=experiments/configs/default.py \
        --workdir=runs/default [--config.num_epochs=2 ...]

Flags only: everything else, the seed included, is in the config.
"""

import time

_START = time.time()   # wall time counts from process start: data, compilation and all

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to an ml_collections config file "
                                "(optionally 'file.py:variant').", lock_config=True)
flags.DEFINE_string("workdir", None, "Where metrics, checkpoints, results and figures go.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)   # orbax logs every file it writes at INFO
  from experiments import train  # after flag parsing: jax initialises once
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir, start_time=_START)


if __name__ == "__main__":
  app.run(main)
