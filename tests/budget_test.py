"""Training to a wall-time budget (experiments/budget.py): the plan, and a run that keeps it."""

import json
import os

import numpy as np
import pytest

from experiments import budget, tasks, timing, train
from experiments.configs import default
from experiments.validation import ConfigError, validate_config


@pytest.fixture
def spend(monkeypatch):
  """A fake clock for the measured choices' timings (``experiments.timing.alternate``):
  ``spend(seconds)`` is what a fake candidate's step calls to take that long."""
  now = [0.0]
  monkeypatch.setattr(timing, "time", type("Clock", (), {"perf_counter": lambda: now[0]}))

  def advance(seconds):
    now[0] += seconds
  return advance


def test_the_plan_fits_training_compilation_and_every_evaluation_in_the_budget():
  m = budget.Measured(elapsed_s=50.0, compile_s=30.0, step_s=0.5, eval_s=40.0)
  n = budget.plan(1800.0, m, steps_per_epoch=100, max_epochs=40, every=40, turns=1)
  # 1800 * 0.92 - 50 - 30 = 1576 s: 30 epochs of 50 s and one evaluation of 40 s fit, 31 not.
  assert n == 30
  assert 30 * 50 + 40 <= 1576 < 31 * 50 + 40
  # Evaluating every 4 epochs costs 8 passes of 40 s; test-time turns cost more passes.
  assert budget.plan(1800.0, m, 100, 40, every=4, turns=1) == 25
  assert budget.evaluations(25, 4, 3) == 7 + 2
  assert budget.plan(1800.0, m, 100, max_epochs=10, every=40, turns=1) == 10   # the cap
  assert budget.plan(60.0, m, 100, 40, 40, 1) == 1                            # at least one


