"""Decisions measured on the machine before training, kept for the run: the epochs that fit a
wall-time budget, and the number of micro-batches a step runs fastest in.

``config.train_budget_s > 0`` asks for a run that ends, evaluation and all, within that many
seconds of the process's start on whatever machine runs it. The learning-rate schedule needs
the run's length up front, so the length is measured, not guessed: the train step is compiled
and timed on a throwaway copy of the initial state, one evaluation batch is timed, and the
epochs are what the rest of the budget holds after the real step's compilation, every
evaluation and a safety margin (:func:`plan`), at most ``config.num_epochs``. The decision is
written to ``plan.json`` in the workdir, so that a resumed run keeps the schedule it began
with, on any machine. The cost: one more compilation and a few steps.

``config.microbatches = 0`` ("auto") times the train step split into 1, 2, 4, ... slices, at
least 8 examples per device each (:func:`microbatch_candidates`), and keeps the fastest
(:func:`microbatches`): on a CPU, slices whose activations stay in cache can run a whole
step faster; on an accelerator, one piece usually wins. The same gradient either way (batch
norm's statistics are then each slice's, so it is a decision of the run, kept in
``plan.json`` too).

``config.cpu_fusions = "auto"`` times the step (with the run's micro-batches) compiled with
XLA's default CPU fusions, without its YNNPACK fusions and with YNNPACK's dots alone, and
keeps the fastest (:func:`cpu_fusions`): which wins depends on the network's shapes
(`make bench`'s section cpu_fusions).

``config.conv_form = "measured"`` times the step (with the run's micro-batches, XLA's default
fusions) with its convs in each pair of :data:`FORM_CANDIDATES` (conv form, kernel gradient:
the library's per-conv choice, XLA's throughout, Winograd's, XLA's convs with kernel
gradients by windows) and keeps the fastest (:func:`conv_forms`): the library's own
thresholds were fitted on one machine type and lost on another at the authors' V1 network
(docs/performance.md). Every pair computes the same function, to float rounding.

Each of those three choices compiles every candidate's step on its own throwaway state, runs
it :data:`WARMUP` times, then times one step of each candidate in turn, round after round
(:data:`ROUNDS`), and compares their medians: the machine's drift within the measurement
(20-40% within an hour was seen here) falls on every candidate alike instead of on whichever
ran last.

Each decision is taken in turn, the later ones on the earlier ones' choice: micro-batches
(in the library's forms where they are measured too), then conv forms and fusions. Where
both of those are measured, every pair of them is (:func:`forms_and_fusions`): which fusions
win depends on the forms (the authors' V1 on an Intel Xeon: XLA's convs 1.49x as fast with
YNNPACK's dots alone as with the default fusions, the library's forms 0.85x; `python -m
experiments.bench_peers --nets=paper_v1`), so measuring one and then the other missed the
fastest pair there.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Callable

from experiments import timing
from experiments import workdir as workdir_lib

FILE = "plan.json"
MARGIN = 0.08      # of the budget, for what the measurement cannot see (steps ran 8% slower
                   # over a whole C16 MNIST-rot run than in the first 35; evaluations, saves)


@dataclasses.dataclass(frozen=True)
class Measured:
  elapsed_s: float       # since the process started, when the plan is made
  compile_s: float       # compiling the train step (the real one will compile again)
  step_s: float          # one train step, compiled
  eval_s: float          # one full evaluation pass over the test inputs, compiled


def evaluations(epochs: int, every: int, turns: int) -> float:
  """Evaluation passes of a run of ``epochs``: one each ``every`` epochs and one at the end,
  and ``turns - 1`` more passes for the test-time turns."""
  return math.ceil(epochs / every) + (turns - 1)


def plan(budget_s: float, m: Measured, steps_per_epoch: int, max_epochs: int, every: int,
         turns: int) -> int:
  """The most epochs (1 .. ``max_epochs``) whose training and evaluations fit in what is left
  of ``budget_s`` after ``m.elapsed_s``, one more compilation and the margin."""
  left = budget_s * (1 - MARGIN) - m.elapsed_s - m.compile_s
  epoch_s = steps_per_epoch * m.step_s
  for epochs in range(max_epochs, 1, -1):
    if epochs * epoch_s + evaluations(epochs, every, turns) * m.eval_s <= left:
      return epochs
  return 1


def epochs(config, workdir: str, start_time: float, steps_per_epoch: int,
           measure: Callable[[], tuple[float, float, float]], say) -> int:
  """The run's epochs: ``config.num_epochs`` without a budget; with one, the epochs planned
  in ``workdir`` by an earlier start of this run, or planned now from ``measure()``
  (``(compile_s, step_s, eval_s)``), and saved."""
  if not config.train_budget_s:
    return config.num_epochs
  saved = _load(workdir)
  if "epochs" in saved:
    say(f"time budget: {saved['epochs']} epochs, as planned when this run began "
        f"({os.path.join(workdir, FILE)})")
    return int(saved["epochs"])
  compile_s, step_s, eval_s = measure()
  m = Measured(time.time() - start_time, compile_s, step_s, eval_s)
  n = plan(config.train_budget_s, m, steps_per_epoch, config.num_epochs,
           min(config.eval_every_epochs, config.num_epochs), config.eval_turns)
  _save(workdir, {"epochs": n, "budget_s": config.train_budget_s,
                  "max_epochs": config.num_epochs, "steps_per_epoch": steps_per_epoch,
                  **dataclasses.asdict(m)})
  say(f"time budget {config.train_budget_s:.0f} s: {n} epochs of at most {config.num_epochs} "
      f"(measured: step {1e3 * step_s:.0f} ms, evaluation {eval_s:.0f} s, compilation "
      f"{compile_s:.0f} s, {m.elapsed_s:.0f} s gone)")
  return n


def microbatch_candidates(batch: int, devices: int = 1, smallest: int = 8) -> list[int]:
  """Slice counts 1, 2, 4, ... that split ``batch`` evenly into slices that split evenly over
  ``devices``, each device's share at least ``smallest`` examples (1 always)."""
  out, m = [1], 2
  while batch % (m * devices) == 0 and batch // (m * devices) >= smallest:
    out.append(m)
    m *= 2
  return out


