"""`make bench`'s sections `cpu_fusions`: whole train steps and the vmap lift compiled with
XLA CPU's fusions into YNNPACK on, off, or some of their kinds (``experiments.steps.
compiler_options``: what a config's ``cpu_fusions`` chooses among); and `reduction_forms`:
train steps with the Fourier transforms and the biases' gradients in each form, under the
fusions that choose them.

    python -m experiments.bench --only=cpu_fusions
    python -m experiments.bench --only=reduction_forms
"""

from __future__ import annotations

from experiments.bench_steps import step_flops
from experiments.timing import alternate, conv_macs, runner_conv_forms, train_step_runner


# XLA CPU's fusions into YNNPACK (XNNPACK's successor) per jit, by its DebugOptions' names:
# the compiler's default, none (the runner's "no_ynnpack"), all but its convolutions, its
# convolutions and dots alone (no elementwise or reduction fusions), and its dots alone (the
# runner's "ynnpack_dots").
def fusions() -> dict:
  """``{label: jax.jit compiler_options}`` of the variants :func:`bench_cpu_fusions` times."""
  from experiments import steps
  ynn = lambda *types: {steps.YNN_FUSION_OPTION: ",".join(f"LIBRARY_FUSION_TYPE_{t}"
                                                           for t in types)}
  return {"default": None, "no YNNPACK": steps.compiler_options("no_ynnpack"),
          "YNNPACK without convs": ynn("DOT", "ELTWISE", "REDUCE", "INDIVIDUAL_DOT"),
          "YNNPACK convs and dots": ynn("INDIVIDUAL_DOT", "INDIVIDUAL_CONVOLUTION"),
          "YNNPACK dots": steps.compiler_options("ynnpack_dots")}


def bench_cpu_fusions(rounds, quick, peak, report):
  """Train steps of the networks (the stacked default, make train's G-CNN, V1 as 4 x 32,
  MNIST-rot's C16 G-CNN without its batch norm), each in its config's conv forms, and the vmap
  lift over D4 at batch 128, compiled with each of :func:`fusions` (XLA CPU's default, no
  YNNPACK fusions, or some of their kinds; ``jax.jit(..., compiler_options=...)``, one program
  per variant, alternated in one run). A config with its own conv forms (V1's XLA convs) is
  also timed in the library's ("auto": Winograd's for V1's wide convs), compiled the default way.
  CPU only; an option this jaxlib does not know is reported, not raised."""
  import jax
  import jax.numpy as jnp
  import eqnn
  from eqnn import actions, models
  from experiments.configs import default, paper, rotated_mnist
  if jax.default_backend() != "cpu":
    print("  (CPU only: skipped on this backend)", flush=True)
    return
  variants = fusions()
  c4 = actions.rotations()
  nets = [("default", default.get_config("stacked"), c4, 128, 1),
          ("gcnn", default.get_config(), c4, 128, default.get_config().microbatches)]
  if not quick:
    rot = rotated_mnist.get_config()
    nets += [("paper_v1", paper.get_config(), c4, 128, 4),
             ("rotated_mnist (C16 G-CNN, no batch norm)", rot,
              actions.rotations(16, rot.interpolation), rot.batch_size, rot.microbatches)]
  for name, c, act, b, micro in nets:
    cfg = (tuple(c.conv_features), tuple(c.pools), tuple(c.dense_features))
    model = models.EquivariantCNN(act, *cfg, hidden=c.hidden)
    forms = runner_conv_forms((c.conv_form, c.kernel_gradient), model, b,
                              10 * act.group.order, micro, name, c.head_apart)
    model = model.clone(conv_form=forms[0], kernel_gradient=forms[1])
    # A config that sets its conv forms is also timed in the library's ("auto"), compiled
    # XLA's default way: what the config's choice is measured against.
    own_forms = forms != ("auto", "auto")
    cases = {label: (model, opts) for label, opts in variants.items()}
    if own_forms:
      cases["default, auto conv forms"] = (model.clone(conv_form="auto",
                                                       kernel_gradient="auto"), None)
    runs = {}
    for label, (net, opts) in cases.items():
      train, _, _ = train_step_runner(net, b, 10 * act.group.order, micro,
                                      compiler_options=opts, head_apart=c.head_apart)
      try:
        train()
      except Exception as e:      # an option this jaxlib's XLA does not know
        print(f"  {label}: not available in this jaxlib ({str(e).splitlines()[0][:80]})")
        continue
      runs[label] = train
    t = alternate(runs, 3 if name == "paper_v1" else rounds)
    # Executed in the config's forms: the comparison row is counted the same way, its
    # share of peak as for the same work.
    fwd = conv_macs(cfg, True, act.group, hidden=c.hidden, executed=True, conv_form=forms[0])
    for label, secs in t.items():
      row = {"case": f"{name} train step", "batch": b, "microbatches": micro, "fusions": label,
             "images_per_s": b / secs, "fraction_of_matmul_peak": step_flops(fwd, b) / secs / peak,
             "speedup": t["default"] / secs}
      report["cpu_fusions"].append(row)
      print(f"  {name:9s} batch {b} ({micro} x {b // micro}), {label:22s}: "
            f"{row['images_per_s']:8.1f} img/s ({100 * row['fraction_of_matmul_peak']:.0f}% of "
            f"peak), {row['speedup']:.2f}x the default", flush=True)
  # The lift: time(F_hat) / (|G| time(F)), both compiled with the same fusions.
  base = models.PlainCNN((16, 32, 32), (2, 2, 1), (128,))
  d4 = actions.rotations_reflections()
  x = jax.random.normal(jax.random.key(0), (128, 28, 28, 1))
  params = base.init(jax.random.key(1), x[:1])
  lifted = eqnn.equivarify(base.apply, d4, argnum=1, vectorize=True)      # the vmap's fusions
  fns = {}
  for label, opts in variants.items():
    for which, fn in (("F", base.apply), ("lift", lifted)):
      j = jax.jit(fn, compiler_options=opts)
      grad = jax.jit(jax.grad(lambda p, x, fn=fn: jnp.sum(fn(p, x) ** 2)), compiler_options=opts)
      try:
        j(params, x)
      except Exception:
        break
      fns[(label, which, "forward")] = (lambda j: lambda: j(params, x))(j)
      fns[(label, which, "gradient")] = (lambda j: lambda: j(params, x))(grad)
  # Forwards alternated with forwards and gradients with gradients, as the lift section
  # does: a few-millisecond forward timed after a gradient call ran up to 1.4x slower.
  t = {}
  for d in ("forward", "gradient"):
    t.update(alternate({k: f for k, f in fns.items() if k[2] == d}, 5 * rounds))
  for label in variants:
    if (label, "lift", "forward") not in t:
      continue
    ratio = {d: t[(label, "lift", d)] / (d4.group.order * t[(label, "F", d)])
             for d in ("forward", "gradient")}
    row = {"case": "vmap lift over D4 of a plain CNN", "batch": 128, "microbatches": 1,
           "fusions": label, "forward_ratio": ratio["forward"],
           "gradient_ratio": ratio["gradient"],
           "lift_forward_ms": 1e3 * t[(label, "lift", "forward")],
           "lift_gradient_ms": 1e3 * t[(label, "lift", "gradient")],
           "speedup_forward": t[("default", "lift", "forward")] / t[(label, "lift", "forward")],
           "speedup_gradient": t[("default", "lift", "gradient")] / t[(label, "lift", "gradient")]}
    report["cpu_fusions"].append(row)
    print(f"  vmap lift over D4, batch 128, {label:22s}: time(F_hat)/(|G| time(F)) = "
          f"{ratio['forward']:.2f} forward, {ratio['gradient']:.2f} gradient (the lift itself "
          f"{row['lift_forward_ms']:.1f} / {row['lift_gradient_ms']:.1f} ms)", flush=True)


