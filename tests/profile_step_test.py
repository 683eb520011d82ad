"""The train-step profile (`make profile`) and the peer benchmark's parts that need no torch."""

import json

import jax
import pytest

from eqnn import actions, groups
from experiments import bench_peers, profile_step, timing
from experiments.configs import default


def test_the_profile_cuts_a_step_into_its_layers_and_accounts_for_the_whole():
  c = default.get_config("smoke")
  c.norm = True
  rows = profile_step.profile_config(c, 16, 1, timing.alternate)
  names = [r["part"] for r in rows]
  assert names[0] == "input lift 1->4 x |G|=4 @28 (vmap)"      # batch norm: not fused
  assert any(n.startswith("ReLU + 2x2 max pool 1") for n in names)
  assert any(n.startswith("group conv 2: 4->8 per element @14 (fourier)") for n in names)
  assert any(n.startswith("batch norm 2") for n in names)
  assert any(n.startswith("lifted dense") for n in names)
  assert any(n.startswith("optimizer update") for n in names)
  bound = "bound: the step's FLOPs in its hidden convs' time alone"
  assert names[-4:] == ["sum of the parts", "between the parts (whole - sum)", "whole train step",
                        bound]
  by = {r["part"]: r for r in rows}
  # The group conv's plain convs (C4's Fourier basis: 4->8 twice, 8->16), timed alone beside
  # it with the same multiply-adds, and left out of the sum.
  conv = by["group conv 2: 4->8 per element @14 (fourier)"]
  alone = by["group conv 2's convs alone: 4->8, 4->8, 8->16 @14"]
  assert alone["gflops"] * alone["ms"] == pytest.approx(conv["gflops"] * conv["ms"])
  parts = [r for r in rows[:-4] if r is not alone]
  assert all(r["ms"] > 0 for r in parts) and alone["ms"] > 0
  assert by["sum of the parts"]["ms"] == pytest.approx(sum(r["ms"] for r in parts))
  assert by["between the parts (whole - sum)"]["ms"] == pytest.approx(
      by["whole train step"]["ms"] - by["sum of the parts"]["ms"])
  assert by["whole train step"]["gflops"] > 0
  # The bound: the whole step's FLOPs in the convs' time alone.
  assert by[bound]["ms"] == alone["ms"]
  assert by[bound]["gflops"] * by[bound]["ms"] == pytest.approx(
      by["whole train step"]["gflops"] * by["whole train step"]["ms"])
  table = profile_step.markdown(rows, "smoke", peak_gflops=100.0)
  assert table.count("\n") == len(rows) + 2 and "% of peak" in table


def test_the_profile_times_the_head_once_per_batch_where_the_step_runs_it_apart():
  c = default.get_config("smoke")
  c.microbatches, c.head_apart = 2, True
  names = [r["part"] for r in profile_step.profile_config(c, 16, 1, timing.alternate)]
  assert any(n.startswith("group conv 2: 4->8 per element @14") and n.endswith("(x 2)")
             for n in names)
  head = [n for n in names if n.startswith(("lifted dense", "shared dense"))]
  assert len(head) == 2 and not any("(x 2)" in n for n in head)


