"""Checkpoints (orbax) and preemption: what a run needs to stop and resume without loss.

Checkpoints are written by orbax, atomically, keeping the newest ``keep`` steps; after each
save the first process writes a manifest of the step's files with their sha256 sums. On
restore every step is verified against its manifest and its arrays must be finite; a step
that fails is reported in one line and moved aside to ``checkpoints.damaged/`` (so it never
blocks a later save of that step, nor export), and the newest good step is used.

SIGTERM (what schedulers send before preemption) and SIGINT (Ctrl-C) set a flag that the
train loop checks every step; the loop then saves the current step and exits cleanly.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import threading

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from experiments import steps, tasks, workdir as workdir_lib

MANIFEST = "eqnn_manifest.json"


class CheckpointError(Exception):
  """No usable checkpoint where one is needed; the message says where and why."""


def _files(step_dir: str) -> dict[str, str]:
  """``{relative path: sha256}`` of every file of a step but the manifest."""
  out = {}
  for root, _, names in os.walk(step_dir):
    for name in names:
      path = os.path.join(root, name)
      rel = os.path.relpath(path, step_dir)
      if rel not in (MANIFEST, MANIFEST + ".tmp"):
        h = hashlib.sha256()
        with open(path, "rb") as f:
          for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
        out[rel] = h.hexdigest()
  return out


def _verify(step_dir: str) -> str | None:
  """Why the step's files do not match its manifest (None if they do)."""
  try:
    with open(os.path.join(step_dir, MANIFEST)) as f:
      want = json.load(f)
  except FileNotFoundError:
    return "it has no manifest (the run stopped while saving it)"
  except (OSError, ValueError) as e:
    return f"its manifest is unreadable ({e})"
  got = _files(step_dir)
  bad = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
  return f"{len(bad)} file(s) differ from their sha256 sums, e.g. {bad[0]}" if bad else None


class _Quiet:
  """Silences orbax's own log lines (absl ERROR lines about files it cannot parse) while
  eqnn inspects a checkpoint: eqnn reports a damaged step itself, in one line."""

  def __enter__(self):
    from absl import logging
    self.level = logging.get_verbosity()
    logging.set_verbosity(logging.FATAL)

  def __exit__(self, *exc):
    from absl import logging
    logging.set_verbosity(self.level)


def _finite(tree) -> bool:
  return all(bool(np.all(np.isfinite(np.asarray(x)))) for x in jax.tree.leaves(tree)
             if np.issubdtype(np.asarray(x).dtype, np.inexact))


class Checkpoints:
  """The verified orbax checkpoints of one workdir."""

  def __init__(self, workdir: str, keep: int):
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    self.keep = keep
    with _Quiet():
      self.manager = self._manager()

  def _manager(self):
    return ocp.CheckpointManager(self.directory, options=ocp.CheckpointManagerOptions(
        max_to_keep=self.keep, create=True, enable_async_checkpointing=False))

  def _set_aside(self, step: int, why: str, log) -> None:
    if jax.process_index() == 0:
      dest = os.path.join(self.directory + ".damaged", f"{step}")
      os.makedirs(os.path.dirname(dest), exist_ok=True)
      if os.path.exists(dest):
        shutil.rmtree(dest)
      shutil.move(os.path.join(self.directory, str(step)), dest)
      log(f"checkpoint at step {step} is damaged ({why}); moved to {dest}, using the one before")

  def restore_latest(self, state, log=print, only: int | None = None):
    """``(state, step)`` from the newest good checkpoint (or step ``only``), or
    ``(state, None)`` if there is none."""
    with _Quiet():
      self.manager.reload()
      candidates = sorted(self.manager.all_steps(), reverse=True)
    for step in candidates if only is None else [s for s in candidates if s == only]:
      why = _verify(os.path.join(self.directory, str(step)))
      if why is None:
        try:   # a fresh manager per attempt: one that failed a restore fails every later one
          with _Quiet():
            restored = self._manager().restore(step, args=ocp.args.StandardRestore(state))
          if not _finite(restored):
            why = "it holds NaN or infinite values"
        except Exception as e:  # orbax raises many types for a damaged checkpoint
          why = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
      if why is not None:
        self._set_aside(step, why, log)
        continue
      with _Quiet():
        self.manager = self._manager()
      log(f"resumed from checkpoint at step {step} in {self.directory}")
      return restored, step
    with _Quiet():
      self.manager = self._manager()
    return state, None

  def save(self, step: int, state) -> None:
    """Saves ``state`` at ``step`` (once) and its manifest."""
    if step in self.manager.all_steps():
      return
    self.manager.save(step, args=ocp.args.StandardSave(state))
    self.manager.wait_until_finished()
    if jax.process_index() == 0:
      step_dir = os.path.join(self.directory, str(step))
      workdir_lib.write_atomic(os.path.join(step_dir, MANIFEST), json.dumps(_files(step_dir)))

  def latest_step(self) -> int | None:
    self.manager.reload()
    return self.manager.latest_step()

  def wait(self) -> None:
    self.manager.wait_until_finished()


def load_checkpoint(workdir: str, step: int | None = None, log=lambda msg: None):
  """``(config, task, step, params)`` of a run's newest good checkpoint (or of ``step``), on
  this process's devices, whatever device topology it was saved from."""
  saved = workdir_lib.read_config(workdir)
  if saved is None:
    raise CheckpointError(f"{workdir} has no config.json: it is not a run's workdir")
  config = ml_collections.ConfigDict(saved)
  task = tasks.build_task(config)
  state = steps.create_train_state(task, config, jax.random.key(0), 1)
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    raise CheckpointError(f"no checkpoint in {workdir}/checkpoints: train first")
  ckpts = Checkpoints(workdir, keep=max(int(config.keep_checkpoints), 1))
  state, found = ckpts.restore_latest(state, log, only=step)
  if found is None:
    which = f"checkpoint at step {step}" if step is not None else "readable checkpoint"
    raise CheckpointError(f"no {which} in {workdir}/checkpoints: train first")
  step = found
  return config, task, step, state.params


class Preemption:
  """SIGTERM and SIGINT set a flag; :meth:`requested` says when the loop should stop (a
  context manager that restores the previous handlers on exit)."""

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.signal_name = None
    self.previous = {}

  def __enter__(self):
    # Signal handlers can only be installed from the main thread.
    if threading.current_thread() is threading.main_thread():
      for s in self.SIGNALS:
        self.previous[s] = signal.getsignal(s)
        signal.signal(s, self._handler)
    return self

  def __exit__(self, *exc):
    for s, h in self.previous.items():
      signal.signal(s, h)

  def _handler(self, signum, frame):
    del frame
    self.signal_name = signal.Signals(signum).name

  def requested(self, step: int, every: int) -> bool:
    """Whether to stop now. With several processes all must stop at the same step (each
    saves its part of the checkpoint), so the flags are combined every ``every`` steps."""
    if jax.process_count() == 1:
      return self.signal_name is not None
    if step % every:
      return False
    from jax.experimental import multihost_utils
    flag = np.array(self.signal_name is not None)
    return bool(np.any(multihost_utils.process_allgather(flag)))
