r"""Huge pages for XLA's per-call buffers: the experiments re-execute themselves once, on Linux
with glibc, with ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``.

Why: XLA's CPU runtime allocates an executable's temporary buffer (every activation a train
step keeps: 3.26 GiB for the authors' V1 network at batch 200 in 4 micro-batches) when the
step starts and frees it when the step ends. glibc serves an allocation that large with a
fresh ``mmap`` and returns it with ``munmap``, so every step faults its temporaries back in
4 KiB pages, each zeroed by the kernel (855,652 minor page faults per V1 step). With the
tunable (glibc 2.35 and newer) malloc asks for transparent huge pages on such mappings
(``madvise``), so each fault brings in 2 MiB.
`make bench`'s "huge pages" section measures it: the same train steps in child processes with
and without the tunable, alternated, with their page faults per step.

The tunable is read by glibc when a process starts, so it cannot be set from within: the
experiments' entry points call :func:`reexec_with_huge_pages` first, which starts the same
command line again with it set (once: the new process finds it set). Nothing changes where it
cannot help (not Linux, not glibc >= 2.35, transparent huge pages set to ``never``), where the
environment already names ``glibc.malloc.hugetlb``, or with ``EQNN_HUGE_PAGES=0``. The
library itself (``eqnn``) never re-executes anything: in your own scripts, set the variable
yourself (docs/performance.md).

    python -m experiments.host_memory --config=experiments/configs/paper.py \
        --config.microbatches=4 [--seconds=5]

(a child of the bench: the config's network, its train step timed for ``--seconds``, printed
as one JSON line with the page faults and kernel time per step and the size of the step's
temporary buffer, ``memory_analysis().temp_size_in_bytes`` of the compiled step.)
"""

from __future__ import annotations

import os
import platform
import sys
import time

KEY = "glibc.malloc.hugetlb"
TUNABLE = KEY + "=1"
OPT_OUT = "EQNN_HUGE_PAGES"          # "0": never re-execute
START = "EQNN_PROCESS_START"         # the first process's start time, kept across the re-exec
_THP = "/sys/kernel/mm/transparent_hugepage/enabled"


def problem() -> str | None:
  """Why the tunable would not help or is not wanted here; None where it would."""
  if os.environ.get(OPT_OUT, "1") == "0":
    return f"{OPT_OUT}=0"
  if KEY in os.environ.get("GLIBC_TUNABLES", ""):
    return f"GLIBC_TUNABLES already names {KEY}"
  if sys.platform != "linux":
    return f"not Linux ({sys.platform})"
  lib, version = platform.libc_ver()
  try:
    if lib != "glibc" or tuple(int(v) for v in version.split(".")[:2]) < (2, 35):
      return f"the C library is {lib or 'unknown'} {version}, not glibc >= 2.35"
  except ValueError:
    return f"unreadable glibc version {version!r}"
  try:
    with open(_THP) as f:
      if "[never]" in f.read():
        return "transparent huge pages are off ([never])"
  except OSError:
    return f"no {_THP}"
  if not getattr(sys, "orig_argv", None) or not sys.executable:
    return "the command line or the interpreter is not known (sys.orig_argv, sys.executable)"
  return None


def environment(on: bool, env=None) -> dict[str, str]:
  """``env`` (default: this process's) with the tunable added (``on``) or taken out."""
  env = dict(os.environ if env is None else env)
  kept = [t for t in env.get("GLIBC_TUNABLES", "").split(":")
          if t and not t.startswith(KEY)]
  if on:
    kept.append(TUNABLE)
  if kept:
    env["GLIBC_TUNABLES"] = ":".join(kept)
  else:
    env.pop("GLIBC_TUNABLES", None)
  env[OPT_OUT] = "1" if on else "0"
  return env


def reexec_with_huge_pages(start: float | None = None) -> None:
  """Replaces this process with the same command line under the tunable, where
  :func:`problem` finds nothing against it; else returns. ``start``: this process's start
  time (default: now), which :func:`process_start` then returns in the new one."""
  if problem() is not None:
    return
  env = environment(True)
  env.setdefault(START, repr(time.time() if start is None else start))
  sys.stdout.flush()
  sys.stderr.flush()
  try:
    os.execve(sys.executable, sys.orig_argv, env)
  except OSError as e:      # the run goes on as it is, only without huge pages
    print(f"note: could not restart with huge pages for malloc ({e}); running without",
          file=sys.stderr)


def process_start(default: float) -> float:
  """When the command started: before the re-exec where there was one, else ``default``."""
  try:
    return float(os.environ[START])
  except (KeyError, ValueError):
    return default


