"""`make bench`'s sections that time whole train steps: the default and V1 networks (images/s
and executed FLOP/s against the machine's matmul peak), the MNIST-rot step with its
augmentation as one jitted program or two, and V1's conv kernel gradients from XLA or by
windows, the input lift turning images or kernels, and the head in every micro-batch or once
per batch. :mod:`experiments.bench` runs them
beside the layer-level sections.
"""

from __future__ import annotations

from typing import NamedTuple

from experiments.timing import (FUSION_NOTES, alternate, conv_macs, runner_forms_and_fusions,
                                train_step_runner)


def step_flops(forward_macs: int, batch: int) -> int:
  """FLOPs of one train step: the forward pass and two backward products (inputs and
  weights), 3x the forward multiply-adds (the first layer's input gradient is not needed, and
  is not subtracted here), 2 FLOPs each."""
  return 6 * forward_macs * batch


class Net(NamedTuple):
  """A benched network as its config says: sizes ``(conv_features, pools, dense_features)``,
  hidden layers, XLA CPU fusions (possibly "auto"), conv forms, micro-batches (0: the
  runner measures them) and whether the step runs the head apart from the slices."""
  cfg: tuple
  hidden: str
  cpu_fusions: str
  conv_form: str
  kernel_gradient: str
  microbatches: int
  head_apart: bool

  def model(self, forms: bool = True):
    """Its C4 EquivariantCNN in its config's conv forms ("measured": the library's, which
    the runner measures micro-batches in; :meth:`runner_step` measures the forms);
    ``forms=False``: left to the surrounding block's default (:func:`eqnn.spatial.
    conv_forms`), for benches that vary them."""
    from eqnn import actions, models
    from experiments import tasks
    pair = tasks.fixed_conv_forms(self.conv_form, self.kernel_gradient)
    kw = dict(conv_form=pair[0], kernel_gradient=pair[1]) if forms else {}
    return models.EquivariantCNN(actions.rotations(), *self.cfg, hidden=self.hidden, **kw)

  def runner_step(self, batch: int, microbatches: int, label: str = ""):
    """``(model, cpu_fusions, train_step_runner's step)`` as the runner builds them at this
    batch and slicing: the config's conv forms and fusions, or those measured here as it
    measures them (:func:`experiments.timing.runner_forms_and_fusions`)."""
    pair, fusions, built = runner_forms_and_fusions(
        (self.conv_form, self.kernel_gradient), self.cpu_fusions, self.model(), batch, 40,
        microbatches, label, self.head_apart)
    return self.model().clone(conv_form=pair[0], kernel_gradient=pair[1]), fusions, built


def networks() -> dict[str, Net]:
  """The benched networks, as their configs say."""
  from experiments.configs import default, paper
  return {name: Net((tuple(c.conv_features), tuple(c.pools), tuple(c.dense_features)), c.hidden,
                    c.cpu_fusions, c.conv_form, c.kernel_gradient, c.microbatches,
                    c.head_apart)
          for name, c in (("default", default.get_config("stacked")),
                          ("gcnn", default.get_config()), ("paper_v1", paper.get_config()))}


