"""Timing helpers shared by the benchmarks (`make bench`, `make bench-peers`, `make profile`):
variants alternated round by round, the machine's matmul peak, a train step to time, and the
multiply-adds a network executes. No flags here: each benchmark's own module defines its own."""

from __future__ import annotations

import json
import os
import statistics
import time
from typing import Callable


# How the benches' tables mark a step compiled with other XLA CPU fusions than the default.
FUSION_NOTES = {"no_ynnpack": ", no YNNPACK", "ynnpack_dots": ", YNNPACK dots only"}


def ready(x):
  import jax
  return jax.block_until_ready(x)


def alternate(variants: dict[str, Callable[[], object]], rounds: int, reps: int = 1,
              warmup: int = 1, cores: dict | None = None):
  """Median seconds per call of each variant, the variants alternated within each round,
  after ``warmup`` untimed calls of each (the first compiles and touches fresh memory).
  ``cores``, a dict where given, receives each variant's median CPU cores in use while it ran
  (the process's CPU time over the wall time of its timed calls: 2.0 is both cores busy on a
  2-core machine, 1.0 one core's worth)."""
  for f in variants.values():
    for _ in range(warmup):
      ready(f())
  times = {k: [] for k in variants}
  busy = {k: [] for k in variants}
  for _ in range(rounds):
    for k, f in variants.items():
      cpu = time.process_time() if cores is not None else 0.0
      t = time.perf_counter()
      for _ in range(reps):
        out = f()
      ready(out)
      wall = time.perf_counter() - t
      times[k].append(wall / reps)
      if cores is not None:
        busy[k].append((time.process_time() - cpu) / max(wall, 1e-9))
  if cores is not None:
    cores.update({k: statistics.median(v) for k, v in busy.items()})
  return {k: statistics.median(v) for k, v in times.items()}


def compile_stats(fn, *args):
  """(compile seconds, peak bytes = arguments + outputs + temporaries) of a jitted fn."""
  import jax
  t = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  secs = time.perf_counter() - t
  try:
    m = compiled.memory_analysis()
    peak = int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes)
  except Exception:  # memory_analysis is best effort on some backends
    peak = -1
  return secs, peak


def matmul_peak(rounds: int) -> float:
  """float32 matmul FLOP/s through JAX on this machine (2048^2 x 2048^2, best of rounds).

  On CPU the best of the matmul compiled both ways the runner can compile a step (XLA's
  default and without its YNNPACK fusions, ``experiments.steps.compiler_options``), alternated:
  the two ran 192 and 204 GFLOP/s in one scratch run (2026-12-03, 2-core AMD EPYC), and a
  share of the lower would flatter the steps compiled the faster way."""
  import jax
  from experiments import steps
  a = jax.random.normal(jax.random.key(0), (2048, 2048))
  compiled = [jax.jit(lambda a: a @ a).lower(a).compile()]
  if jax.default_backend() == "cpu":
    try:
      compiled.append(jax.jit(lambda a: a @ a).lower(a).compile(
          steps.compiler_options("no_ynnpack")))
    except Exception as e:
      if not steps.refused("no_ynnpack", e):
        raise
  for f in compiled:
    ready(f(a))
  best = float("inf")
  for _ in range(max(rounds, 3)):
    for f in compiled:
      t = time.perf_counter()
      ready(f(a))
      best = min(best, time.perf_counter() - t)
  return 2 * 2048 ** 3 / best