def test_a_run_plans_once_and_a_restart_keeps_the_plan(tmp_path, mnist_dir, capsys,
                                                       monkeypatch):
  from eqnn import spatial
  traced, forms = [], spatial.forms

  def recording_forms(*pair):             # the forms each traced network runs its convs in
    traced.append(pair)
    return forms(*pair)
  monkeypatch.setattr(spatial, "forms", recording_forms)
  c = default.get_config("smoke")
  c.data_dir, c.make_figures = mnist_dir, False
  c.max_train_examples, c.num_epochs, c.eval_every_epochs = 128, 3, 3
  c.train_budget_s = 900.0
  c.microbatches = 0                                         # auto: measured too
  c.batch_size = 16                                          # two candidates: 1 and 2 slices
  c.cpu_fusions = "auto"                                     # and XLA's CPU fusions, measured
  c.conv_form = "measured"                                   # and the convs' forms
  workdir = str(tmp_path)
  results = train.train_and_evaluate(c, workdir)
  with open(os.path.join(workdir, budget.FILE)) as f:
    saved = json.load(f)
  assert saved["epochs"] == results["epochs"] == 3          # the cap: the budget holds more
  assert saved["step_s"] > 0 and saved["eval_s"] > 0 and saved["compile_s"] > 0
  times = saved["microbatch_step_s"]
  assert sorted(times) == ["1", "2"] and all(t > 0 for t in times.values())
  assert saved["microbatches"] == int(min(times, key=times.get))
  # Both measured: every pair of conv forms and XLA CPU fusions, timed together.
  pair_times = saved["forms_and_fusions_step_s"]
  assert sorted(pair_times) == sorted(f"{'/'.join(p)} {f}" for p in budget.FORM_CANDIDATES
                                      for f in ("default", "no_ynnpack", "ynnpack_dots"))
  assert (f"{'/'.join(saved['conv_forms'])} {saved['cpu_fusions']}"
          == min(pair_times, key=pair_times.get))
  # Each candidate's step traced the network in its forms (the state's apply_fn is what a
  # step traces: a probe state of the config's forms timed one pair four times).
  assert set(budget.FORM_CANDIDATES) <= set(traced)
  assert results["steps"] == 3 * (128 // c.batch_size)
  # A restart reads the plan instead of measuring again, whatever the budget says now.
  saved["epochs"] = 1
  with open(os.path.join(workdir, budget.FILE), "w") as f:
    json.dump(saved, f)
  os.remove(os.path.join(workdir, "results.json"))
  capsys.readouterr()
  c.train_budget_s = 5.0
  again = train.train_and_evaluate(c, workdir)
  assert "1 epochs, as planned when this run began" in capsys.readouterr().err
  assert again["epochs"] == 1 and again["steps"] == results["steps"]


def test_microbatch_candidates_split_the_batch_evenly_into_slices_of_at_least_8():
  assert budget.microbatch_candidates(128) == [1, 2, 4, 8, 16]
  assert budget.microbatch_candidates(64, devices=4) == [1, 2]        # 8 per device at least
  assert budget.microbatch_candidates(200) == [1, 2, 4, 8]           # 25 per slice, not 12.5
  assert budget.microbatch_candidates(6) == [1]


def test_without_a_budget_the_config_decides():
  c = default.get_config("smoke")
  assert budget.epochs(c, "/nonexistent", 0.0, 10, None, print) == c.num_epochs


def test_several_processes_refuse_a_measured_plan(monkeypatch):
  """Each process would measure, and plan, its own run: refused before anything is measured."""
  import jax
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  for field, value in (("train_budget_s", 600.0), ("microbatches", 0), ("cpu_fusions", "auto"),
                       ("conv_form", "measured")):
    c = default.get_config("smoke")
    c[field] = value
    with pytest.raises(ConfigError, match="several processes"):
      train._plan(c, "/nonexistent", 0.0, 8, None, None, (), None, None, 1, None, print)
  c = default.get_config("smoke")             # neither: the config decides, nothing measured
  assert train._plan(c, "/nonexistent", 0.0, 8, None, None, (), None, None, 1,
                     type("Mesh", (), {"devices": np.zeros(1)})(), print) == (
                         1, "default", ("auto", "auto"), c.num_epochs)


def test_auto_cpu_fusions_keep_the_faster_and_a_resumed_run_keeps_the_choice(tmp_path, spend):
  c = default.get_config("smoke")
  c.cpu_fusions = "auto"
  said, measured = [], []
  times = {"default": 0.375, "no_ynnpack": 0.25, "ynnpack_dots": 0.3125}   # exact in binary

  def measure(f):                      # prepares a candidate: a function running one step
    measured.append(f)
    return lambda: spend(times[f])
  assert budget.cpu_fusions(c, str(tmp_path), "cpu", measure, said.append) == "no_ynnpack"
  assert measured == ["default", "no_ynnpack", "ynnpack_dots"] and "no_ynnpack" in said[0]
  plan = json.loads((tmp_path / budget.FILE).read_text())
  assert plan["cpu_fusions"] == "no_ynnpack" and plan["cpu_fusions_step_s"]["default"] == 0.375
  times["default"] = 0.01                       # a resumed run does not measure again
  assert budget.cpu_fusions(c, str(tmp_path), "cpu", measure, said.append) == "no_ynnpack"
  assert len(measured) == 3
  # Off the CPU there is nothing to choose; a fixed config is not measured.
  assert budget.cpu_fusions(c, str(tmp_path / "gpu"), "gpu", measure, print) == "default"
  c.cpu_fusions = "default"
  assert budget.cpu_fusions(c, str(tmp_path / "x"), "cpu", measure, print) == "default"
  assert len(measured) == 3
  # A jaxlib whose XLA no longer knows the experimental option: the default, said, not a crash.
  c.cpu_fusions = "auto"

  def refused(f):
    if f != "default":
      raise RuntimeError("INVALID_ARGUMENT: While setting option "
                         "xla_cpu_experimental_ynn_fusion_type, '' is not a valid enum value.")
    return lambda: spend(0.125)
  said.clear()
  (tmp_path / "old").mkdir()
  assert budget.cpu_fusions(c, str(tmp_path / "old"), "cpu", refused, said.append) == "default"
  assert "refused the option" in said[0] and "no_ynnpack left out" in said[0]
  assert "ynnpack_dots left out" in said[1] and "default (step" in said[2]


def test_candidates_are_timed_in_turns_and_compared_by_their_medians(tmp_path, spend):
  """Every candidate is prepared (compiled) first, warmed up, then timed one step each in
  turn, round after round: a machine slowing down mid-measurement slows all alike. One
  outlier step (a page fault storm, another process) does not decide: the median does."""
  order = []
  # no_ynnpack is truly the fastest (8 units a step), and the machine slows down by one unit
  # at every step. Timed in blocks of five, one candidate after another, default's steps
  # would read 10 + 1..5 (median 13) and no_ynnpack's 8 + 6..10 (16): the wrong choice.
  base = {"default": 10.0, "no_ynnpack": 8.0, "ynnpack_dots": 9.0}

  def prepare(f):
    order.append(("prepare", f))

    def run():
      order.append(("run", f))
      drift = sum(o[0] == "run" for o in order)
      # ynnpack_dots's second timed step hit a stall of 100 units.
      stall = 100.0 if f == "ynnpack_dots" and order.count(("run", f)) == budget.WARMUP + 2 else 0
      spend(base[f] + drift + stall)
    return run
  c = default.get_config("smoke")
  c.cpu_fusions = "auto"
  assert budget.cpu_fusions(c, str(tmp_path), "cpu", prepare, print) == "no_ynnpack"
  k, w = len(base), budget.WARMUP
  assert [o[0] for o in order] == ["prepare"] * k + ["run"] * (k * (w + budget.ROUNDS))
  assert [o[1] for o in order[k:k + k * w]] == [f for f in base for _ in range(w)]  # warm-ups
  assert [o[1] for o in order[k + k * w:k + k * w + k]] == list(base)   # then one each, in turns
  times = json.loads((tmp_path / budget.FILE).read_text())["cpu_fusions_step_s"]
  # After 6 warm-up steps, the timed steps' drifts are 7, 10, 13, 16, 19 / 8, 11, ... /
  # 9, 12 (+100), 15, 18, 21: medians 13, 14 and 18 (the stall is not the median).
  assert times == {"default": 10.0 + 13, "no_ynnpack": 8.0 + 14, "ynnpack_dots": 9.0 + 18}


def test_forms_and_fusions_measured_together_find_the_pair_one_after_the_other_misses(
    tmp_path, spend):
  """XLA's convs fastest without YNNPACK, the library's forms fastest with XLA's default
  fusions (V1 on an Intel Xeon): forms under the default fusions, then fusions, keep
  auto/auto default; every pair measured together keeps xla/xla no_ynnpack, as both choices
  in plan.json, and a resumed run reads them."""
  times = {(p, f): 0.5 for p in budget.FORM_CANDIDATES for f in ("default", "no_ynnpack",
                                                                  "ynnpack_dots")}
  times[(("auto", "auto"), "default")] = 0.25
  times[(("xla", "xla"), "no_ynnpack")] = 0.1875                    # exact in binary
  measured = []

  def prepare(pair, fusions):
    measured.append((pair, fusions))
    return lambda: spend(times[(pair, fusions)])
  for d in "abc":
    (tmp_path / d).mkdir()
  c = default.get_config("smoke")
  c.conv_form, c.kernel_gradient, c.cpu_fusions = "measured", "auto", "auto"
  said = []
  assert budget.forms_and_fusions(c, str(tmp_path / "a"), "cpu", prepare, said.append) == (
      ("xla", "xla"), "no_ynnpack")
  assert len(measured) == 12 and "xla/xla no_ynnpack" in said[0]
  plan = json.loads((tmp_path / "a" / budget.FILE).read_text())
  assert plan["conv_forms"] == ["xla", "xla"] and plan["cpu_fusions"] == "no_ynnpack"
  assert plan["forms_and_fusions_step_s"]["auto/auto default"] == 0.25
  assert budget.forms_and_fusions(c, str(tmp_path / "a"), "cpu", prepare, print) == (
      ("xla", "xla"), "no_ynnpack") and len(measured) == 12            # resumed: not again
  # One after the other (the fusions fixed, then the forms fixed): the local best only.
  c.cpu_fusions = "default"
  assert budget.forms_and_fusions(c, str(tmp_path / "b"), "cpu", prepare, print) == (
      ("auto", "auto"), "default")
  c.conv_form, c.cpu_fusions = "auto", "auto"
  assert budget.forms_and_fusions(c, str(tmp_path / "c"), "cpu", prepare, print) == (
      ("auto", "auto"), "default")


def test_measured_conv_forms_keep_the_fastest_pair_and_a_resumed_run_keeps_it(tmp_path, spend):
  c = default.get_config("smoke")
  said, measured = [], []
  times = dict(zip(budget.FORM_CANDIDATES, (0.375, 0.25, 0.5, 0.3125)))     # exact in binary

  def measure(pair):
    measured.append(pair)
    return lambda: spend(times[pair])
  # A fixed config is not measured: its own pair.
  c.conv_form, c.kernel_gradient = "winograd", "windows"
  assert budget.conv_forms(c, str(tmp_path), "cpu", measure, print) == ("winograd", "windows")
  assert not measured
  c.conv_form, c.kernel_gradient = "measured", "auto"
  assert budget.conv_forms(c, str(tmp_path), "cpu", measure, said.append) == ("xla", "xla")
  assert measured == list(budget.FORM_CANDIDATES) and "conv forms: xla/xla" in said[0]
  plan = json.loads((tmp_path / budget.FILE).read_text())
  assert plan["conv_forms"] == ["xla", "xla"] and plan["conv_forms_step_s"]["auto/auto"] == 0.375
  times[("auto", "auto")] = 0.01                # a resumed run does not measure again
  assert budget.conv_forms(c, str(tmp_path), "cpu", measure, said.append) == ("xla", "xla")
  assert len(measured) == 4
  # Off the CPU: the library's choice (XLA's conv library), nothing measured.
  assert budget.conv_forms(c, str(tmp_path / "gpu"), "gpu", measure, print) == ("auto", "auto")
  assert len(measured) == 4
  # The model a saved run's config rebuilds (evaluation, export): the library's forms, the
  # same function; the run's own, where it decided them.
  model = tasks.build_task(c).model
  assert (model.conv_form, model.kernel_gradient) == ("auto", "auto")
  model = tasks.build_task(c, ("xla", "windows")).model
  assert (model.conv_form, model.kernel_gradient) == ("xla", "windows")
  # A kernel gradient beside "measured" is refused (it is measured with the forms).
  c.kernel_gradient = "xla"
  with pytest.raises(ConfigError, match="kernel_gradient.*measured"):
    validate_config(c)
  # A model whose convs the forms do not reach (the plain CNN's are Flax's) is refused too.
  c.kernel_gradient, c.model = "auto", "plain"
  with pytest.raises(ConfigError, match="conv_form.*would ignore it"):
    validate_config(c)


def test_the_evaluation_is_timed_on_the_state_the_timed_steps_returned():
  """The timed steps donate the probe state (XLA deletes its buffers where it reuses them):
  timing the evaluation on it raised 'Array has been deleted' (make rotmnist died so before
  training). Checked to fail with the evaluation timed on the probe."""
  import jax
  import jax.numpy as jnp
  import optax
  from flax.training import train_state
  from experiments import parallel

  probe = train_state.TrainState.create(apply_fn=None, params={"w": jnp.ones((4, 3))},
                                        tx=optax.sgd(0.1))

  @jax.jit
  def jitted(state, x, healthy):
    grads = jax.grad(lambda p: jnp.sum((x @ p["w"]) ** 2))(state.params)
    return state.apply_gradients(grads=grads), jnp.zeros(()), healthy

  def step(state, x, healthy):
    # Donation as XLA does it when it reuses a buffer (whether it does depends on the
    # program; C16's batch norm parameters were): the input's buffers are gone afterwards.
    out = jitted(state, x, healthy)
    for leaf in jax.tree.leaves(state.params):
      leaf.delete()
    return out

  forward = jax.jit(lambda variables, x: x @ variables["w"])
  batch_args = (jnp.ones((8, 4)), jnp.array(True))
  compile_s, step_s, eval_s = train._measure(probe, lambda: step, batch_args, 3, forward,
                                             np.ones((20, 4), np.float32), 8, parallel.mesh())
  assert jax.tree.leaves(probe.params)[0].is_deleted()     # the premise
  assert compile_s > 0 and step_s > 0 and eval_s > 0