def bench_networks(rounds, quick, peak, report):
  """The networks' train step and inference at several batch sizes: "default", the paper's
  stacking with 16-32-64 filters (``default.py:stacked``, make train's network until
  2026-12-02, kept under its old name so that earlier tables compare), "gcnn", make train's
  network now (G-CNN hidden layers, 8-16-32, the batch as its config's 2 x 64 and, as before
  2026-12-04, 8 x 16), and the authors' V1; with the CPU cores each train step keeps busy."""
  nets = networks()
  # (batch, micro-batches): a batch of 128 as 4 x 32 is the same step (tests/train_test.py).
  batches = {"default": [(128, 1)] if quick else [(64, 1), (128, 1), (256, 1)],
             "gcnn": [(128, 2)] if quick else [(128, 1), (128, 2), (128, 8)],
             "paper_v1": [(8, 1)] if quick else [(32, 1), (128, 1), (128, 4)]}
  for name, net in nets.items():
    cfg, hidden = net.cfg, net.hidden
    for b, micro in batches[name]:
      model, chosen, (train, infer, _) = net.runner_step(b, micro, name)
      cores = {}
      t = alternate({"train": train, "infer": infer}, 3 if name == "paper_v1" else rounds,
                    cores=cores)
      fwd = conv_macs(cfg, True, hidden=hidden, executed=True, conv_form=model.conv_form)
      equivalent = conv_macs(cfg, True, hidden=hidden)
      dense_fwd = conv_macs(cfg, False)
      row = {"net": name, "batch": b, "microbatches": micro, "cpu_fusions": chosen,
             "train_images_per_s": b / t["train"],
             "infer_images_per_s": b / t["infer"], "train_step_s": t["train"],
             "train_cores": cores["train"]}
      row["executed_gflops"] = step_flops(fwd, b) / t["train"] / 1e9
      row["conv_equivalent_gflops"] = step_flops(equivalent, b) / t["train"] / 1e9
      row["dense_equivalent_gflops"] = step_flops(dense_fwd, b) / t["train"] / 1e9
      row["fraction_of_matmul_peak"] = row["executed_gflops"] * 1e9 / peak
      report["networks"].append(row)
      slices = f" ({micro} x {b // micro})" if micro > 1 else ""
      slices += FUSION_NOTES.get(chosen, "")
      print(f"  {name:9s} batch {b:4d}{slices:10s}: train {row['train_images_per_s']:8.1f} img/s, "
            f"infer {row['infer_images_per_s']:8.1f} img/s, executed "
            f"{row['executed_gflops']:.1f} GFLOP/s ({100 * row['fraction_of_matmul_peak']:.0f}% "
            f"of peak), dense-equivalent {row['dense_equivalent_gflops']:.1f} GFLOP/s, "
            f"{row['train_cores']:.2f} cores busy training", flush=True)


def bench_augmented_step(rounds, quick, report):
  """The MNIST-rot config's train step (random continuous turns of every training digit, then
  the update) as two jitted programs, as the runner runs it, and compiled as one."""
  import jax
  import jax.numpy as jnp
  from experiments import steps, tasks
  from experiments.configs import rotated_mnist
  c = rotated_mnist.get_config()
  if quick:
    c.group, c.conv_features = "C8", (4, 8, 16)
  task = tasks.build_task(c)
  n = 4 * c.batch_size
  inputs = jax.random.uniform(jax.random.key(0), (n, 28, 28, 1))
  labels = jnp.zeros((n,), jnp.int32)
  perm, key = jnp.arange(n), jax.random.key(1)
  runs = {}
  for programs in (2, 1):
    step = steps.config_train_step(task, c, 4, c.microbatches, programs=programs)
    holder = [steps.create_train_state(task, c, jax.random.key(2), 1000), jnp.array(True)]

    def run(step=step, holder=holder):
      holder[0], loss, holder[1] = step(holder[0], inputs, labels, perm, key, holder[1])
      return loss
    runs[programs] = run
  t = alternate(runs, rounds)
  row = {"config": f"rotated_mnist ({c.group}, {'x'.join(map(str, c.conv_features))})",
         "batch": c.batch_size, "microbatches": c.microbatches, "two_programs_ms": 1e3 * t[2],
         "one_program_ms": 1e3 * t[1], "speedup": t[1] / t[2]}
  report["augmented_step"].append(row)
  print(f"  {row['config']} batch {row['batch']}: two programs {row['two_programs_ms']:.0f} ms, "
        f"one program {row['one_program_ms']:.0f} ms ({row['speedup']:.2f}x)", flush=True)


def form_step_times(b, slices, modes, context, rounds, net="paper_v1"):
  """``({(slices, mode): seconds per step}, forward multiply-adds per image)`` of a benched
  network's train step (:func:`networks`, the authors' V1 by default) at batch b, each traced
  inside ``context(mode)`` (a form's block default, which acts when the step is traced: its
  first call), all alternated."""
  the_net = networks()[net]
  cfg, hidden = the_net.cfg, the_net.hidden
  runs = {}
  for micro in slices:
    for mode in modes:
      train, _, _ = train_step_runner(the_net.model(forms=False), b, 40, micro,
                                      head_apart=the_net.head_apart)

      def run(train=train, mode=mode):
        with context(mode):
          return train()
      runs[(micro, mode)] = run
  return alternate(runs, rounds), conv_macs(cfg, True, hidden=hidden)


