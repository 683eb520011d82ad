"""Checkpoints (orbax) and preemption: what a run needs to stop and resume without loss.

Checkpoints are written by orbax, atomically, keeping the newest ``keep`` steps. SIGTERM
(what schedulers send before preemption) sets a flag that the train loop checks every
step; the loop then saves the current step and exits cleanly.
"""

from __future__ import annotations

import json
import os
import signal
import threading

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from experiments import steps, tasks


class Checkpoints:
  """The orbax checkpoints of one workdir."""

  def __init__(self, workdir: str, keep: int):
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    self.manager = ocp.CheckpointManager(self.directory, options=ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=False))

  def restore_latest(self, state, log=print):
    """``(state, step)`` from the newest readable checkpoint, or ``(state, None)`` if none.

    An unreadable one is reported and skipped.
    """
    self.manager.reload()
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        restored = self.manager.restore(step, args=ocp.args.StandardRestore(state))
      except Exception as e:  # orbax raises many types for a damaged checkpoint
        log(f"checkpoint at step {step} is unreadable ({type(e).__name__}: {str(e)[:200]}); "
            f"trying the one before it")
        continue
      log(f"resumed from checkpoint at step {step} in {self.directory}")
      return restored, step
    return state, None

  def save(self, step: int, state) -> None:
    if step not in self.manager.all_steps():
      self.manager.save(step, args=ocp.args.StandardSave(state))

  def wait(self) -> None:
    self.manager.wait_until_finished()


def load_config(workdir: str) -> ml_collections.ConfigDict:
  with open(os.path.join(workdir, "config.json")) as f:
    return ml_collections.ConfigDict(json.load(f))


def load_checkpoint(workdir: str, step: int | None = None):
  """``(config, task, step, params)`` of a run's checkpoint, on this process's devices.

  Works whatever device topology the run was saved from (the target is built here).
  """
  config = load_config(workdir)
  task = tasks.build_task(config)
  state = steps.create_train_state(task, config, jax.random.key(0), 1)
  manager = Checkpoints(workdir, keep=1).manager
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {workdir}/checkpoints: train first")
  state = manager.restore(step, args=ocp.args.StandardRestore(state))
  return config, task, step, state.params


class Preemption:
  """SIGTERM sets a flag; :meth:`requested` says when the loop should stop (a context manager
  that restores the previous handler on exit)."""

  def __init__(self):
    self.flag = False
    self.previous = None

  def __enter__(self):
    # Signal handlers can only be installed from the main thread.
    if threading.current_thread() is threading.main_thread():
      self.previous = signal.getsignal(signal.SIGTERM)
      signal.signal(signal.SIGTERM, self._handler)
    return self

  def __exit__(self, *exc):
    if self.previous is not None:
      signal.signal(signal.SIGTERM, self.previous)

  def _handler(self, signum, frame):
    del signum, frame
    self.flag = True

  def requested(self, step: int, every: int) -> bool:
    """Whether to stop now. With several processes all must stop at the same step (each
    saves its part of the checkpoint), so the flags are combined every ``every`` steps."""
    if jax.process_count() == 1:
      return self.flag
    if step % every:
      return False
    from jax.experimental import multihost_utils
    return bool(np.any(multihost_utils.process_allgather(np.array(self.flag))))

