"""`make bench`'s results as markdown tables (runs/bench/bench.md, copied into docs/performance.md)."""

from __future__ import annotations

from experiments.bench_conv_forms import PASSES
from experiments.bench_steps import LIFT_FORMS
from experiments.timing import FUSION_NOTES


def _slices(r) -> str:
  """A train step's batch and its micro-batches: "128 (8 x 16)"."""
  return f"{r['batch']} ({r['microbatches']} x {r['batch'] // r['microbatches']})"


def _rate(r, form: str) -> str:
  """A form's images/s and share of the run's matmul peak: "54.6 img/s (44% of peak)"."""
  if f"{form}_images_per_s" not in r:
    return "not timed"
  return (f"{r[f'{form}_images_per_s']:.1f} img/s "
          f"({100 * r[f'{form}_fraction_of_peak']:.0f}% of peak)")


def gflops_cell(r, key: str, peak: float) -> str:
  """A row's GFLOP/s field and its share of the peak, "120 (60%)" ("n/a" in reports written
  before the field was)."""
  return f"{r[key]:.0f} ({100 * r[key] / peak:.0f}%)" if key in r else "n/a"


def _forms_table(rows, headers: list[str], forms=("xla", "auto")) -> list[str]:
  """A train step in two or three forms: each form's rate, then auto's speed-up over XLA's."""
  if not rows:
    return []
  out = ["", "| train step | batch | " + " | ".join(headers) + " | speed-up of auto |",
         "| " + " | ".join(["---"] * (len(headers) + 3)) + " |"]
  return out + [f"| {r['net']} | {_slices(r)} | " + " | ".join(_rate(r, f) for f in forms)
                + f" | {r['speedup']:.2f}x |" for r in rows]


def _passes_share(r) -> str:
  """The three passes' share of the peak together, and what it would be with the kernel
  gradient at the forward pass's rate: "57% (71% so)"."""
  total = sum(r[f"{p}_ms"] for p in PASSES)
  evened = total - r["kernel_gradient_ms"] + r["forward_ms"]
  share = 3 * r["forward_ms"] * r["forward_fraction_of_peak"]
  return (f"{100 * share / total:.0f}% ({100 * share / evened:.0f}% with the kernel gradient "
          f"at the forward's rate)")


def _lone_table(rows, title: str, other: str) -> list[str]:
  """Lone convs timed in XLA's form and ``other`` (bench_steps.lone_conv_rows), as lines."""
  if not rows:
    return []
  out = ["", f"| {title} | batch | XLA | {other.capitalize()} | speed-up |",
         "| --- | --- | --- | --- | --- |"]
  return out + [f"| {r['c_in']} -> {r['c_out']} @{r['size']} | {r['batch']} | "
                f"{r['xla_ms']:.1f} ms | {r[f'{other}_ms']:.1f} ms | {r['speedup']:.2f}x |"
                for r in rows]