def bench_kernel_gradients(rounds, quick, peak, report):
  """The authors' V1 network's train step at batch 128 (as 8 x 16, the runner's slices for
  that config, 4 x 32 and 2 x 64) with every conv's kernel gradient from XLA, and with the
  default ``weight_grad="auto"`` (shifted-window matmuls for the wide convs,
  :func:`eqnn.spatial.conv`), all alternated in one run."""
  from eqnn import spatial
  b, slices = (8, (1,)) if quick else (128, (8, 4, 2))
  t, fwd = form_step_times(b, slices, ("xla", "auto"), spatial.kernel_gradients,
                         rounds if quick else 3)
  _lone_kernel_gradients(rounds, quick, report)
  for micro in slices:
    tx, ta = t[(micro, "xla")], t[(micro, "auto")]
    row = {"net": "paper_v1", "batch": b, "microbatches": micro,
           "xla_images_per_s": b / tx, "auto_images_per_s": b / ta, "speedup": tx / ta,
           "xla_fraction_of_peak": step_flops(fwd, b) / tx / peak,
           "auto_fraction_of_peak": step_flops(fwd, b) / ta / peak}
    report["kernel_gradients"].append(row)
    print(f"  paper_v1 batch {b} ({micro} x {b // micro}): kernel gradients from XLA "
          f"{row['xla_images_per_s']:.1f} img/s ({100 * row['xla_fraction_of_peak']:.0f}% of "
          f"peak), auto {row['auto_images_per_s']:.1f} img/s "
          f"({100 * row['auto_fraction_of_peak']:.0f}%): {row['speedup']:.2f}x", flush=True)


LIFT_FORMS = ("vmap", "patches", "kernels")


def bench_lift_forms(rounds, quick, peak, report):
  """Whole train steps with the input lift in each of its forms, alternated: turning the
  images (``"vmap"``, the copies through XLA's conv; ``"patches"``, their windows times the
  kernel in one matmul) or the kernels (``"kernels"``: one conv with |G|-fold output
  channels, each slot turned back, with the first block's ReLU and pooling fused where the
  window tiles the map, as "auto" runs it since 2026-12-04; not for resampled turns). The
  default network over C4 and D4 at batch 128, V1 at 128 as 8 x 16, MNIST-rot's C16 network
  (without its batch norm) at 64 as 2 x 32."""
  from eqnn import actions, models
  from experiments.configs import default, paper, rotated_mnist
  nets = []
  stacked = default.get_config("stacked")
  for name, c, act, b, micro in (("default", stacked, actions.rotations(), 128, 1),
                                 ("default over D4", stacked,
                                  actions.rotations_reflections(), 128, 1),
                                 ("paper_v1", paper.get_config(), actions.rotations(), 128, 8),
                                 ("rotated_mnist (C16, no batch norm)", rotated_mnist.get_config(),
                                  actions.rotations(16, "bicubic"), 64, 2)):
    cfg = (tuple(c.conv_features), tuple(c.pools), tuple(c.dense_features))
    nets.append((name, cfg, act, 16 if quick else b, 1 if quick else micro))
  if quick:
    nets = nets[:1]
  # Turning kernels needs the grid's own symmetries (not C16's resampled turns).
  forms = lambda act: [i for i in LIFT_FORMS if i != "kernels" or not act.approximate]
  runs = {}
  for name, cfg, act, b, micro in nets:
    for impl in forms(act):
      model = models.EquivariantCNN(act, *cfg, impl=f"lift_conv={impl}")
      runs[(name, impl)] = train_step_runner(model, b, 10 * act.group.order, micro)[0]
  t = alternate(runs, rounds if quick else 5)
  for name, cfg, act, b, micro in nets:
    flops = step_flops(conv_macs(cfg, True, act.group, executed=True), b)
    row = {"net": name, "batch": b, "microbatches": micro}
    for impl in forms(act):
      row[f"{impl}_images_per_s"] = b / t[(name, impl)]
      row[f"{impl}_fraction_of_peak"] = flops / t[(name, impl)] / peak
    report["lift_forms"].append(row)
    print(f"  {name} batch {b} ({micro} x {b // micro}): " + ", ".join(
        f"{impl} {row[f'{impl}_images_per_s']:.1f} img/s "
        f"({t[(name, 'vmap')] / t[(name, impl)]:.2f}x)" for impl in forms(act)), flush=True)


