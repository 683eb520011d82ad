r"""Equivarified CNN on rotated MNIST: reads digit and angle, trained on upright digits.

    python -m experiments.mnist_rotated --config=experiments/configs/default.py \
        --workdir=runs/default [--config.num_epochs=2 ...] [--fresh]

Flags only: everything else, the seed included, is in the config. On a cluster, run the same
command in every process; jax.distributed is initialised from the environment (Slurm, Open
MPI, Cloud TPU) or from --coordinator_address/--num_processes/--process_id.

Exit status: 0 done (or stopped by SIGTERM/SIGINT with a checkpoint saved), 2 bad input
(flags, config, data, workdir: one line on stderr), 3 training diverged (NaN or infinite
loss; the last good checkpoint is kept), 130 interrupted outside the training loop.
"""

import sys
import time

_START = time.time()   # wall time counts from process start: data, compilation and all

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to an ml_collections config file "
                                "(optionally 'file.py:variant').", lock_config=True)
flags.DEFINE_string("workdir", None, "Where metrics, checkpoints, results and figures go.")
flags.DEFINE_bool("fresh", False, "If the workdir holds another run, move it aside to "
                  "WORKDIR.previous-<time> (nothing is deleted) and start anew.")
flags.DEFINE_enum("distributed", "auto", ["auto", "on", "off"],
                  "Initialise jax.distributed: auto = when the flags below or a cluster "
                  "environment ask for it.")
flags.DEFINE_string("coordinator_address", "", "host:port of process 0 (multi-process runs).")
flags.DEFINE_integer("num_processes", 0, "Number of processes (with --coordinator_address).")
flags.DEFINE_integer("process_id", -1, "This process's index (with --coordinator_address).")
flags.mark_flags_as_required(["config", "workdir"])


def fail(msg: str, status: int = 2):
  from experiments import logs
  logs.say(f"error: {msg}")
  sys.exit(status)


def _last_line(text: str) -> str:
  """The line that names the problem (config loading wraps it in a traceback's text)."""
  lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
  return lines[-1] if lines else str(text)


def parse_flags(argv):
  """absl's parser, with a one-line error for a bad flag, config file or config field."""
  try:
    argv = FLAGS(argv)
    if FLAGS["config"].present:
      FLAGS.config.keys()        # ml_collections defers a config file's load error to here
    return argv
  except flags.Error as e:
    msg = str(e)
    where = msg.split(":", 1)[0] if msg.startswith("flag --") else "flags"
    fail(f"{where}: {_last_line(msg)}" if "Traceback" in msg else " ".join(msg.split()))
  except OSError as e:         # a config file that is missing
    fail(f"--config: {_last_line(e.__cause__ or e)}")
  except (AttributeError, KeyError, TypeError, ValueError) as e:  # raised by config overrides
    fail(f"bad --config override ({type(e).__name__}: {e}); `python -m experiments.mnist_rotated"
         f" --helpfull` lists the flags, the config file lists its fields")
  except Exception as e:  # the config file's own code failed (a SyntaxError, say): user input
    fail(f"--config: the config file does not load ({type(e).__name__}: {e})")


def main(argv):
  if len(argv) > 1:
    fail(f"unexpected arguments: {argv[1:]}")
  from experiments import logs, parallel  # after flag parsing: jax initialises once
  logs.quiet()
  try:
    parallel.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                        FLAGS.distributed)
  except ValueError as e:
    fail(str(e))
  from eqnn import data
  from experiments import checkpoints, train, workdir
  try:
    results = train.train_and_evaluate(FLAGS.config, FLAGS.workdir, start_time=_START,
                                       fresh=FLAGS.fresh)
  except train.Diverged as e:
    fail(str(e), status=3)
  except KeyboardInterrupt:
    fail("interrupted outside the training loop (loading, compiling or evaluating); nothing "
         "more was saved, and the same command resumes from the newest checkpoint", status=130)
  except (train.ConfigError, data.DataError, workdir.WorkdirError,
          checkpoints.CheckpointError, ValueError) as e:   # ValueError: shapes, devices
    fail(str(e))
  if results.get("preempted"):
    sys.exit(0)   # a clean exit: the checkpoint is saved, the same command resumes


if __name__ == "__main__":
  from experiments import host_memory
  host_memory.reexec_with_huge_pages(_START)   # once, before anything is allocated
  _START = host_memory.process_start(_START)
  app.run(main, flags_parser=parse_flags)
