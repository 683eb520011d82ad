"""What a run tells its user as it goes: a progress bar, ``metrics.jsonl`` and TensorBoard.

Everything is written by the first process only. ``metrics.jsonl`` gets one JSON record per
line; ``WORKDIR/tensorboard/`` gets the same scalars as TensorBoard event files (through
tensorboardX, no TensorFlow), at the run's global step, so a resumed run continues its
curves instead of starting a second one at step 0.

A run that was stopped and resumed is trained by several processes (segments). Each record's
``elapsed_s`` counts from its own process's start; ``run_s`` (and :func:`run_seconds` for
files written before it existed) counts from the first process's start, summed over the
segments: the wall time a run cost, not the calendar time between its first and last lines.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import sys
import time

def quiet() -> None:
  """Silences what is noise to a user (JAX's probe for a TPU library, optax's and orbax's
  INFO lines, onnx_ir's serialisation notes); warnings and errors still show."""
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.WARNING)
  for name in ("jax._src.xla_bridge", "orbax", "onnx_ir", "jax2onnx", "absl"):
    logging.getLogger(name).setLevel(logging.ERROR)


def run_seconds(records) -> list[float]:
  """Each record's seconds of the run's wall time, summed over the processes that trained it.

  A new process (a resumed run) shows as ``elapsed_s`` going down; the processes before it
  count to their last record (the seconds between a killed process's last record and its
  end were not written anywhere, so the sum is a lower bound by at most that much).

  >>> run_seconds([{"elapsed_s": 5.0}, {"elapsed_s": 9.0}, {"elapsed_s": 2.0}, {"elapsed_s": 4.0}])
  [5.0, 9.0, 11.0, 13.0]
  """
  return [t for t, _ in _times_and_segments(records)]


def _times_and_segments(records) -> list[tuple[float, int]]:
  out, offset, last, segment = [], 0.0, 0.0, 1
  for r in records:
    e = float(r["elapsed_s"])
    if e < last:
      offset, segment = offset + last, segment + 1
    last = e
    out.append((offset + e, segment))
  return out


def read_records(path: str) -> list[dict]:
  """The records of a ``metrics.jsonl``, each with ``run_s`` (:func:`run_seconds`) and
  ``segment`` (1 for the run's first process, 2 for the one that resumed it, ...)."""
  with open(path) as f:
    records = [json.loads(line) for line in f if line.strip()]
  for r, (t, segment) in zip(records, _times_and_segments(records)):
    r.setdefault("run_s", t)
    r["segment"] = segment
  return records


def say(msg: str) -> None:
  """One message on stderr, on a line of its own (above a progress bar, if one is shown)."""
  from tqdm import tqdm
  tqdm.write(msg, file=sys.stderr)
  sys.stderr.flush()


class RunLog:
  """The run's progress bar (tqdm), ``metrics.jsonl`` and TensorBoard scalars; a no-op on
  every process but the first (``enabled=False``)."""

  def __init__(self, workdir: str, enabled: bool, total_steps: int, batch_size: int,
               start_step: int, start_time: float, learning_rate=None):
    self.enabled, self.start_time, self.bs, self.s0 = enabled, start_time, batch_size, start_step
    # A resumed run: the seconds its earlier processes trained for, and how many there were.
    self.before_s, self.segments = 0.0, 1
    path = os.path.join(workdir, "metrics.jsonl")
    if enabled and start_step and os.path.exists(path):
      records = read_records(path)
      if records:
        self.before_s, self.segments = records[-1]["run_s"], records[-1]["segment"] + 1
    self.learning_rate = learning_rate if callable(learning_rate) else (lambda step: learning_rate)
    self.t0, self.excluded = time.time(), 0.0     # evaluation seconds are not training time
    self.file = self.bar = self.tb = None
    if enabled:
      from tensorboardX import SummaryWriter
      from tqdm import tqdm
      self.file = open(os.path.join(workdir, "metrics.jsonl"), "a")
      # purge_step: events a crashed run logged after its last checkpoint are dropped, so
      # the resumed curve has no doubled stretch.
      self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"),
                              purge_step=start_step or None)
      self.bar = tqdm(total=total_steps, initial=start_step, unit="step", file=sys.stderr,
                      dynamic_ncols=True, mininterval=1.0, leave=True)

  def _training_seconds(self) -> float:
    return max(time.time() - self.t0 - self.excluded, 1e-9)

  def images_per_s(self, step: int) -> float | None:
    """Training throughput, compilation included, evaluation excluded."""
    return (step - self.s0) * self.bs / self._training_seconds() if self.enabled else None

  def train(self, step: int, epoch: int, loss: float) -> None:
    if not self.enabled:
      return
    rate = self.images_per_s(step)
    self.bar.set_description(f"epoch {epoch}", refresh=False)
    self.bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{rate:,.0f}", refresh=False)
    self.bar.update(step - self.bar.n)
    self._write({"kind": "train", "step": step, "epoch": epoch, "loss": loss,
                 **self.times()})
    self.tb.add_scalar("train/loss", loss, step)
    self.tb.add_scalar("train/images_per_s", rate, step)
    self.tb.add_scalar("train/learning_rate", float(self.learning_rate(step)), step)

  def eval(self, step: int, epoch: int, train_loss: float, metrics: dict,
           seconds: float) -> None:
    """An evaluation's record (``metrics`` prefixed ``test_``); its ``seconds`` do not count
    as training time."""
    self.excluded += seconds
    if not self.enabled:
      return
    rec = {"kind": "eval", "step": step, "epoch": epoch, "train_loss": train_loss,
           **self.times(), **metrics}
    self._write(rec)
    self.tb.add_scalar("train/epoch_loss", train_loss, step)
    for k, v in metrics.items():
      self.tb.add_scalar(f"eval/{k}", v, step)
    self.tb.flush()
    say(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in rec.items()}))

  def times(self) -> dict:
    """``elapsed_s`` (this process) and ``run_s`` (every process of the run, summed)."""
    elapsed = time.time() - self.start_time
    return {"elapsed_s": elapsed, "run_s": self.before_s + elapsed}

  def _write(self, record: dict) -> None:
    self.file.write(json.dumps(record) + "\n")
    self.file.flush()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    if self.enabled:
      self.bar.close()
      self.tb.close()
      self.file.close()


def read_scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
  """``{tag: [(step, value), ...]}`` from the TensorBoard event files in ``logdir``, in file
  and write order (the TFRecord framing read directly; no TensorFlow, no tensorboard)."""
  from tensorboardX.proto import event_pb2
  out: dict[str, list[tuple[int, float]]] = {}
  for name in sorted(n for n in os.listdir(logdir) if "tfevents" in n):
    with open(os.path.join(logdir, name), "rb") as f:
      data = f.read()
    pos = 0
    while pos + 12 <= len(data):
      (length,) = struct.unpack("<Q", data[pos:pos + 8])
      event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
      pos += 12 + length + 4
      for v in event.summary.value:
        out.setdefault(v.tag, []).append((event.step, v.simple_value))
  return out