def bench_reduction_forms(rounds, quick, peak, report):
  """Train steps traced with the Fourier transforms as dots or as sums (``eqnn.fourier.
  TRANSFORMS``) and the biases' gradients as reductions or dots (``eqnn.spatial.BIAS_SUMS``),
  alternated, each compiled with two of XLA CPU's fusions: the one its config chose on a
  2-core Intel Xeon (V1: XLA's convs, YNNPACK's dots alone; the paper's stacking: no
  YNNPACK) and XLA's default. ``experiments.fusions.jit_for`` takes sums and dots where the
  fusions leave reductions to XLA, dots and reductions otherwise: this measures that rule."""
  from experiments import fusions as fusions_lib
  from experiments.bench_steps import networks
  # The forms a step is traced in (experiments.fusions.jit_for): XLA's default fusions' pair,
  # the Fourier transforms as sums alone, and the pair for XLA's own reductions.
  variants = (fusions_lib.FUSED_FORMS, ("sums", "reduce"), fusions_lib.NATIVE_FORMS)
  nets = networks()
  cases = ([("default", 32, 2, "no_ynnpack")] if quick else
           [("paper_v1", 128, 8, f) for f in ("ynnpack_dots", "default")]
           + [("default", 128, 8, f) for f in ("no_ynnpack", "default")])
  model = lambda name: (nets[name].model().clone(conv_form="xla", kernel_gradient="xla")
                        if name == "paper_v1" else nets[name].model())
  runs = {(name, b, m, f, forms): train_step_runner(
              model(name), b, 40, m, fusions_lib.compiler_options(f), nets[name].head_apart,
              forms=forms)[0]
          for name, b, m, f in cases for forms in variants}
  t = alternate(runs, rounds if quick else 5, warmup=2)
  for name, b, m, f in cases:
    net = nets[name]
    fwd = conv_macs(net.cfg, True, hidden=net.hidden, executed=True,
                    conv_form=model(name).conv_form)
    options = fusions_lib.compiler_options(f)
    row = {"net": name, "batch": b, "microbatches": m, "cpu_fusions": f,
           "chosen": "+".join(fusions_lib.traced_forms(options))}
    for forms in variants:
      key = "+".join(forms)
      row[f"{key}_images_per_s"] = b / t[(name, b, m, f, forms)]
      row[f"{key}_fraction_of_peak"] = step_flops(fwd, b) / t[(name, b, m, f, forms)] / peak
    row["speedup"] = row["sums+dot_images_per_s"] / row["dots+reduce_images_per_s"]
    report["reduction_forms"].append(row)
    print(f"  {name:9s} batch {b} ({m} x {b // m}), {f} fusions: "
          + ", ".join(f"{'+'.join(k)} {row['+'.join(k) + '_images_per_s']:.1f} img/s"
                      for k in variants)
          + f" (sums+dot {row['speedup']:.2f}x dots+reduce; the step takes {row['chosen']})",
          flush=True)