def page_faults_and_kernel_s() -> tuple[int, float]:
  """This process's minor page faults and kernel CPU seconds so far."""
  import resource
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_minflt, r.ru_stime


def status() -> str:
  """"on (...)" where this process runs with the tunable, else "off: " and why."""
  tunables = os.environ.get("GLIBC_TUNABLES", "")
  if KEY in tunables:
    return f"on (GLIBC_TUNABLES={tunables})"
  return f"off: {problem() or 'not re-executed'}"


def compare(configs, rounds: int, seconds: float, say=print) -> list[dict]:
  """Rows ``{config, off: {...}, on: {...}, ratio}``: each config's train step timed in child
  processes (``python -m experiments.host_memory``) without and with the tunable, alternated
  ``rounds`` times; medians of images/s, page faults and kernel seconds per step. A config is
  a config file's path, with overrides after it (``"paper.py --config.microbatches=4"``)."""
  import json
  import statistics
  import subprocess
  rows = []
  for config in configs:
    path, *overrides = config.split()
    runs = {"off": [], "on": []}
    for _ in range(rounds):
      for how in runs:
        out = subprocess.run([sys.executable, "-m", "experiments.host_memory",
                              f"--config={path}", *overrides, f"--seconds={seconds}"],
                             env=environment(how == "on"), capture_output=True, text=True)
        if out.returncode:
          raise RuntimeError(f"the huge-pages child for {config} failed: "
                             f"{out.stderr.strip().splitlines()[-1:]}")
        runs[how].append(json.loads(out.stdout.strip().splitlines()[-1]))
    med = {how: {k: statistics.median(r[k] for r in rs)
                 for k in ("images_per_s", "faults_per_step", "kernel_s_per_step")}
           for how, rs in runs.items()}
    row = {"config": config, **med, "ratio": med["on"]["images_per_s"] / med["off"]["images_per_s"],
           "temp_bytes": runs["on"][0]["temp_bytes"]}
    rows.append(row)
    say(f"  {config} ({row['temp_bytes'] / 2**30:.2f} GiB of temporaries per step): "
        f"{med['off']['images_per_s']:.1f} -> {med['on']['images_per_s']:.1f} "
        f"img/s with huge pages ({row['ratio']:.2f}x); page faults per step "
        f"{med['off']['faults_per_step']:,.0f} -> {med['on']['faults_per_step']:,.0f}, kernel "
        f"{med['off']['kernel_s_per_step']:.2f} -> {med['on']['kernel_s_per_step']:.2f} s per step")
  return rows


def _child(argv):
  """Times one config's train step (the runner's micro-batches) and prints a JSON line."""
  del argv
  import json
  import jax
  from absl import app, flags
  from experiments import logs, tasks, timing
  FLAGS = flags.FLAGS
  logs.quiet()
  c = FLAGS.config
  model = tasks.build_task(c).model
  if not c.microbatches:
    raise app.UsageError("the config measures its micro-batch count (microbatches = 0): give "
                         "one, e.g. --config.microbatches=4")
  step, state, x, y = timing.train_step_runner(model, c.batch_size, model.num_classes,
                                               c.microbatches, head_apart=c.head_apart)[2]
  # Compiled once, ahead of time, so that the size of the temporary buffer XLA allocates at
  # every call is read from the very program that is timed.
  compiled = jax.jit(step, donate_argnums=0).lower(state, x, y).compile()
  temp = compiled.memory_analysis().temp_size_in_bytes
  holder = [state]

  def run():
    holder[0], loss = compiled(holder[0], x, y)
    return loss
  timing.ready(run())                                   # first touch
  timing.ready(run())
  faults, kernel = page_faults_and_kernel_s()
  t, steps = time.perf_counter(), 0
  while steps < FLAGS.steps or time.perf_counter() - t < FLAGS.seconds:
    timing.ready(run())
    steps += 1
  wall = time.perf_counter() - t
  faults2, kernel2 = page_faults_and_kernel_s()
  print(json.dumps({"images_per_s": steps * c.batch_size / wall,
                    "faults_per_step": (faults2 - faults) / steps,
                    "kernel_s_per_step": (kernel2 - kernel) / steps, "steps": steps,
                    "temp_bytes": temp,
                    "huge_pages": status()}), flush=True)


if __name__ == "__main__":
  from absl import app, flags
  from ml_collections import config_flags
  config_flags.DEFINE_config_file("config", "experiments/configs/default.py", "Config file.")
  flags.DEFINE_integer("steps", 3, "Train steps timed (after two untimed ones), at least.")
  flags.DEFINE_float("seconds", 5.0, "Seconds of train steps timed, at least.")
  app.run(_child)