def markdown(report) -> str:
  """The run's tables, as `make bench` writes them to bench.md."""
  peak = report["matmul_peak_gflops"]
  out = [f"float32 matmul peak through JAX, measured in the same run: **{peak:.0f} GFLOP/s** "
         f"({report['machine']['cpus']} CPUs, jax {report['machine']['jax']}; huge pages for "
         f"malloc: {report['machine'].get('huge_pages', 'not recorded')})."]
  # A section that did not run (``--only``) has no rows and gets no table.
  if report.get("networks"):
    out += ["", "| network | batch | train img/s | inference img/s | executed GFLOP/s (% of "
            "peak) | conv-equivalent GFLOP/s (% of peak) | dense-equivalent GFLOP/s | CPU "
            "cores busy training |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
  for r in report.get("networks", []):
    b = f"{r['batch']}" + (f" ({r['microbatches']} x {r['batch'] // r['microbatches']})"
                           if r["microbatches"] > 1 else "")
    b += FUSION_NOTES.get(r.get("cpu_fusions"), "")
    out.append(f"| {r['net']} | {b} | {r['train_images_per_s']:.1f} | "
               f"{r['infer_images_per_s']:.1f} | {r['executed_gflops']:.0f} "
               f"({100 * r['fraction_of_matmul_peak']:.0f}%) | "
               f"{gflops_cell(r, 'conv_equivalent_gflops', peak)} | "
               f"{r['dense_equivalent_gflops']:.0f} | "
               + f"{r['train_cores']:.2f} |")
  if report.get("networks"):
    out += ["", "Executed: convs in Winograd's form (where a config's `conv_form` takes it) at "
            "their 16 products per 2 x 2 output tile; conv-equivalent: every conv counted as a "
            "direct conv. Each step built and compiled as its config says (its conv forms; "
            "\"no YNNPACK\": without XLA CPU's YNNPACK fusions, \"YNNPACK dots only\": its "
            "dots alone; a config's `cpu_fusions = \"auto\"` measured first, as the runner "
            "does)."]
  if report.get("lift_overhead"):
    out += ["", "| lift of a plain CNN over | how | batch | time(F_hat) / (\\|G\\| time(F)), "
            "forward | gradient | gradient's compile |", "| --- | --- | --- | --- | --- | --- |"]
  for r in report.get("lift_overhead", []):
    out.append(f"| {r['group']} (\\|G\\| = {r['order']}) | {r['lift']} | {r['batch']} | "
               f"{r['forward_ratio']:.2f} | {r['gradient_ratio']:.2f} | "
               f"{r.get('gradient_compile_s', float('nan')):.1f} s |")
  if report.get("lift_bytes_per_example"):
    out += ["", f"F's batched values per image, which \"auto\" sizes its calls by "
            f"(eqnn.lift.fold_plan): {report['lift_bytes_per_example']:,} bytes."]
  if report.get("lift_overhead_eager"):
    out += ["", "Un-jitted calls of the lift over D4 at batch 8 (no compilation; \"auto\" proves "
            "F per example at every call): " + ", ".join(
                f"{k} {v:.1f} ms" for k, v in report["lift_overhead_eager"].items()) + "."]
  if report.get("layer_variants"):
    out += ["", "| layer (fwd+bwd) | implementation | time | compile | peak memory |",
            "| --- | --- | --- | --- | --- |"]
  for r in report.get("layer_variants", []):
    out.append(f"| {r['layer']} | {r['impl']} | {r['fwd_bwd_ms']:.1f} ms | "
               f"{r['compile_s']:.2f} s | {r['peak_bytes'] / 2**20:.1f} MiB |")
  if report.get("auto_choices"):
    out += ["", "| layer | `impl=\"auto\"` runs | fastest in this run |", "| --- | --- | --- |"]
  for r in report.get("auto_choices", []):
    out.append(f"| {r['layer']} | {r['auto']} | {r['fastest']} |")
  if report.get("cn_scaling"):
    out += ["", "| C_n, 16/32/32 filters per element | batch | train step | vs C4 | input lift "
            "fwd+bwd | vs C4 | group conv 16->32 @14, Fourier (units) | expanded (units) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in report["cn_scaling"]:
      out.append(f"| C{r['n']} | {r['batch']} | {r['train_step_ms']:.1f} ms | "
                 f"{r['step_ratio_to_c4']:.2f}x | {r['lift_fwd_bwd_ms']:.1f} ms | "
                 f"{r['lift_ratio_to_c4']:.2f}x | {r['group_conv_fourier_ms']:.1f} ms "
                 f"({r['fourier_units']}) | {r['group_conv_expanded_ms']:.1f} ms "
                 f"({r['expanded_units']}) |")
  if report.get("augmented_step"):
    out += ["", "| train step with random turns of the batch | batch | two programs (the runner's) "
            "| one program | speed-up |", "| --- | --- | --- | --- | --- |"]
    for r in report["augmented_step"]:
      b = f"{r['batch']}" + (f" ({r['microbatches']} x {r['batch'] // r['microbatches']})"
                             if r["microbatches"] > 1 else "")
      out.append(f"| {r['config']} | {b} | {r['two_programs_ms']:.0f} ms | "
                 f"{r['one_program_ms']:.0f} ms | {r['speedup']:.2f}x |")
  out += _forms_table(report.get("kernel_gradients"), ["kernel gradients from XLA",
                                                       "`weight_grad=\"auto\"` (the default)"])
  out += _lone_table(report.get("lone_kernel_gradients"), "kernel gradient of a lone 3x3 conv",
                     "windows")
  from eqnn import spatial
  out += _forms_table(report.get("conv_forms"), [
      "XLA's convs, first block composed (`form=\"xla\"`)",
      "the same with XLA's kernel gradients (V1's config)",
      f"`form=\"auto\"` (the default: Winograd for the 3x3 convs of >= "
      f"{spatial.WINOGRAD_MIN_IN} in and {spatial.WINOGRAD_MIN_OUT} out channels, the first "
      f"block fused in the taps form)",
      "Winograd for every 3x3 conv"], ("xla", "xla_xla", "auto", "winograd"))
  if report.get("conv_forms"):
    out += ["", "The shares of peak above count every conv as a direct conv (conv-equivalent, "
            "one scale for all forms): Winograd's convs execute 2.25x fewer multiplies."]
  out += _lone_table(report.get("lone_conv_forms"), "lone 3x3 conv, forward and backward",
                     "winograd")
  if report.get("lift_forms"):
    out += ["", "| train step, input lift as | batch | "
            + " | ".join(f"`\"{i}\"`" + (" (auto)" if i == "vmap" else "") for i in LIFT_FORMS)
            + " |", "| --- | --- | " + "--- | " * len(LIFT_FORMS)]
    for r in report["lift_forms"]:
      cells = [f"{_rate(r, i)}, {r[f'{i}_images_per_s'] / r['vmap_images_per_s']:.2f}x"
               if f"{i}_images_per_s" in r else "n/a" for i in LIFT_FORMS]
      out.append(f"| {r['net']} | {_slices(r)} | " + " | ".join(cells) + " |")
  if report.get("head_apart"):
    out += ["", "| train step | batch | head in every micro-batch | head once per batch "
            "(`head_apart`) | speed-up |", "| --- | --- | --- | --- | --- |"]
    out += [f"| {r['net']} | {_slices(r)} | {_rate(r, 'in_slices')} | {_rate(r, 'apart')} | "
            f"{r['speedup']:.2f}x |" for r in report["head_apart"]]
  if report.get("reduction_forms"):
    out += ["", "| train step | batch | XLA CPU fusions | transforms as dots, biases' gradients "
            "reduced | sums, reduced | sums, as dots | sums and dots against dots and "
            "reductions | the step takes |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    out += [f"| {r['net']} | {_slices(r)} | {r['cpu_fusions']} | {_rate(r, 'dots+reduce')} | "
            f"{_rate(r, 'sums+reduce')} | {_rate(r, 'sums+dot')} | {r['speedup']:.2f}x | "
            f"{r['chosen']} |" for r in report["reduction_forms"]]
  if report.get("conv_passes"):
    out += ["", "| lone 3x3 conv (network) | batch | XLA CPU fusions | forward | input gradient "
            "| kernel gradient | the three | CPU cores busy: forward / input / kernel "
            "gradient |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    out += [f"| {r['c_in']} -> {r['c_out']} @{r['size']} ({r['net']}) | {r['batch']} | "
            f"{r['cpu_fusions']} | " + " | ".join(
                f"{r[f'{p}_ms']:.2f} ms ({100 * r[f'{p}_fraction_of_peak']:.0f}%)"
                for p in PASSES) + f" | {_passes_share(r)} | "
            + " / ".join(f"{r[f'{p}_cores']:.2f}" for p in PASSES)
            + " |" for r in report["conv_passes"]]
  if report.get("huge_pages"):
    out += ["", "| train step (config) | temporaries per step | images/s without huge pages | with | ratio | page "
            "faults per step, without / with | kernel s per step, without / with |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
  for r in report.get("huge_pages", []):
    off, on = r["off"], r["on"]
    out.append(f"| {r['config']} | {r['temp_bytes'] / 2**30:.2f} GiB | {off['images_per_s']:.1f} | {on['images_per_s']:.1f} | "
               f"{r['ratio']:.2f}x | {off['faults_per_step']:,.0f} / {on['faults_per_step']:,.0f} | "
               f"{off['kernel_s_per_step']:.2f} / {on['kernel_s_per_step']:.2f} |")
  for r in report.get("minimal", []):
    out += ["", f"Minimal lift over C4/{r['subgroup']} (\\|H\\| = {r['H_order']}): "
            f"{r['saving']:.2f}x faster than the full lift, outputs equal to "
            f"{r['max_abs_difference']:.0e}."]
  if report.get("groups"):
    out += ["", "| group | order | build time | peak memory | table |", "| --- | --- | --- | --- | --- |"]
    for r in report["groups"]:
      out.append(f"| {r['group']} | {r['order']} | {r['seconds']:.2f} s | "
                 f"{r['peak_bytes'] / 2**20:.0f} MiB | {r['table_bytes'] / 2**20:.1f} MiB "
                 f"{r['table_dtype']} |")
  if report.get("cpu_fusions"):
    out += ["", "| case | batch | XLA CPU fusions | images/s (% of peak) or time(F_hat) / "
            "(\\|G\\| time(F)), forward / gradient | vs the default |",
            "| --- | --- | --- | --- | --- |"]
  for r in report.get("cpu_fusions", []):
    b = f"{r['batch']} ({r['microbatches']} x {r['batch'] // r['microbatches']})" \
        if r["microbatches"] > 1 else f"{r['batch']}"
    if "images_per_s" in r:
      cells = (f"{r['images_per_s']:.1f} ({100 * r['fraction_of_matmul_peak']:.0f}%)",
               f"{r['speedup']:.2f}x")
    else:
      cells = (f"{r['forward_ratio']:.2f} / {r['gradient_ratio']:.2f} (the lift "
               f"{r['lift_forward_ms']:.1f} / {r['lift_gradient_ms']:.1f} ms)",
               f"the lift {r['speedup_forward']:.2f}x / {r['speedup_gradient']:.2f}x")
    out.append(f"| {r['case']} | {b} | {r['fusions']} | {cells[0]} | {cells[1]} |")
  only = report.get("only")
  command = (f"`python -m experiments.bench --only={','.join(only)}`" if only else "`make bench`")
  out += ["", f"{command} took {report['bench_wall_s']:.0f} s."]
  return "\n".join(out) + "\n"