def test_the_profile_of_a_gcnn_network_times_its_own_layers(capsys, monkeypatch):
  """make train's network (hidden="gcnn"): its G-CNN lift and convs, and the turn into own
  frames, not the stacked network's layers; with ``conv_form = "measured"`` and ``cpu_fusions
  = "auto"`` its conv forms and XLA CPU's fusions measured first, together, as the runner
  does, and said."""
  from eqnn import spatial
  from experiments import budget
  traced, forms = [], spatial.forms

  def recording_forms(*pair):             # the forms each traced network runs its convs in
    traced.append(pair)
    return forms(*pair)
  monkeypatch.setattr(spatial, "forms", recording_forms)
  c = default.get_config("smoke")
  c.hidden = "gcnn"
  c.cpu_fusions = "auto"
  c.conv_form = "measured"
  names = [r["part"] for r in profile_step.profile_config(c, 16, 1, timing.alternate)]
  said = capsys.readouterr().out
  # Both measured: every pair of forms and fusions, together, as the runner does.
  head = "conv forms and XLA CPU fusions measured as the runner does: "
  assert head in said
  assert all(f"{'/'.join(p)} {f}: " in said for p in budget.FORM_CANDIDATES
             for f in ("default", "no_ynnpack", "ynnpack_dots"))
  assert set(budget.FORM_CANDIDATES) <= set(traced)        # each timed in its own forms
  chosen = said.split(head)[1].split(" ")[0]
  assert tuple(chosen.split("/")) in budget.FORM_CANDIDATES
  # The first block fused in the taps form where the chosen conv form is the library's.
  fused = ", taps, fused" if chosen.startswith("auto/") else ""
  assert names[0] == f"input lift 1->4 x |G|=4 @28 + ReLU + 2x2 max pool (G-CNN{fused})"
  assert not any(n.startswith("ReLU + 2x2 max pool 1") for n in names)   # inside the first
  assert any(n.startswith("G-CNN conv 2: 4->8 per element @14 (expanded)") for n in names)
  assert "G-CNN conv 2's convs alone: 16->32 @14" in names     # the expanded form: one conv
  assert any(n.startswith("to own frames (14x14") for n in names)
  assert not any(n.startswith("group conv") for n in names)


def test_each_part_runs_its_layer_forward_and_backward():
  parts = profile_step.cnn_parts(actions.rotations_reflections(), (2, 3), (2, 1), (5,), 10, 3,
                                 False, 4, size=8)
  _, lift = parts[0].run()                        # gradients of the lift's kernel and bias
  assert [g.shape for g in lift] == [(3, 3, 1, 2), (2,)]
  conv = next(p for p in parts if p.name.startswith("group conv"))
  _, grads = conv.run()                           # kernel, bias and the input's gradient
  assert [g.shape for g in grads] == [(3, 3, 8 * 2, 3), (3,), (4, 4, 4, 8, 2)]
  assert conv.flops == 3 * 2 * 4 * 4 * 4 * 9 * (12 * 2 * 3)     # D4's irreps: 12 units
  # Its plain convs alone: D4's four 1-dim irreps (2 -> 3 each) and its 2-dim one (4 -> 6 on
  # twice the rows), forward and both gradients.
  alone = next(p for p in parts if p.alone)
  assert alone.name == "group conv 2's convs alone: 2->3, 2->3, 2->3, 2->3, 4->6 x2 @4"
  (ws, xs) = alone.run()[1]
  assert [w.shape for w in ws] == [(3, 3, 2, 3)] * 4 + [(3, 3, 4, 6)]
  assert [x.shape for x in xs] == [(4, 4, 4, 2)] * 4 + [(8, 4, 4, 4)]
  assert alone.flops == conv.flops and not conv.alone


def test_peer_benchmark_says_what_is_missing_and_writes_its_table(tmp_path):
  with pytest.raises(SystemExit, match="make bench-peers"):
    bench_peers.Worker(str(tmp_path / "no-python"))
  report = {"matmul_peak_gflops": 200.0, "batch": 128,
            "machine": {"cpus": 2, "jax": jax.__version__, "torch": "2.x", "escnn": "1.0",
                        "threads": 2},
            "rows": [{"net": "paper_v1", "batch": 128, "eqnn_microbatches": 4,
                      "eqnn_images_per_s": 90.0, "escnn_images_per_s": 60.0, "ratio": 1.5,
                      "eqnn_gflops": 120.0, "eqnn_conv_equivalent_gflops": 234.0,
                      "escnn_gflops": 150.0}]}
  md = bench_peers.markdown(json.loads(json.dumps(report)))
  assert ("| paper_v1 | 128 (4 x 32) | 90.0 | 60.0 | 1.50x | 120 (60%) | 234 (117%) | "
          "150 (75%) |") in md