# Untimed steps of each candidate after its compilation, then steps timed per candidate, one
# per round, the candidates alternated within each round.
WARMUP = 2
ROUNDS = 5


def alternated(runs: dict) -> dict:
  """``{candidate: median seconds per step}`` of ``runs`` (``{candidate: run}``, each ``run()``
  one more step): :func:`experiments.timing.alternate` with :data:`WARMUP` and
  :data:`ROUNDS`; the benches measure these choices with it too."""
  return timing.alternate(runs, ROUNDS, warmup=WARMUP)


def microbatches(config, workdir: str, devices: int, prepare: Callable[[int], Callable], say
                 ) -> int:
  """``config.microbatches``, or for 0 the fastest candidate (:func:`alternated` on
  ``prepare(m)``, the step in m slices compiled and warmed up: a function timing one more
  step), measured once per run and kept in ``plan.json``."""
  if config.microbatches:
    return config.microbatches
  saved = _load(workdir)
  if "microbatches" in saved:
    return int(saved["microbatches"])
  times = alternated({m: prepare(m) for m in microbatch_candidates(config.batch_size,
                                                                   devices)})
  best = min(times, key=times.get)
  _save(workdir, {"microbatches": best,
                  "microbatch_step_s": {str(m): t for m, t in times.items()}})
  say(f"micro-batches: {best} (step of {config.batch_size} in "
      + ", ".join(f"{m} slice(s): {1e3 * t:.0f} ms" for m, t in times.items()) + ")")
  return best


def cpu_fusions(config, workdir: str, backend: str, prepare: Callable[[str], Callable],
                say) -> str:
  """``config.cpu_fusions``, or for "auto" the fastest of ``steps.FIXED_FUSIONS``
  (:func:`alternated` on ``prepare(fusions)``), measured once per run and kept in ``plan.json``
  (a resumed run compiles its step as it began). Off the CPU: "default" (nothing to choose).
  A choice this jaxlib's XLA refuses (the option is experimental) is said and left out."""
  from experiments import steps
  if config.cpu_fusions != "auto":
    return config.cpu_fusions
  if backend != "cpu":
    return "default"
  return _fastest(workdir, "cpu_fusions", steps.FIXED_FUSIONS, str, prepare, say,
                  "XLA CPU fusions", steps.refused)


# What conv_form = "measured" chooses among: (conv_form, kernel_gradient) for every conv
# (eqnn.spatial.forms): the library's per-conv choice, XLA's own convs and kernel gradients,
# Winograd's form wherever it applies, XLA's convs with kernel gradients by windows.
FORM_CANDIDATES = (("auto", "auto"), ("xla", "xla"), ("winograd", "auto"), ("xla", "windows"))


def conv_forms(config, workdir: str, backend: str, prepare: Callable[[tuple], Callable],
               say) -> tuple[str, str]:
  """``(config.conv_form, config.kernel_gradient)``, or for ``conv_form = "measured"`` the
  fastest pair of :data:`FORM_CANDIDATES` (:func:`alternated` on ``prepare(pair)``), measured
  once per run and kept in ``plan.json`` (a resumed run computes its convs as it began). Off
  the CPU: the library's ("auto", "auto"), which takes XLA's conv library there anyway."""
  if config.conv_form != "measured":
    return config.conv_form, config.kernel_gradient
  if backend != "cpu":
    return "auto", "auto"
  return tuple(_fastest(workdir, "conv_forms", FORM_CANDIDATES, "/".join, prepare, say,
                        "conv forms"))


def measured_together(conv_form: str, cpu_fusions: str, backend: str) -> bool:
  """Whether the conv forms and XLA CPU's fusions are measured as pairs
  (:func:`forms_and_fusions`): both measured, on the CPU."""
  return conv_form == "measured" and cpu_fusions == "auto" and backend == "cpu"


