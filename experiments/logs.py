"""What a run tells its user as it goes: a progress line on stderr and ``metrics.jsonl``."""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np


def say(msg: str) -> None:
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

  def end_line(self):
    sys.stderr.write("\n")

  def images_per_s(self, step: int) -> float:
    """Training throughput, compilation included, evaluation excluded."""
    return (step - self.s0) * self.bs / self._elapsed()


def _fmt(seconds: float) -> str:
  if not np.isfinite(seconds):
    return "?"
  m, s = divmod(int(seconds), 60)
  return f"{m}m{s:02d}s"


class MetricsLog:
  """Appends one JSON record per line to ``workdir/metrics.jsonl`` (a no-op when disabled,
  as on every process but the first)."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.file = open(os.path.join(workdir, "metrics.jsonl"), "a") if enabled else None

  def write(self, record: dict) -> None:
    if self.file:
      self.file.write(json.dumps(record) + "\n")
      self.file.flush()

  def close(self) -> None:
    if self.file:
      self.file.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