def train_step_runner(model, batch, classes, microbatches=1, compiler_options=None,
                      head_apart=False, forms=None):
  import functools
  import jax
  import jax.numpy as jnp
  import optax
  from flax.training import train_state
  from eqnn import readouts
  from experiments import steps
  x = jax.random.normal(jax.random.key(0), (batch, 28, 28, 1))
  y = jnp.zeros((batch,), jnp.int32) % classes
  params = model.init(jax.random.key(1), x[:1])
  state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=optax.adam(1e-3))
  step = functools.partial(steps.update, microbatches=microbatches, flat=readouts.joint_logits,
                           head_apart=head_apart)
  jstep = steps.jit_for(step, donate_argnums=0, compiler_options=compiler_options,
                        forms=forms)
  holder = [state]

  def run():
    holder[0], l = jstep(holder[0], x, y)
    return l

  infer = jax.jit(model.apply)
  # The train step donates its state, so inference reads the live parameters.
  return run, (lambda: infer(holder[0].params, x)), (step, state, x, y)


def _compiled(runs: dict) -> dict:
  """``runs``, each called once (it compiles), as the runner's candidates are before their
  warm-up (:func:`experiments.budget.stepper`)."""
  for run in runs.values():
    ready(run())
  return runs


def fastest_microbatches(model, batch, classes, head_apart=False) -> tuple[int, dict]:
  """What the runner does for a config with ``microbatches = 0`` (:mod:`experiments.budget`):
  the fastest slice count of :func:`experiments.budget.microbatch_candidates` at ``batch``,
  by train steps timed in turns as it does (:func:`experiments.budget.alternated`);
  ``(count, {count: seconds per step})``."""
  from experiments import budget
  t = budget.alternated(_compiled({m: train_step_runner(model, batch, classes, m,
                                                        head_apart=head_apart)[0]
                                   for m in budget.microbatch_candidates(batch)}))
  return min(t, key=t.get), t


def fastest_cpu_fusions(model, batch, classes, microbatches=1, head_apart=False):
  """What the runner does for a config with ``cpu_fusions = "auto"`` (:mod:`experiments.budget`):
  the fastest of the train step compiled each way of ``experiments.steps.FIXED_FUSIONS`` (XLA's
  default, without its YNNPACK fusions, with its dots alone), here timed alternately; ``(choice,
  {choice: seconds per step}, the chosen step's train_step_runner)``; a way this jaxlib refuses
  is left out, as the runner does. Off the CPU ``("default", {}, None)``, as the runner."""
  import jax
  from experiments import steps
  if jax.default_backend() != "cpu":
    return "default", {}, None
  choice, t, built = _fastest_compiled({f: (model, f) for f in steps.FIXED_FUSIONS}, batch,
                                       classes, microbatches, head_apart)
  return choice, t, built[choice]


def _fastest_compiled(cases: dict, batch, classes, microbatches, head_apart):
  """``(key, {key: seconds per step}, {key: train_step_runner})`` of ``cases`` (``{key:
  (model, cpu fusions)}``), each step compiled first, then timed in turns as the runner does
  (:func:`experiments.budget.alternated`); a case whose fusions this jaxlib refuses is left
  out, as the runner does."""
  from experiments import budget, steps
  built = {}
  for key, (model, f) in cases.items():
    b = train_step_runner(model, batch, classes, microbatches, steps.compiler_options(f),
                          head_apart)
    try:
      ready(b[0]())                           # compiles
    except Exception as e:
      if not steps.refused(f, e):
        raise
      continue
    built[key] = b
  t = budget.alternated({k: b[0] for k, b in built.items()})
  return min(t, key=t.get), t, built


def runner_cpu_fusions(fusions: str, model, batch, classes, microbatches=1, label: str = "",
                       head_apart=False):
  """``(fusions, step)``: the XLA CPU fusions the runner compiles a config's step with, the
  config's ``cpu_fusions`` or for "auto" :func:`fastest_cpu_fusions`' choice (printed with what
  it measured), and :func:`train_step_runner`'s step compiled so (compiled once: the
  measurement's own where it made one)."""
  from experiments import steps
  built = None
  if fusions == "auto":
    fusions, tried, built = fastest_cpu_fusions(model, batch, classes, microbatches,
                                                head_apart)
    print(f"  {label + ': ' if label else ''}XLA CPU fusions measured as the runner does: "
          f"{fusions} (" + ", ".join(f"{f}: {batch / t:.1f} img/s" for f, t in tried.items())
          + ")", flush=True)
  return fusions, built or train_step_runner(model, batch, classes, microbatches,
                                             steps.compiler_options(fusions), head_apart)