def form_fusion_pairs() -> list[tuple[tuple, str]]:
  """What :func:`forms_and_fusions` chooses among: every pair of :data:`FORM_CANDIDATES` and
  ``steps.FIXED_FUSIONS``."""
  from experiments import steps
  return [(forms, f) for forms in FORM_CANDIDATES for f in steps.FIXED_FUSIONS]


def forms_and_fusions(config, workdir: str, backend: str,
                      prepare: Callable[[tuple, str], Callable], say) -> tuple[tuple, str]:
  """``(conv forms, cpu fusions)`` of the run: where the config measures both (``conv_form =
  "measured"``, ``cpu_fusions = "auto"``, on the CPU), the fastest of every pair of
  :data:`FORM_CANDIDATES` and ``steps.FIXED_FUSIONS`` (:func:`alternated` on ``prepare(forms,
  fusions)``), kept in ``plan.json`` as both choices; otherwise :func:`conv_forms` (under the
  config's fusions, XLA's default for "auto") then :func:`cpu_fusions` on its choice."""
  from experiments import steps
  if measured_together(config.conv_form, config.cpu_fusions, backend):
    saved = _load(workdir)
    if "conv_forms" in saved and "cpu_fusions" in saved:
      return tuple(saved["conv_forms"]), saved["cpu_fusions"]
    forms, fusions = _fastest(workdir, "forms_and_fusions", form_fusion_pairs(),
                              lambda p: f"{'/'.join(p[0])} {p[1]}", lambda p: prepare(*p), say,
                              "conv forms and XLA CPU fusions",
                              lambda p, e: steps.refused(p[1], e))
    _save(workdir, {"conv_forms": list(forms), "cpu_fusions": fusions})
    return tuple(forms), fusions
  fixed = config.cpu_fusions if config.cpu_fusions != "auto" else "default"
  forms = conv_forms(config, workdir, backend, lambda p: prepare(p, fixed), say)
  return forms, cpu_fusions(config, workdir, backend, lambda f: prepare(forms, f), say)


def _fastest(workdir, key, candidates, name, prepare, say, what, refused=lambda c, e: False):
  """The candidate with the least median step time (:func:`alternated` on
  ``prepare(candidate)``), kept in ``plan.json`` under ``key`` with every time (by
  ``name(candidate)``) and said; an earlier start's choice where the plan has one. A candidate
  whose preparation raises an error that ``refused(candidate, error)`` accepts (an option
  this jaxlib refuses to compile) is said and left out."""
  saved = _load(workdir)
  if key in saved:
    return saved[key]
  runs = {}
  for c in candidates:
    try:
      runs[c] = prepare(c)
    except Exception as e:
      if not refused(c, e):
        raise
      say(f"{what}: {name(c)} left out (this jaxlib refused the option: "
          f"{str(e).splitlines()[0]})")
  times = alternated(runs)
  best = min(times, key=times.get)
  _save(workdir, {key: best if isinstance(best, str) else list(best),
                  f"{key}_step_s": {name(c): t for c, t in times.items()}})
  say(f"{what}: {name(best)} (step " + ", ".join(f"{name(c)}: {1e3 * t:.0f} ms"
                                                 for c, t in times.items()) + ")")
  return best


def _load(workdir: str) -> dict:
  path = os.path.join(workdir, FILE)
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def _save(workdir: str, record: dict) -> None:
  workdir_lib.write_atomic(os.path.join(workdir, FILE),
                           json.dumps({**_load(workdir), **record}, indent=1))


def _started(make_step: Callable, state, batch_args: tuple):
  """``(compile_s, advance, last)``: a fresh jitted step called on ``state`` (a throwaway: the
  step donates it, so its buffers are deleted) and waited for; ``advance()`` runs one more
  step on the latest result, as in training, and returns its output (not waited for);
  ``last()`` is the latest state."""
  import jax
  step = make_step()
  t0 = time.perf_counter()
  out = [step(state, *batch_args)]
  jax.block_until_ready(out[0])
  compile_s = time.perf_counter() - t0

  def advance():
    out[0] = step(out[0][0], *batch_args[:-1], out[0][2])
    return out[0]
  return compile_s, advance, lambda: out[0][0]


def measure_step(make_step: Callable, state, batch_args: tuple, steps: int,
                 warmup: int = 5) -> tuple[float, float, object]:
  """``(compile_s, step_s, last_state)``: the first call of a fresh jitted step on ``state``
  (a throwaway, see :func:`_started`), then the mean of ``steps`` more after ``warmup``
  untimed ones (they take the first buffer allocations out of the mean)."""
  import jax
  compile_s, advance, last = _started(make_step, state, batch_args)
  for _ in range(warmup):
    advance()
  jax.block_until_ready(last())
  t0 = time.perf_counter()
  for _ in range(steps):
    advance()
  jax.block_until_ready(last())
  return compile_s, (time.perf_counter() - t0) / steps, last()


def stepper(make_step: Callable, state, batch_args: tuple) -> Callable:
  """What the measured choices take from a candidate: its step compiled on the throwaway
  ``state`` (a refused compile option raises here), as a function running one more step
  (:func:`alternated` warms it up and times it)."""
  return _started(make_step, state, batch_args)[1]
