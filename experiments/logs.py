"""What a run tells its user as it goes: a progress line on stderr and ``metrics.jsonl``."""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np


_open_line = [False]    # a progress line is on screen without its newline


def say(msg: str) -> None:
  """One message on stderr, on a line of its own."""
  if _open_line[0]:
    sys.stderr.write("\n")
    _open_line[0] = False
  print(msg, file=sys.stderr, flush=True)


class Progress:
  """A one-line progress bar on stderr with images/s and ETA."""

  def __init__(self, total_steps: int, batch_size: int, start_step: int):
    self.total, self.bs = total_steps, batch_size
    self.t0, self.s0 = time.time(), start_step
    self.excluded = 0.0      # seconds spent on evaluation, not training

  def exclude(self, seconds: float):
    self.excluded += seconds

  def _elapsed(self):
    return max(time.time() - self.t0 - self.excluded, 1e-9)

  def update(self, step: int, epoch: int, loss: float):
    rate = (step - self.s0) / self._elapsed()
    eta = (self.total - step) / rate if rate > 0 else float("nan")
    sys.stderr.write(f"\repoch {epoch} step {step}/{self.total} loss {loss:.4f} | "
                     f"{rate * self.bs:,.0f} img/s | ETA {_fmt(eta)}   ")
    sys.stderr.flush()
    _open_line[0] = True

  def end_line(self):
    if _open_line[0]:
      sys.stderr.write("\n")
      _open_line[0] = False

  def images_per_s(self, step: int) -> float:
    """Training throughput, compilation included, evaluation excluded."""
    return (step - self.s0) * self.bs / self._elapsed()


def _fmt(seconds: float) -> str:
  if not np.isfinite(seconds):
    return "?"
  m, s = divmod(int(seconds), 60)
  return f"{m}m{s:02d}s"


class RunLog:
  """What the first process reports as a run goes (a no-op on the others): the progress line,
  and one JSON record per line in ``workdir/metrics.jsonl`` (appended: a resumed run goes on
  where it stopped)."""

  def __init__(self, workdir: str, enabled: bool, total_steps: int, batch_size: int,
               start_step: int, start_time: float):
    self.enabled, self.start_time = enabled, start_time
    self.progress = Progress(total_steps, batch_size, start_step)
    self.file = open(os.path.join(workdir, "metrics.jsonl"), "a") if enabled else None

  def _write(self, record: dict) -> None:
    if self.file:
      self.file.write(json.dumps(record) + "\n")
      self.file.flush()

  def train(self, step: int, epoch: int, loss: float) -> None:
    if self.enabled:
      self.progress.update(step, epoch, loss)
      self._write({"kind": "train", "step": step, "epoch": epoch, "loss": loss,
                   "elapsed_s": time.time() - self.start_time})

  def end_epoch(self) -> None:
    if self.enabled:
      self.progress.end_line()

  def eval(self, step: int, epoch: int, train_loss: float, metrics: dict,
           seconds: float) -> None:
    """An evaluation's record (``metrics`` already prefixed ``test_``); its ``seconds`` do
    not count as training time."""
    rec = {"kind": "eval", "step": step, "epoch": epoch, "train_loss": train_loss,
           "elapsed_s": time.time() - self.start_time, **metrics}
    self._write(rec)
    if self.enabled:
      self.progress.exclude(seconds)
      say(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in rec.items()}))

  def images_per_s(self, step: int) -> float | None:
    return self.progress.images_per_s(step) if self.enabled else None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    if self.file:
      self.file.close()