def test_the_bench_counts_the_forms_that_run():
  cfg = ((16, 32, 64), (2, 2, 2), (128,))
  executed, dense = timing.conv_macs(cfg, True), timing.conv_macs(cfg, False)
  # C4's group convs in the Fourier basis: 6 units of work instead of 16.
  assert dense > executed > 6 / 16 * dense
  assert timing.conv_macs(cfg, True, executed=True) == executed      # no conv wide enough
  # V1's shape: its 80 -> 80 units (and 160 -> 160, 160 -> 64) run in Winograd's form on
  # CPU, 16 products per 2 x 2 tile instead of 36; its 80 -> 32 units and the lift directly.
  v1 = ((80, 80, 32), (1, 1, 4), (256,))
  lift = 28 * 28 * 9 * 80 * 4
  conv2 = 14 * 14 * 16 * (2 * 80 * 80 + 160 * 160)
  conv3 = 28 * 28 * 9 * 2 * 80 * 32 + 14 * 14 * 16 * 160 * 64
  head = timing.conv_macs(v1, True) - lift - 28 * 28 * 9 * (
      2 * 80 * 80 + 160 * 160 + 2 * 80 * 32 + 160 * 64)
  assert timing.conv_macs(v1, True, executed=True) == lift + conv2 + conv3 + head
  assert timing.unit_convs(groups.cyclic(4), 3, 5, "fourier") == [(1, 3, 5), (1, 3, 5),
                                                                  (1, 6, 10)]
  assert timing.layer_units(groups.dihedral(4), 1, 1, "fourier") == 12     # D4: 4 x 1 + 8


def test_bench_tables_show_only_the_sections_that_ran():
  from experiments import bench_tables
  row = {"group": "D4", "order": 8, "batch": 128, "lift": "chunks of 2", "forward_ratio": 1.08,
         "gradient_ratio": 0.93}
  report = {"matmul_peak_gflops": 290.0, "machine": {"cpus": 2, "jax": "x"},
            "networks": [], "lift_overhead": [row], "layer_variants": [], "auto_choices": [],
            "minimal": [], "bench_wall_s": 64.0, "only": ["lift_overhead"]}
  md = bench_tables.markdown(report)
  assert "| D4 (\\|G\\| = 8) | chunks of 2 | 128 | 1.08 | 0.93 |" in md
  assert "| network |" not in md and "| layer (fwd+bwd) |" not in md
  assert "`python -m experiments.bench --only=lift_overhead` took 64 s." in md
  assert "head once per batch" not in md
  report.update(only=[], head_apart=[{
      "net": "paper_v1", "batch": 128, "microbatches": 8, "in_slices_images_per_s": 59.7,
      "in_slices_fraction_of_peak": 0.31, "apart_images_per_s": 64.2,
      "apart_fraction_of_peak": 0.334, "speedup": 64.2 / 59.7}])
  md = bench_tables.markdown(report)
  assert "`make bench` took 64 s." in md
  assert ("| paper_v1 | 128 (8 x 16) | 59.7 img/s (31% of peak) | 64.2 img/s (33% of peak) | "
          "1.08x |") in md
  assert "transforms as dots" not in md
  report["reduction_forms"] = [{
      "net": "paper_v1", "batch": 128, "microbatches": 8, "cpu_fusions": "ynnpack_dots",
      "chosen": "sums+dot", "dots+reduce_images_per_s": 64.4,
      "dots+reduce_fraction_of_peak": 0.4, "sums+reduce_images_per_s": 71.1,
      "sums+reduce_fraction_of_peak": 0.44, "sums+dot_images_per_s": 80.5,
      "sums+dot_fraction_of_peak": 0.5, "speedup": 80.5 / 64.4}]
  assert ("| paper_v1 | 128 (8 x 16) | ynnpack_dots | 64.4 img/s (40% of peak) | 71.1 img/s "
          "(44% of peak) | 80.5 img/s (50% of peak) | 1.25x | sums+dot |"
          ) in bench_tables.markdown(report)
  assert "kernel gradient" not in bench_tables.markdown(report)
  report["conv_passes"] = [{
      "net": "paper_v1", "batch": 16, "size": 28, "c_in": 80, "c_out": 80,
      "cpu_fusions": "ynnpack_dots", "forward_ms": 5.4, "forward_fraction_of_peak": 0.85,
      "input_gradient_ms": 5.4, "input_gradient_fraction_of_peak": 0.85,
      "kernel_gradient_ms": 10.0, "kernel_gradient_fraction_of_peak": 0.459,
      "forward_cores": 1.94, "input_gradient_cores": 1.9, "kernel_gradient_cores": 1.55}]
  assert ("| 80 -> 80 @28 (paper_v1) | 16 | ynnpack_dots | 5.40 ms (85%) | 5.40 ms (85%) | "
          "10.00 ms (46%) | 66% (85% with the kernel gradient at the forward's rate) | "
          "1.94 / 1.90 / 1.55 |") in bench_tables.markdown(report)
  report["networks"] = [{
      "net": "gcnn", "batch": 128, "microbatches": 2, "cpu_fusions": "ynnpack_dots",
      "train_images_per_s": 3500.0, "infer_images_per_s": 9000.0, "executed_gflops": 160.0,
      "fraction_of_matmul_peak": 160 / 290, "conv_equivalent_gflops": 160.0,
      "dense_equivalent_gflops": 400.0, "train_cores": 1.83}]
  assert ("| gcnn | 128 (2 x 64), YNNPACK dots only | 3500.0 | 9000.0 | 160 (55%) | 160 (55%) "
          "| 400 | 1.83 |") in bench_tables.markdown(report)