# (batch, size, C_in, C_out) of lone 3x3 convs: V1's Fourier units (80 -> 80, 160 -> 160,
# 160 -> 64, 80 -> 32) and the shapes below spatial.conv's "auto" thresholds.
LONE_CONVS = [(25, 28, 160, 160), (32, 28, 80, 80), (32, 28, 160, 64), (32, 28, 80, 32),
              (32, 28, 64, 64), (32, 14, 48, 96), (32, 14, 16, 32)]


def lone_conv_rows(shapes, rounds, quick, other, gradient):
  """Lone 3x3 convs ``(batch, size, C_in, C_out)``, XLA's form against ``other``, alternated:
  rows with ``xla_ms``, ``{other}_ms`` and the speed-up. ``gradient(form)``: what to time, a
  jitted function of ``(x, w)``."""
  import jax
  runs = {}
  for b, h, c_in, c_out in shapes[:1] if quick else shapes:
    b = 4 if quick else b
    x = jax.random.normal(jax.random.key(0), (b, h, h, c_in))
    w = jax.random.normal(jax.random.key(1), (3, 3, c_in, c_out)) / (3 * c_in ** 0.5)
    for form in ("xla", other):
      runs[(b, h, c_in, c_out, form)] = (lambda g, x=x, w=w: lambda: g(x, w))(gradient(form))
  t = alternate(runs, rounds)
  rows = []
  for (b, h, c_in, c_out, form), secs in t.items():
    if form == "xla":
      rows.append({"batch": b, "size": h, "c_in": c_in, "c_out": c_out, "xla_ms": 1e3 * secs,
                   f"{other}_ms": 1e3 * t[(b, h, c_in, c_out, other)],
                   "speedup": secs / t[(b, h, c_in, c_out, other)]})
  return rows


def _lone_kernel_gradients(rounds, quick, report):
  """The kernel gradient alone (``jax.grad`` in the kernel) of lone convs, XLA's against the
  windows, alternated: the evidence for "auto"'s thresholds."""
  import jax
  import jax.numpy as jnp
  from eqnn import spatial
  gradient = lambda mode: jax.jit(jax.grad(lambda x, w: jnp.sum(
      spatial.conv(x, w, weight_grad=mode) ** 2), 1))
  for row in lone_conv_rows(LONE_CONVS, rounds, quick, "windows", gradient):
    report["lone_kernel_gradients"].append(row)
    print(f"  kernel gradient of a 3x3 conv {row['c_in']}->{row['c_out']} @{row['size']}, "
          f"batch {row['batch']}: XLA {row['xla_ms']:.1f} ms, windows {row['windows_ms']:.1f} "
          f"ms ({row['speedup']:.2f}x)", flush=True)


def bench_head_apart(rounds, quick, peak, report):
  """Whole train steps with the head in every micro-batch against once on the whole batch's
  features (``head_apart``, :func:`experiments.steps.update`), alternated: the authors' V1 at
  128 as 4, 8 and 16 slices and make train's network as 8 x 16, in their configs' conv forms
  (V1's "measured": the library's here, not measured), compiled XLA's default way (not the
  configs' fusions: the comparison is the head's place, the rest alike)."""
  nets = networks()
  cases = ([("gcnn", 32, 2)] if quick else
           [("paper_v1", 128, m) for m in (4, 8, 16)] + [("gcnn", 128, 8)])
  runs = {(name, b, m, apart): train_step_runner(nets[name].model(), b, 40, m,
                                                 head_apart=apart)[0]
          for name, b, m in cases for apart in (False, True)}
  t = alternate(runs, rounds if quick else 5, warmup=2)
  for name, b, m in cases:
    net = nets[name]
    fwd = conv_macs(net.cfg, True, hidden=net.hidden, executed=True,
                    conv_form=net.model().conv_form)
    row = {"net": name, "batch": b, "microbatches": m}
    for label, apart in (("in_slices", False), ("apart", True)):
      row[f"{label}_images_per_s"] = b / t[(name, b, m, apart)]
      row[f"{label}_fraction_of_peak"] = step_flops(fwd, b) / t[(name, b, m, apart)] / peak
    row["speedup"] = row["apart_images_per_s"] / row["in_slices_images_per_s"]
    report["head_apart"].append(row)
    print(f"  {name:9s} batch {b} ({m} x {b // m}): head in every slice "
          f"{row['in_slices_images_per_s']:.1f} img/s, once per batch "
          f"{row['apart_images_per_s']:.1f} img/s ({row['speedup']:.2f}x)", flush=True)
