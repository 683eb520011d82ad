"""A workdir belongs to one run: one configuration, and one process using it at a time.

:func:`claim` runs before any data is loaded or anything written: it refuses a workdir that
is a file or cannot be made, one that another live run holds (an ``flock`` on
``WORKDIR/.lock``, released by the kernel when its process dies, so a crash leaves no stale
lock), and one whose ``config.json`` differs from the new configuration in a field that
shapes the run. With ``fresh=True`` that earlier run is moved aside to
``WORKDIR.previous-<time>`` (never deleted) and a new one starts.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time

import ml_collections

# Fields a rerun may change and still continue the same run: how long it trains, how it
# logs and keeps checkpoints, where it reads data from, how it batches evaluation and
# micro-batches and whether the head runs apart from them (the same gradient), how XLA's
# CPU backend fuses the update and the convs' forms (the same step to float rounding), and
# the learning rate (to continue a diverged run from its last good step with a lower one).
# Every other field shapes the model, the data or the trajectory.
FREE_FIELDS = frozenset({
    "num_epochs", "learning_rate", "log_every_steps", "eval_every_epochs",
    "checkpoint_every_steps", "keep_checkpoints", "make_figures", "eval_batch_size",
    "microbatches", "head_apart", "data_dir", "tfds_data_dir", "tfds_download", "eval_turns",
    "train_budget_s",    # a run keeps the epochs it planned (plan.json)
    "cpu_fusions",       # how XLA compiles the update: the same step to float rounding
    "conv_form", "kernel_gradient",     # how the convs compute: the same function likewise
})
CONFIG = "config.json"
# Fields added after runs were saved without them: absent in a saved config means this value,
# so such a run resumes under the newer code.
ADDED_FIELDS = {"data_seed": 0, "holdout": "test", "interpolation": "bilinear", "norm": False,
                "dropout": 0.0, "head_pool": "none", "train_scale": 0.0, "train_shift": 0.0,
                "train_budget_s": 0.0, "label_smoothing": 0.0,
                "kernel_sizes": (), "conv_form": "auto", "kernel_gradient": "auto",
                "head_apart": False}


class WorkdirError(Exception):
  """A workdir that cannot be used as asked; the message says why and what to do."""


def _plain(value):
  """JSON's view of a config value (tuples become lists), for comparisons."""
  return json.loads(json.dumps(value))


def differences(saved: dict, config: ml_collections.ConfigDict) -> list[str]:
  """``"field: saved -> new"`` for every run-shaping field that differs."""
  new = _plain(config.to_dict())
  saved = {**_plain(ADDED_FIELDS), **saved}
  fields = sorted((set(saved) | set(new)) - FREE_FIELDS)
  return [f"{f}: {saved.get(f, '(absent)')!r} -> {new.get(f, '(absent)')!r}"
          for f in fields if saved.get(f, "(absent)") != new.get(f, "(absent)")]


def read_config(path: str) -> dict | None:
  """The saved ``config.json`` of a workdir (None if there is none)."""
  file = os.path.join(path, CONFIG)
  if not os.path.exists(file):
    return None
  try:
    with open(file) as f:
      saved = json.load(f)
    if not isinstance(saved, dict):
      raise ValueError("not a JSON object")
    return saved
  except (OSError, ValueError) as e:
    raise WorkdirError(f"{file} is damaged ({type(e).__name__}: {e}); move it away, or pass "
                       f"--fresh to keep this workdir's run aside and start anew") from None


def _make(path: str) -> None:
  if os.path.exists(path) and not os.path.isdir(path):
    raise WorkdirError(f"--workdir={path} is a file, not a folder; choose another --workdir")
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise WorkdirError(f"--workdir={path} cannot be created ({e.strerror})") from None
  if not os.access(path, os.W_OK):
    raise WorkdirError(f"--workdir={path} is not writable")


def _lock(path: str):
  f = open(os.path.join(path, ".lock"), "a+")
  try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    f.seek(0)
    holder = f.read().strip() or "another process"
    f.close()
    raise WorkdirError(f"{path} is in use by a run that is still going ({holder}); wait for "
                       f"it to finish or choose another --workdir") from None
  f.seek(0)
  f.truncate()
  f.write(f"pid {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}")
  f.flush()
  return f


def _move_aside(path: str) -> str:
  """Moves every entry of ``path`` but its lock to a new sibling folder; returns its name."""
  aside = f"{os.path.abspath(path)}.previous-{time.strftime('%Y%m%d-%H%M%S')}"
  os.makedirs(aside)
  for name in os.listdir(path):
    if name != ".lock":
      shutil.move(os.path.join(path, name), os.path.join(aside, name))
  return aside


@contextlib.contextmanager
def claim(path: str, config: ml_collections.ConfigDict, main: bool = True,
          fresh: bool = False, log=print):
  """Holds ``path`` for one run of ``config`` (see the module docstring); yields nothing.

  Only the first process (``main``) makes, locks and moves; every process compares the
  configuration, so that all of them refuse the same workdir.
  """
  if main:
    _make(path)
  lock = _lock(path) if main else None
  try:
    saved = read_config(path) if not (fresh and main) else None
    if saved is not None:
      diff = differences(saved, config)
      if diff:
        raise WorkdirError(
            f"{path} holds a run with another configuration ({'; '.join(diff)}). Rerun with "
            f"its configuration to continue it, choose another --workdir, or pass --fresh to "
            f"keep that run aside and start anew")
    if fresh and main and any(n != ".lock" for n in os.listdir(path)):
      log(f"--fresh: the earlier run in {path} was moved to {_move_aside(path)}")
    yield
  finally:
    if lock is not None:
      lock.close()


def write_atomic(path: str, text: str) -> None:
  """Writes ``text`` to ``path`` atomically: a crash leaves the old file or the new."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def write_config(path: str, config: ml_collections.ConfigDict) -> None:
  """Saves the run's configuration (atomically)."""
  write_atomic(os.path.join(path, CONFIG), config.to_json(indent=2))
