"""`make bench`'s section `conv_forms`: XLA's conv against Winograd's F(2 x 2, 3 x 3)
(:func:`eqnn.spatial.conv`'s ``form``) and the fused first block (:func:`eqnn.spatial.
conv_relu_pool`'s "taps"), on whole train steps and on lone convs; and `conv_passes`: each
pass of the networks' lone convs (forward, input gradient, kernel gradient) on its own.

    python -m experiments.bench --only=conv_forms
    python -m experiments.bench --only=conv_passes
"""

from __future__ import annotations

from experiments.bench_steps import form_step_times, lone_conv_rows, step_flops
from experiments.timing import alternate

# Lone 3x3 convs at V1's and the default network's shapes: (batch, size, C_in, C_out).
LONE_CONVS = [(32, 28, 160, 160), (32, 28, 128, 128), (32, 28, 80, 80), (32, 28, 160, 64),
              (32, 28, 80, 32), (32, 14, 256, 256), (32, 7, 256, 256)]


def bench_conv_forms(rounds, quick, peak, report):
  """Whole train steps with every conv XLA's and the first block composed (``form="xla"``;
  the kernel gradients by "auto", and for V1 also by XLA: its config's forms) against
  ``form="auto"`` (the library's default: Winograd for the
  convs of at least ``spatial.WINOGRAD_MIN_IN`` in and ``WINOGRAD_MIN_OUT`` out channels, in
  V1 80 -> 80, 160 -> 160 and 160 -> 64; the first block fused in the taps form), each
  network's forms alternated in one run: the authors' V1 at batch 128 (as 4 x 32 and
  8 x 16, also with Winograd for every 3x3 conv), the default (stacked) network at 128 and
  make train's G-CNN network (128 as the runner's 8 x 16); then lone convs, forward and
  backward, in each form."""
  from eqnn import spatial
  # "xla_xla": XLA's convs and XLA's kernel gradients (V1's config since 2026-12-03); "xla"
  # keeps the kernel gradients' "auto" (windows for V1's wide convs).
  all_forms, two = ("xla", "xla_xla", "auto", "winograd"), ("xla", "auto")
  context = lambda mode: (spatial.forms("xla", "xla") if mode == "xla_xla"
                          else spatial.conv_forms(mode))
  cases = ([("paper_v1", 8, (1,), all_forms, rounds), ("default", 8, (1,), two, rounds)]
           if quick else [("paper_v1", 128, (4, 8), all_forms, 3),
                          ("default", 128, (1,), two, 5), ("gcnn", 128, (8,), two, 5)])
  for net, b, slices, forms, net_rounds in cases:
    t, fwd = form_step_times(b, slices, forms, context, net_rounds, net=net)
    for micro in slices:
      row = {"net": net, "batch": b, "microbatches": micro,
             "speedup": t[(micro, "xla")] / t[(micro, "auto")]}
      for form in forms:
        row[f"{form}_images_per_s"] = b / t[(micro, form)]
        row[f"{form}_fraction_of_peak"] = step_flops(fwd, b) / t[(micro, form)] / peak
      report["conv_forms"].append(row)
      print(f"  {net} batch {b} ({micro} x {b // micro}): " + ", ".join(
          f"{form} {row[f'{form}_images_per_s']:.1f} img/s "
          f"({100 * row[f'{form}_fraction_of_peak']:.0f}% of peak)" for form in forms)
          + f": auto {row['speedup']:.2f}x XLA's", flush=True)
  _lone_convs(rounds, quick, report)


def _lone_convs(rounds, quick, report):
  import jax
  import jax.numpy as jnp
  from eqnn import spatial
  gradient = lambda form: jax.jit(jax.grad(lambda x, w: jnp.sum(
      jnp.tanh(spatial.conv(x, w, form=form))), (0, 1)))
  for row in lone_conv_rows(LONE_CONVS, rounds, quick, "winograd", gradient):
    report["lone_conv_forms"].append(row)
    print(f"  3x3 conv {row['c_in']}->{row['c_out']} @{row['size']}, batch {row['batch']}, "
          f"forward and backward: XLA {row['xla_ms']:.1f} ms, Winograd "
          f"{row['winograd_ms']:.1f} ms ({row['speedup']:.2f}x)", flush=True)


