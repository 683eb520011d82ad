"""Train and evaluate an equivariant network (or its plain baseline): the training loop.

``train_and_evaluate(config, workdir)`` strings the rooms together; ``mnist_rotated.py``
only parses flags. Rooms: :mod:`experiments.tasks` (group, model, sizes),
:mod:`experiments.input_pipeline` (data on the devices, batches, prediction),
:mod:`experiments.steps` (optimiser, loss, the jitted step), :mod:`experiments.metrics`,
:mod:`experiments.checkpoints` (and preemption), :mod:`experiments.workdir` (one run per
workdir, a lock), :mod:`experiments.logs`,
:mod:`experiments.parallel` (mesh and sharding). Random numbers come from four keys split
once from the seed: ``fold_in(key, epoch)`` orders the data, ``fold_in(key, step)`` moves
training inputs, so a resumed run draws what an uninterrupted one would.
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from eqnn import data
from experiments import budget, checkpoints, input_pipeline, logs, metrics, parallel, steps, tasks
from experiments import workdir as workdir_lib
from experiments.validation import ConfigError, validate_config

__all__ = ["ConfigError", "Diverged", "train_and_evaluate"]


class Diverged(RuntimeError):
  """The loss or the parameters became NaN or infinite; the message says how to continue."""


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       start_time: float | None = None, fresh: bool = False) -> dict[str, Any]:
  """Runs the experiment; writes metrics.jsonl, checkpoints, results.json and figures.

  Returns the results dict, or ``{"preempted": True, "step": ...}`` after SIGTERM or SIGINT
  (a checkpoint of that step is saved first). ``fresh``: keep an earlier run in ``workdir``
  aside and start anew (:mod:`experiments.workdir`).
  """
  start_time = time.time() if start_time is None else start_time
  validate_config(config)
  main = parallel.is_main()
  say = logs.say if main else (lambda msg: None)
  mesh = parallel.mesh()
  parallel.check_batch(config.batch_size, mesh)
  with workdir_lib.claim(workdir, config, main, fresh, say):
    task = tasks.build_task(config)
    ds = input_pipeline.load_dataset(config, os.path.join(workdir, "data"))
    task.action.validate(data.as_inputs(ds.train.inputs[:1]))   # what the model is given
    if main:
      workdir_lib.write_config(workdir, config)
    say(input_pipeline.describe(config, ds))
    train_inputs, train_labels = input_pipeline.put_train_set(ds.train, mesh)
    init_key, data_key, step_key, test_key = jax.random.split(jax.random.key(config.seed), 4)
    test_inputs, test_labels, test_elements = input_pipeline.test_set(
        test_key, ds.test, task.action, config.test_transformed, task.nearest_elements)

    bs, n_train = config.batch_size, train_inputs.shape[0]
    steps_per_epoch = _steps_per_epoch(n_train, bs)
    task_in, make_state, make_step, forward_in = _builders(config, init_key, steps_per_epoch,
                                                          mesh)
    epoch_perm = input_pipeline.epoch_permutations(data_key, n_train, mesh)
    eval_bs = -(-config.eval_batch_size // mesh.devices.size) * mesh.devices.size
    healthy = lambda: parallel.put(np.array(True), parallel.replicated(mesh))
    batch_args = (train_inputs, train_labels, epoch_perm(0), step_key, healthy())
    micro, fusions, forms, num_epochs = _plan(config, workdir, start_time, steps_per_epoch,
                                              make_state, make_step, batch_args, forward_in,
                                              test_inputs, eval_bs, mesh, say)
    task, forward = task_in(forms), forward_in(forms)
    total_steps = steps_per_epoch * num_epochs
    state = make_state(total_steps, forms)
    ckpts = checkpoints.Checkpoints(workdir, config.keep_checkpoints)
    state, _ = ckpts.restore_latest(state, say)
    step = int(parallel.fetch(state.step))
    if step >= total_steps and os.path.exists(os.path.join(workdir, "results.json")):
      return _complete(workdir, step, say, bool(config.train_budget_s))
    train_step = make_step(micro, fusions, forms)
    predict = lambda: input_pipeline.predict(forward, state.params, test_inputs, eval_bs, mesh)
    health = _Health(healthy(), step, config, ckpts)
    say(_describe(task, state, steps_per_epoch, num_epochs, mesh, workdir))
    logits = None    # the last evaluation's, reused if it was of the final state
    with logs.RunLog(workdir, main, total_steps, bs, step, start_time,
                     steps.learning_rate(config, total_steps)) as log, \
         checkpoints.Preemption() as preemption:
      while step < total_steps:
        epoch = step // steps_per_epoch
        perm, losses = epoch_perm(epoch), []
        while step < (epoch + 1) * steps_per_epoch:
          state, loss, health.flag = train_step(state, train_inputs, train_labels, perm,
                                                step_key, health.flag)
          step += 1
          losses.append(loss)
          if step % config.log_every_steps == 0:
            health.check(step)
            log.train(step, epoch + 1, float(parallel.fetch(loss)))
          if config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0:
            health.check(step)
            ckpts.save(step, state)
          if preemption.requested(step, config.log_every_steps):
            health.check(step)
            return _stop_preempted(ckpts, step, state, say, preemption.signal_name)
        health.check(step)
        ckpts.save(step, state)
        if (epoch + 1) % config.eval_every_epochs == 0 or step == total_steps:
          t_eval, logits = time.time(), predict()
          log.eval(step, epoch + 1, float(parallel.fetch(jnp.mean(jnp.stack(losses)))),
                   _prefixed(metrics.evaluate(task, logits, test_labels, test_elements)),
                   time.time() - t_eval)
      images_per_s = log.images_per_s(step)
    ckpts.wait()

    logits = predict() if logits is None else logits   # None: restarted after its last step
    results = _results(config, task, state, logits, test_labels, test_elements, step,
                       images_per_s, start_time)
    results["epochs"] = num_epochs
    if config.eval_turns > 1:
      t_turns = time.time()
      results.update(_turned_accuracy(task, state, test_inputs, test_labels, eval_bs, mesh,
                                      config.eval_turns, logits, config.interpolation))
      say(f"test-time turns: class accuracy {results['test_class_accuracy_turned']:.4f} over "
          f"{config.eval_turns} turns ({time.time() - t_turns:.0f} s; plain: "
          f"{results['test_class_accuracy']:.4f})")
      results["wall_time_s"] = time.time() - start_time
    # wall_time_s is this process's; a resumed run also took its earlier processes' time.
    results["segments"] = log.segments
    results["wall_time_total_s"] = log.before_s + results["wall_time_s"]
    if main:
      _write_results(workdir, config, results, task, state, ds.test, logits, test_elements)
    return results


def _steps_per_epoch(n_train: int, bs: int) -> int:
  if n_train < bs:
    raise ConfigError(f"config.batch_size = {bs} is larger than the {n_train} training examples")
  return n_train // bs


def _builders(config, init_key, steps_per_epoch, mesh):
  """``(task_in(forms), make_state(total_steps, forms=None), make_step(micro, fusions, forms),
  forward_in(forms))``: the task, the train state, the step and the jitted forward pass with
  the convs in ``forms`` (conv form, kernel gradient; None: the config's). The state is built
  in the step's forms too: its ``apply_fn`` is what a step traces."""
  task_in = functools.lru_cache(maxsize=None)(lambda forms: tasks.build_task(config, forms))
  make_state = lambda total, forms=None: parallel.put_tree(steps.create_train_state(
      task_in(forms), config, init_key, total), parallel.replicated(mesh))
  make_step = lambda micro, fusions, forms: steps.config_train_step(
      task_in(forms), config, steps_per_epoch, micro, parallel.batch_sharded(mesh),
      cpu_fusions=fusions)
  # One jitted forward pass per forms: the time budget's evaluation pass and the run's
  # evaluations share its compilation.
  forward_in = functools.lru_cache(maxsize=None)(lambda forms: jax.jit(task_in(forms).model.apply))
  return task_in, make_state, make_step, forward_in


def _plan(config, workdir, start_time, steps_per_epoch, make_state, make_step, batch_args,
          forward_in, test_inputs, eval_bs, mesh, say):
  """``(microbatches, cpu_fusions, conv forms, epochs)`` of this run (:mod:`experiments.
  budget`): the config's, or measured on throwaway states (``microbatches = 0``,
  ``conv_form = "measured"``, ``cpu_fusions = "auto"``, ``train_budget_s > 0``), in that
  order (each on the choices before it; forms and fusions together where both are measured,
  :func:`experiments.budget.forms_and_fusions`), and kept. ``make_state(total_steps, forms)``,
  ``make_step(micro, fusions, forms)``, ``forward_in(forms)``: the state, the step and the
  jitted forward pass with the convs in ``forms``."""
  if jax.process_count() > 1 and (config.train_budget_s or not config.microbatches
                                  or config.cpu_fusions == "auto"
                                  or config.conv_form == "measured"):
    raise ConfigError("train_budget_s, microbatches=0, cpu_fusions='auto' and "
                      "conv_form='measured' are measured by the process that runs them: with "
                      "several processes each would plan its own run; give num_epochs, "
                      "microbatches, cpu_fusions and conv_form instead")
  probe = lambda forms: make_state(steps_per_epoch * config.num_epochs, forms)
  fixed = config.cpu_fusions if config.cpu_fusions != "auto" else "default"
  library = tasks.fixed_conv_forms(config.conv_form, config.kernel_gradient)
  prepare = lambda m, f=fixed, forms=library: budget.stepper(
      lambda: make_step(m, f, forms), probe(forms), batch_args)
  micro = budget.microbatches(config, workdir, mesh.devices.size, prepare, say)
  forms, fusions = budget.forms_and_fusions(config, workdir, jax.default_backend(),
                                            lambda p, f: prepare(micro, f, p), say)
  measure = lambda: _measure(probe(forms), lambda: make_step(micro, fusions, forms), batch_args,
                             min(30, steps_per_epoch), forward_in(forms), test_inputs, eval_bs,
                             mesh)
  return micro, fusions, forms, budget.epochs(config, workdir, start_time, steps_per_epoch,
                                              measure, say)


def _measure(probe, make_step, batch_args, n_steps, forward, test_inputs, eval_bs, mesh):
  """For a time budget: ``(compile_s, step_s, eval_s)`` of this run's train step (on
  ``probe``, a throwaway state) and of a full evaluation pass."""
  compile_s, step_s, trained = budget.measure_step(make_step, probe, batch_args, n_steps)
  head = test_inputs[:eval_bs]                          # probe's own buffers were donated
  input_pipeline.predict(forward, trained.params, head, eval_bs, mesh)     # compiles
  t0 = time.perf_counter()
  input_pipeline.predict(forward, trained.params, head, eval_bs, mesh)
  eval_s = (time.perf_counter() - t0) * -(-test_inputs.shape[0] // eval_bs)
  return compile_s, step_s, eval_s


def _turned_accuracy(task, state, inputs, labels, eval_bs, mesh, turns, logits,
                     interpolation="bilinear"):
  """Class accuracy of the class log-probabilities averaged over ``turns`` copies of each
  test input turned by ``k / turns`` of the group's rotation step (360/n degrees for C_n and
  D_n, 360 for a plain model), k = 0 .. turns-1: the invariant readout symmetrised over a
  finer set of angles at test time (continuous turns, :func:`eqnn.ops.rotate` with the
  config's ``interpolation``)."""
  from eqnn import ops, readouts
  name = task.action.group.name if task.equivariant else "C1"
  n = task.group_order // (2 if name.startswith("D") else 1)
  step = 2 * jnp.pi / n / turns

  def class_logp(out):
    out = readouts.class_logits(out) if task.equivariant else out
    return jax.nn.log_softmax(out, -1)

  # One compilation for every turn: the angle is an argument, not a constant of the trace.
  turned = jax.jit(lambda p, x, a: class_logp(task.model.apply(
      p, ops.rotate(x, jnp.full((x.shape[0],), a, x.dtype), interpolation=interpolation))))
  total = np.asarray(class_logp(jnp.asarray(logits)))
  for k in range(1, turns):
    fwd = lambda p, x, a=jnp.float32(step * k): turned(p, x, a)
    total = total + input_pipeline.predict(fwd, state.params, inputs, eval_bs, mesh)
  return {"test_class_accuracy_turned": float(np.mean(total.argmax(-1) == labels)),
          "eval_turns": turns}


class _Health:
  """Whether every loss and parameter so far was finite: ``flag`` is a device scalar the
  train step updates; :meth:`check` reads it (a host sync, done only where the loop syncs
  anyway: logging, saving, stopping) and raises :class:`Diverged` if it went false."""

  def __init__(self, flag, step, config, ckpts):
    self.flag, self.last_ok, self.config, self.ckpts = flag, step, config, ckpts

  def check(self, step: int) -> None:
    if not bool(parallel.fetch(self.flag)):
      raise Diverged(_diverged_message(self.config, self.last_ok, step, self.ckpts.latest_step()))
    self.last_ok = step


def _complete(workdir, step, say, budgeted=False):
  path = os.path.join(workdir, "results.json")
  more = (f"its epochs were planned for its time budget ({budget.FILE})" if budgeted else
          "raise --config.num_epochs to train it further")
  say(f"the run in {workdir} is complete (step {step}); its results are in {path}: {more}, "
      f"or pass --fresh to start anew")
  with open(path) as f:
    return json.load(f)


def _diverged_message(config, last_ok, step, last_checkpoint):
  resume = (f"rerun the same command with a lower learning rate to continue from the last good "
            f"checkpoint (step {last_checkpoint}), e.g. --config.learning_rate="
            f"{config.learning_rate / 10:g}" if last_checkpoint is not None else
            f"no checkpoint was saved: rerun with a lower learning rate, e.g. "
            f"--config.learning_rate={config.learning_rate / 10:g}")
  return (f"training diverged: the loss or the parameters became NaN or infinite between step "
          f"{last_ok} and step {step}. Nothing was saved after that and no results were "
          f"written; {resume}")


def _results(config, task, state, logits, labels, elements, step, images_per_s, start_time):
  return {
      "config": config.to_dict(), "model": task.model.__class__.__name__,
      "group": task.action.group.name, "test_transformed": bool(config.test_transformed),
      "train_transformed": bool(config.train_transformed),
      **_prefixed(metrics.evaluate(task, logits, labels, elements)),
      "ambiguity": metrics.ambiguity_breakdown(task, logits, labels, elements),
      "wall_time_s": time.time() - start_time, "train_images_per_s": images_per_s,
      "parameters": steps.parameter_count(state.params), "steps": step,
      "devices": [str(d) for d in jax.devices()], "processes": jax.process_count(),
  }


def _prefixed(m: dict[str, Any]) -> dict[str, Any]:
  return {f"test_{k}": v for k, v in m.items()}


def _stop_preempted(ckpts, step, state, say, signal_name):
  ckpts.save(step, state)
  ckpts.wait()
  say(f"{signal_name} received: saved a checkpoint at step {step} in {ckpts.directory}; "
      f"exiting. Run the same command again to resume from it.")
  return {"preempted": True, "step": step}


def _describe(task, state, steps_per_epoch, num_epochs, mesh, workdir) -> str:
  group = task.action.group.name if task.equivariant else "no group"
  kinds = sorted({d.device_kind for d in mesh.devices.flat})
  return (f"{task.model.__class__.__name__} over {group}: "
          f"{steps.parameter_count(state.params):,} parameters, {steps_per_epoch} steps/epoch, "
          f"{num_epochs} epochs, {mesh.devices.size} device(s) in {jax.process_count()} "
          f"process(es)" + (", training data in per-host shards" if jax.process_count() > 1 else "")
          + f"\ndevices: {', '.join(str(d) for d in mesh.devices.flat)} ({', '.join(kinds)})"
          + f"\nwriting to {os.path.abspath(workdir)}: metrics.jsonl, tensorboard/, "
          f"checkpoints/, results.json and figures")


def _write_results(workdir, config, results, task, state, test_split, logits, elements):
  """Figures (when the config asks) and results.json, from the first process."""
  if config.make_figures:
    from experiments import figures  # matplotlib only when figures are wanted
    figures.make_all(workdir, task, state, test_split, logits, test_split.labels, elements)
    results["figures"] = sorted(f for f in os.listdir(workdir) if f.endswith(".png"))
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=2)
