r"""`make bench`: the lift's overhead, layer variants with compile time and memory, C_n's
scaling, the minimal lift's saving and large groups, beside the whole train steps of
:mod:`experiments.bench_steps` (throughput, FLOP/s against the machine's peak).

    python -m experiments.bench --out=runs/bench/bench.json [--quick]

Every comparison is measured in one run with the variants alternated round by round, and
reported as the median over rounds, so ratios are fair on a noisy machine.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from absl import app, flags

from experiments.bench_conv_forms import bench_conv_forms, bench_conv_passes
from experiments.bench_fusions import bench_cpu_fusions, bench_reduction_forms
from experiments.bench_lift import bench_lift_overhead
from experiments.bench_steps import (bench_augmented_step, bench_head_apart,
                                     bench_kernel_gradients, bench_lift_forms, bench_networks)
from experiments.timing import alternate, compile_stats, matmul_peak, train_step_runner

FLAGS = flags.FLAGS


def bench_layer_variants(rounds, quick, report):
  import jax
  import jax.numpy as jnp
  from eqnn import actions, groups, layers, ops
  c4 = actions.rotations()
  d4 = actions.rotations_reflections()
  c16 = actions.rotations(16, "bicubic")
  cases = [("LiftConv C4 1->16 @28", lambda i: layers.LiftConv(c4, 16, impl=i), (128, 28, 28, 1),
            ["vmap", "expanded", "patches", "kernels"]),
           ("LiftConv C4 1->16 @28, batch 32", lambda i: layers.LiftConv(c4, 16, impl=i),
            (32, 28, 28, 1), ["vmap", "kernels"]),
           ("LiftConv D4 1->16 @28", lambda i: layers.LiftConv(d4, 16, impl=i), (128, 28, 28, 1),
            ["vmap", "kernels"]),
           ("LiftConv C4 1->80 @28 (V1, batch 25)", lambda i: layers.LiftConv(c4, 80, impl=i),
            (25, 28, 28, 1), ["vmap", "kernels"]),
           ("LiftConv C16 1->12 @28", lambda i: layers.LiftConv(c16, 12, impl=i), (64, 28, 28, 1),
            ["vmap", "patches"]),
           ("GroupConv C4 16->32 @14", lambda i: layers.GroupConv(groups.cyclic(4), 32, impl=i),
            (128, 14, 14, 4, 16), ["vmap", "expanded", "fourier"]),
           ("GroupConv C4 80->80 @28 (V1 conv2)",
            lambda i: layers.GroupConv(groups.cyclic(4), 80, impl=i), (16, 28, 28, 4, 80),
            ["vmap", "expanded", "fourier"]),
           ("GroupConv D4 8->16 @14", lambda i: layers.GroupConv(d4.group, 16, impl=i),
            (64, 14, 14, 8, 8), ["vmap", "expanded", "fourier"]),
           ("GroupConv D8 8->16 @14", lambda i: layers.GroupConv(groups.dihedral(8), 16, impl=i),
            (64, 14, 14, 16, 8), ["expanded", "fourier"]),
           ("GroupDense C4 3x3x64->128 (default head)",
            lambda i: layers.GroupDense(groups.cyclic(4), 128, impl=i), (128, 3, 3, 4, 64),
            ["vmap", "expanded", "fourier"]),
           ("GroupDense C16 3x3x48->128 (MNIST-rot head)",
            lambda i: layers.GroupDense(groups.cyclic(16), 128, impl=i), (64, 3, 3, 16, 48),
            ["expanded", "fourier"])]
  if quick:
    cases = cases[:1] + cases[4:5]
  for title, make, shape, impls in cases:
    kind = {"LiftConv": "lift_conv", "GroupConv": "group_conv",
            "GroupDense": "group_dense"}[title.split()[0]]
    group = {"C4": c4.group, "C16": c16.group, "D4": d4.group,
             "D8": groups.dihedral(8)}[title.split()[1]]
    x = jax.random.normal(jax.random.key(0), shape)
    params = make("expanded").init(jax.random.key(1), x)
    fns = {}
    for i in impls:
      m = make(i)
      fns[i] = jax.jit(jax.grad(lambda p, x, m=m: jnp.sum(m.apply(p, x) ** 2)))
    t = alternate({i: (lambda g: lambda: g(params, x))(g) for i, g in fns.items()}, rounds)
    for i in impls:
      m = make(i)
      secs, peak = compile_stats(jax.grad(lambda p, x, m=m: jnp.sum(m.apply(p, x) ** 2)), params, x)
      row = {"layer": title, "impl": i, "fwd_bwd_ms": 1e3 * t[i], "compile_s": secs,
             "peak_bytes": peak}
      report["layer_variants"].append(row)
      print(f"  {title:36s} {i:9s}: fwd+bwd {1e3 * t[i]:8.1f} ms, compile {secs:5.2f} s, "
            f"peak {peak / 2**20:8.1f} MiB", flush=True)
    auto, fastest = ops.resolve_impl("auto", kind, group), min(impls, key=t.get)
    report["auto_choices"].append({"layer": title, "auto": auto, "fastest": fastest})
    print(f"  {title:36s} impl='auto' runs {auto!r}; fastest in this run: {fastest!r}", flush=True)


def bench_cn_scaling(rounds, quick, report):
  """C_n for n = 4, 8, 16 with the same filters per group element: the train step, the input
  lift and one group conv (Fourier and expanded forms), side by side. The lift and the
  Fourier group conv should grow about linearly in n, the expanded group conv as n^2."""
  import jax
  import jax.numpy as jnp
  from eqnn import actions, fourier, groups, layers, models
  ns = (4, 8) if quick else (4, 8, 16)
  b = 32 if quick else 64
  steps, lifts, convs = {}, {}, {}
  for n in ns:
    model = models.EquivariantCNN(actions.rotations(n), (16, 32, 32), (2, 2, 1), (128,))
    steps[n], _, _ = train_step_runner(model, b, 10 * n)
    x = jax.random.normal(jax.random.key(0), (b, 28, 28, 1))
    lift = layers.LiftConv(actions.rotations(n), 16)
    lp = lift.init(jax.random.key(1), x)
    g = jax.jit(jax.grad(lambda p, x, m=lift: jnp.sum(m.apply(p, x) ** 2)))
    lifts[n] = (lambda g, p, x: lambda: g(p, x))(g, lp, x)
    y = jax.random.normal(jax.random.key(2), (b, 14, 14, n, 16))
    for impl in ("fourier", "expanded"):
      conv = layers.GroupConv(groups.cyclic(n), 32, impl=impl)
      cp = conv.init(jax.random.key(3), y)
      g = jax.jit(jax.grad(lambda p, y, m=conv: jnp.sum(m.apply(p, y) ** 2)))
      convs[(n, impl)] = (lambda g, p, y: lambda: g(p, y))(g, cp, y)
  t_step = alternate(steps, rounds)
  t_lift = alternate(lifts, rounds)
  t_conv = alternate(convs, rounds)
  for n in ns:
    units = fourier.multiply_adds(n, 1, 1)
    row = {"n": n, "batch": b, "train_step_ms": 1e3 * t_step[n],
           "step_ratio_to_c4": t_step[n] / t_step[ns[0]],
           "lift_fwd_bwd_ms": 1e3 * t_lift[n], "lift_ratio_to_c4": t_lift[n] / t_lift[ns[0]],
           "group_conv_fourier_ms": 1e3 * t_conv[(n, "fourier")],
           "group_conv_expanded_ms": 1e3 * t_conv[(n, "expanded")],
           "fourier_units": units[0], "expanded_units": units[1]}
    report["cn_scaling"].append(row)
    print(f"  C{n:<3d} batch {b}: train step {row['train_step_ms']:7.1f} ms "
          f"({row['step_ratio_to_c4']:.2f}x C4), lift fwd+bwd {row['lift_fwd_bwd_ms']:6.1f} ms "
          f"({row['lift_ratio_to_c4']:.2f}x), group conv 16->32 @14 Fourier "
          f"{row['group_conv_fourier_ms']:6.1f} ms ({units[0]} units) vs expanded "
          f"{row['group_conv_expanded_ms']:6.1f} ms ({units[1]} units)", flush=True)


def bench_huge_pages(rounds, quick, report):
  """The same train steps in child processes without and with glibc's huge pages for malloc
  (:mod:`experiments.host_memory`), alternated: this run's own steps use them where they help.
  Its own rounds, not ``rounds``: each is two processes that compile the step."""
  from experiments import host_memory
  configs = ["experiments/configs/default.py"] + (
      [] if quick else ["experiments/configs/paper.py --config.microbatches=4"])
  report["huge_pages"] = host_memory.compare(configs, 2 if quick else 3, 2.0 if quick else 6.0)


def bench_minimal(rounds, quick, report):
  import jax
  import jax.numpy as jnp
  import eqnn
  from eqnn import actions, models
  act = actions.rotations()
  h = act.group.subgroup([0, 2])         # half turns
  base = models.PlainCNN((16, 32, 32), (2, 2, 1), (128,))
  b = 64 if quick else 128
  x = jax.random.normal(jax.random.key(0), (b, 28, 28, 1))
  params = base.init(jax.random.key(1), x[:1])
  # F is H-invariant by construction, at the cost of one CNN evaluation.
  f = lambda x: base.apply(params, x + act(2, x))
  full = jax.jit(eqnn.equivarify(f, act))
  minimal = jax.jit(eqnn.equivarify_minimal(f, act, h))
  same = float(jnp.max(jnp.abs(eqnn.expand_minimal(minimal(x), h) - full(x))))
  t = alternate({"full": lambda: full(x), "minimal": lambda: minimal(x)}, rounds)
  row = {"group": "C4", "subgroup": h.name, "H_order": h.order, "full_s": t["full"],
         "minimal_s": t["minimal"], "saving": t["full"] / t["minimal"], "max_abs_difference": same}
  report["minimal"].append(row)
  print(f"  minimal lift over C4/{h.name}: {row['saving']:.2f}x faster than the full lift "
        f"(|H| = {h.order}); outputs agree to {same:.1e}", flush=True)


def bench_groups(quick, report):
  """Building large groups: seconds and peak Python memory (tracemalloc) per construction."""
  import tracemalloc
  from eqnn import groups
  cases = [("S6 (from permutations)", lambda: groups.symmetric(6)[0]),
           ("C4 x S6", lambda: groups.direct_product(groups.cyclic(4), groups.symmetric(6)[0]))]
  if not quick:
    cases += [("S7 (from permutations)", lambda: groups.symmetric(7)[0]),
              ("S7 x C2", lambda: groups.direct_product(groups.symmetric(7)[0],
                                                        groups.cyclic(2)))]
  for name, make in cases:
    tracemalloc.start()
    t = time.perf_counter()
    g = make()
    secs = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    row = {"group": name, "order": g.order, "table_dtype": str(g.table.dtype), "seconds": secs,
           "peak_bytes": peak, "table_bytes": g.table.nbytes}
    report["groups"].append(row)
    print(f"  {name:24s} order {g.order:6d}: {secs:6.2f} s, peak {peak / 2**20:7.1f} MiB "
          f"(table {g.table.nbytes / 2**20:.1f} MiB, {g.table.dtype})", flush=True)


def main(argv):
  del argv
  from experiments import logs
  logs.quiet()
  import jax
  quick = FLAGS.quick
  rounds = 3 if quick else FLAGS.rounds
  t0 = time.time()
  report = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                        "devices": [str(d) for d in jax.devices()], "jax": jax.__version__},
            "networks": [], "lift_overhead": [], "layer_variants": [], "auto_choices": [],
            "cn_scaling": [], "augmented_step": [], "kernel_gradients": [],
            "lone_kernel_gradients": [], "lift_forms": [], "cpu_fusions": [], "minimal": [],
            "groups": [], "huge_pages": [], "conv_forms": [], "lone_conv_forms": [],
            "head_apart": [], "reduction_forms": [], "conv_passes": []}
  from experiments import host_memory
  report["machine"]["huge_pages"] = host_memory.status()
  print("matmul peak ...", flush=True)
  peak = matmul_peak(rounds)
  report["matmul_peak_gflops"] = peak / 1e9
  print(f"  float32 matmul peak through JAX: {peak / 1e9:.1f} GFLOP/s", flush=True)
  sections = {
      "networks": ("networks (train step, inference)",
                   lambda: bench_networks(rounds, quick, peak, report)),
      "lift_overhead": ("lift overhead", lambda: bench_lift_overhead(rounds, quick, report)),
      "layer_variants": ("layer variants (fwd+bwd)",
                         lambda: bench_layer_variants(rounds, quick, report)),
      "cn_scaling": ("C_n for n = 4, 8, 16 (same filters per element)",
                     lambda: bench_cn_scaling(rounds, quick, report)),
      "augmented_step": ("MNIST-rot train step with augmentation: two programs or one",
                         lambda: bench_augmented_step(rounds, quick, report)),
      "kernel_gradients": ("V1 train step: conv kernel gradients from XLA or by windows",
                           lambda: bench_kernel_gradients(rounds, quick, peak, report)),
      "conv_forms": ("train steps and lone convs: XLA's conv, Winograd's, the fused first block",
                     lambda: bench_conv_forms(rounds, quick, peak, report)),
      "conv_passes": ("lone convs at the networks' shapes: forward, input gradient, kernel "
                      "gradient", lambda: bench_conv_passes(rounds, quick, peak, report)),
      "lift_forms": ("train steps: the input lift turning images or kernels",
                     lambda: bench_lift_forms(rounds, quick, peak, report)),
      "head_apart": ("train steps: the head in every micro-batch or once per batch",
                     lambda: bench_head_apart(rounds, quick, peak, report)),
      "reduction_forms": ("train steps: Fourier transforms as dots or sums, bias gradients "
                          "as reductions or dots", lambda: bench_reduction_forms(
                              rounds, quick, peak, report)),
      "cpu_fusions": ("XLA CPU's YNNPACK fusions on and off, per compiled program",
                      lambda: bench_cpu_fusions(rounds, quick, peak, report)),
      "huge_pages": ("train steps with and without huge pages for malloc (child processes)",
                     lambda: bench_huge_pages(rounds, quick, report)),
      "minimal": ("minimal equivarification", lambda: bench_minimal(rounds, quick, report)),
      "groups": ("large groups (build time, peak memory)", lambda: bench_groups(quick, report)),
  }
  unknown = set(FLAGS.only) - set(sections)
  if unknown:
    raise app.UsageError(f"--only: unknown sections {sorted(unknown)}; choose from "
                         f"{list(sections)}")
  for name, (title, run) in sections.items():
    if not FLAGS.only or name in FLAGS.only:
      print(f"{title} ...", flush=True)
      run()
  report["bench_wall_s"] = time.time() - t0
  report["only"] = list(FLAGS.only)
  from experiments import bench_tables, timing
  md = timing.write_report(FLAGS.out, report, bench_tables.markdown(report))
  print(f"wrote {FLAGS.out} and {md} in {report['bench_wall_s']:.0f} s", file=sys.stderr)


def _define_flags():
  """The command's flags, defined only when it runs as a program."""
  flags.DEFINE_string("out", "runs/bench/bench.json", "Where to write the JSON results.")
  flags.DEFINE_bool("quick", False, "Fewer rounds and sizes (a smoke run of the benchmark).")
  flags.DEFINE_integer("rounds", 5, "Rounds per comparison (variants alternate in each).")
  flags.DEFINE_list("only", [], "Run only these sections (e.g. augmented_step); all if empty.")


if __name__ == "__main__":
  from experiments import host_memory
  host_memory.reexec_with_huge_pages()
  _define_flags()
  app.run(main)