def test_alternate_measures_the_cores_each_variant_keeps_busy(monkeypatch):
  """``timing.alternate(..., cores=d)``: each variant's median of the process's CPU time over
  the wall time of its own calls (on a fake clock: variants keeping two cores busy, one, and
  none), each apart from the others'."""
  wall, cpu = [0.0], [0.0]
  monkeypatch.setattr(timing, "time", type("Clock", (), {
      "perf_counter": lambda: wall[0], "process_time": lambda: cpu[0]}))

  def variant(seconds, cores):
    def run():
      wall[0] += seconds
      cpu[0] += seconds * cores
    return run
  cores = {}
  times = timing.alternate({"both": variant(0.02, 2.0), "one": variant(0.05, 1.0),
                            "sleep": variant(0.01, 0.0)}, 3, cores=cores)
  assert times == pytest.approx({"both": 0.02, "one": 0.05, "sleep": 0.01})
  assert cores == pytest.approx({"both": 2.0, "one": 1.0, "sleep": 0.0})


def test_the_benches_measure_a_choice_as_the_runner_does(monkeypatch):
  """Where a config leaves micro-batches to the machine, the benches and make profile time
  the candidates as the runner's plan does: one step each that compiles, budget.WARMUP
  untimed ones, then one step of each in turn for experiments.budget.ROUNDS rounds."""
  import collections

  import jax.numpy as jnp

  from experiments import budget
  calls, order = collections.Counter(), []

  def fake_runner(model, batch, classes, micro=1, options=None, head_apart=False):
    def run():
      calls[micro] += 1
      order.append(micro)
      return jnp.zeros(())
    return run, None, None
  monkeypatch.setattr(timing, "train_step_runner", fake_runner)
  _, times = timing.fastest_microbatches(None, 32, 10)
  candidates = budget.microbatch_candidates(32)
  assert sorted(times) == candidates
  assert all(calls[m] == 1 + budget.WARMUP + budget.ROUNDS for m in candidates)
  timed = order[len(candidates) * (1 + budget.WARMUP):]
  assert timed[:len(candidates)] == candidates                  # in turns, not in blocks