# The networks' convs as their steps run them: (network, batch per slice, size, C_in, C_out).
# make train's G-CNN convs (8 -> 16 and 16 -> 32 per element, expanded to the stack) at its
# 16-image slices and at the whole batch; V1's Fourier units (C4: two real irreps, one
# complex as twice the channels) at its 16-image slices.
PASS_CONVS = [("gcnn", 16, 14, 32, 64), ("gcnn", 128, 14, 32, 64), ("gcnn", 16, 7, 64, 128),
              ("gcnn", 128, 7, 64, 128), ("paper_v1", 16, 28, 80, 80),
              ("paper_v1", 16, 28, 160, 160), ("paper_v1", 16, 28, 80, 32),
              ("paper_v1", 16, 28, 160, 64)]
PASSES = ("forward", "input_gradient", "kernel_gradient")


def bench_conv_passes(rounds, quick, peak, report):
  """Each pass of the networks' lone 3x3 convs on its own, XLA's conv (the forms their configs
  run), compiled with each of XLA CPU's fixed fusion choices, all alternated in one run: the
  forward pass, the input's gradient and the kernel's gradient (the same multiply-adds each),
  as a share of the run's matmul peak, and the CPU cores each kept busy (the process's CPU time
  over its wall time). Where the kernel gradient runs slower than the other two, it bounds
  every step built on these convs; its cores say whether the loss is in XLA's threading of it.
  """
  import functools
  import jax
  from eqnn import spatial
  from experiments import fusions
  runs = {}
  for net, b, h, c_in, c_out in PASS_CONVS[:1] if quick else PASS_CONVS:
    b = 4 if quick else b
    x = jax.random.normal(jax.random.key(0), (b, h, h, c_in))
    w = jax.random.normal(jax.random.key(1), (3, 3, c_in, c_out)) / (3 * c_in ** 0.5)
    ct = jax.random.normal(jax.random.key(2), (b, h, h, c_out))
    conv = functools.partial(spatial.conv, form="xla", weight_grad="xla")
    passes = {"forward": lambda x, w, ct: conv(x, w),
              "input_gradient": lambda x, w, ct: jax.vjp(lambda x: conv(x, w), x)[1](ct),
              "kernel_gradient": lambda x, w, ct: jax.vjp(lambda w: conv(x, w), w)[1](ct)}
    for fusion in fusions.FIXED_FUSIONS:
      for name, fn in passes.items():
        jitted = jax.jit(fn, compiler_options=fusions.compiler_options(fusion))
        runs[(net, b, h, c_in, c_out, fusion, name)] = functools.partial(jitted, x, w, ct)
  cores = {}
  t = alternate(runs, rounds, reps=3, cores=cores)
  for (net, b, h, c_in, c_out, fusion, name), secs in t.items():
    if name != PASSES[0]:
      continue
    flops = 2 * b * h * h * 9 * c_in * c_out
    row = {"net": net, "batch": b, "size": h, "c_in": c_in, "c_out": c_out,
           "cpu_fusions": fusion}
    for p in PASSES:
      row[f"{p}_ms"] = 1e3 * t[(net, b, h, c_in, c_out, fusion, p)]
      row[f"{p}_fraction_of_peak"] = flops / t[(net, b, h, c_in, c_out, fusion, p)] / peak
      row[f"{p}_cores"] = cores[(net, b, h, c_in, c_out, fusion, p)]
    report["conv_passes"].append(row)
    print(f"  {net} 3x3 conv {c_in}->{c_out} @{h}, batch {b}, {fusion}: " + ", ".join(
        f"{p.replace('_', ' ')} {row[f'{p}_ms']:.2f} ms "
        f"({100 * row[f'{p}_fraction_of_peak']:.0f}%, {row[f'{p}_cores']:.2f} cores)"
        for p in PASSES), flush=True)