def runner_conv_forms(forms: tuple, model, batch, classes, microbatches=1, label: str = "",
                      head_apart=False):
  """The ``(conv_form, kernel_gradient)`` the runner computes a config's convs in: the
  config's ``forms``, or for ``conv_form = "measured"`` the fastest pair of
  ``experiments.budget.FORM_CANDIDATES`` for ``model`` (an EquivariantCNN), here timed
  alternately and printed with what it measured; off the CPU ("auto", "auto"), as the runner."""
  import jax
  from experiments import budget
  if forms[0] != "measured":
    return tuple(forms)
  if jax.default_backend() != "cpu":
    return "auto", "auto"
  t = budget.alternated(_compiled({pair: train_step_runner(
      model.clone(conv_form=pair[0], kernel_gradient=pair[1]), batch, classes, microbatches,
      head_apart=head_apart)[0]
                                    for pair in budget.FORM_CANDIDATES}))
  best = min(t, key=t.get)
  print(f"  {label + ': ' if label else ''}conv forms measured as the runner does: "
        f"{'/'.join(best)} (" + ", ".join(f"{'/'.join(p)}: {batch / s:.1f} img/s"
                                         for p, s in t.items()) + ")", flush=True)
  return best


def runner_forms_and_fusions(forms: tuple, fusions: str, model, batch, classes, microbatches=1,
                             label: str = "", head_apart=False):
  """``((conv_form, kernel_gradient), cpu_fusions, train_step_runner's step)`` as the runner
  chooses them (:func:`experiments.budget.forms_and_fusions`): where a config measures both
  (``conv_form = "measured"``, ``cpu_fusions = "auto"``, on the CPU) every pair timed in turns
  and the fastest printed with what it measured; otherwise :func:`runner_conv_forms`, then
  :func:`runner_cpu_fusions` on its choice. ``model``: an EquivariantCNN."""
  import jax
  from experiments import budget
  if not budget.measured_together(forms[0], fusions, jax.default_backend()):
    pair = runner_conv_forms(forms, model, batch, classes, microbatches, label, head_apart)
    model = model.clone(conv_form=pair[0], kernel_gradient=pair[1])
    chosen, built = runner_cpu_fusions(fusions, model, batch, classes, microbatches, label,
                                       head_apart)
    return pair, chosen, built
  best, t, built = _fastest_compiled(
      {(pair, f): (model.clone(conv_form=pair[0], kernel_gradient=pair[1]), f)
       for pair, f in budget.form_fusion_pairs()}, batch, classes, microbatches, head_apart)
  print(f"  {label + ': ' if label else ''}conv forms and XLA CPU fusions measured as the "
        f"runner does: {'/'.join(best[0])} {best[1]} (" + ", ".join(
            f"{'/'.join(p)} {f}: {batch / s:.1f} img/s" for (p, f), s in t.items()) + ")",
        flush=True)
  return best[0], best[1], built[best]


def unit_convs(group, cin: int, cout: int, impl: str) -> list[tuple[int, int, int]]:
  """The plain maps (convs or matmuls) a layer lifted over the regular action of ``group``
  (``cin`` and ``cout`` per element) runs in form ``impl``, as ``(rows, C_in, C_out)``: each
  map's channels and how many times its input is the lifted input's size: C_n's Fourier
  basis :func:`eqnn.fourier.circulant_maps`, D_n's irreps :func:`eqnn.fourier.irrep_maps`,
  the expanded form one ``|G| cin -> |G| cout`` map."""
  from eqnn import fourier
  n = group.order
  if impl == "fourier":
    if fourier.is_cyclic_in_order(group):
      return fourier.circulant_maps(n, cin, cout)
    return fourier.irrep_maps(fourier.dihedral_irreps(n // 2), cin, cout)
  return [(1, n * cin, n * cout)]


def layer_units(group, cin: int, cout: int, impl: str) -> int:
  """Multiply-adds per position of a layer lifted over the regular action of ``group``
  (``cin`` and ``cout`` per element) in form ``impl``: the irreps basis's, or the expanded
  block-circulant weights' ``|G| cin |G| cout``."""
  return sum(rows * a * b for rows, a, b in unit_convs(group, cin, cout, impl))


def conv_executed_macs(size: int, k: int, rows: int, cin: int, cout: int,
                       conv_form: str = "auto") -> int:
  """Multiply-adds of one stride-1 SAME ``k x k`` conv at ``size x size`` as
  :func:`eqnn.spatial.conv` runs it in ``conv_form`` here: in Winograd's form ("winograd" for
  3 x 3 convs; "auto": on CPU, 3 x 3 convs of at least ``WINOGRAD_MIN_IN`` in and
  ``WINOGRAD_MIN_OUT`` out channels) 16 per 2 x 2 output tile and channel pair (its
  transforms are additions, not counted), else ("xla") ``k^2`` per output and channel pair."""
  import jax
  from eqnn import spatial
  spatial.check_forms(conv_form)
  if k == 3 and (conv_form == "winograd" or conv_form == "auto" and cin >= spatial.WINOGRAD_MIN_IN
                 and cout >= spatial.WINOGRAD_MIN_OUT and jax.default_backend() == "cpu"):
    return rows * (-(-size // 2)) ** 2 * 16 * cin * cout
  return rows * size * size * k * k * cin * cout


def conv_macs(model_cfg, fourier_form: bool, group=None, hidden: str = "stacked",
              executed: bool = False, conv_form: str = "auto") -> int:
  """Forward multiply-adds per image of a EquivariantCNN on 28x28 inputs over ``group``
  (default C4), its convs 3 x 3.

  ``fourier_form``: count what ``impl="auto"`` computes (the group convs, and the lifted
  dense layer where auto picks it, in the Fourier basis); else the dense expanded weights'.
  ``hidden="gcnn"``: the G-CNN convs, which run their expanded turned weights either way.
  ``executed``: each conv as ``conv_form`` runs it on this backend
  (:func:`conv_executed_macs`: in "auto", Winograd's products for the wide convs on CPU);
  else as a direct conv ("conv-equivalent")."""
  from eqnn import groups, ops
  c4 = group if group is not None else groups.cyclic(4)
  form = lambda kind: ("expanded" if not fourier_form or (hidden == "gcnn" and kind == "group_conv")
                       else ops.resolve_impl("auto", kind, c4))
  feats, pools, dense = model_cfg
  h = 28
  macs = h * h * 9 * 1 * feats[0] * c4.order               # input lift, |G| copies
  h //= pools[0]
  cin = feats[0]
  for f, p in zip(feats[1:], pools[1:]):
    macs += sum(conv_executed_macs(h, 3, *u, conv_form) if executed
                else h * h * 9 * u[0] * u[1] * u[2]
                for u in unit_convs(c4, cin, f, form("group_conv")))
    h //= p
    cin = f
  widths = list(dense) + [10]
  macs += layer_units(c4, h * h * cin, widths[0], form("group_dense"))   # the lifted dense layer
  for a, b in zip(widths[:-1], widths[1:]):
    macs += c4.order * a * b
  return macs


def write_report(out: str, report: dict, markdown: str) -> str:
  """Writes ``report`` to ``out`` (JSON) and ``markdown`` beside it (``.md``); returns that path."""
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "w") as f:
    json.dump(report, f, indent=2)
  md = os.path.splitext(out)[0] + ".md"
  with open(md, "w") as f:
    f.write(markdown)
  return md
