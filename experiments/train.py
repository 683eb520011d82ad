"""Train and evaluate an equivariant network (or its plain baseline): the training loop.

``train_and_evaluate(config, workdir)`` strings the rooms together; ``mnist_rotated.py``
only parses flags. Rooms: :mod:`experiments.tasks` (group, model, sizes),
:mod:`experiments.input_pipeline` (data on the devices, batches, prediction),
:mod:`experiments.steps` (optimiser, loss, the jitted step), :mod:`experiments.metrics`,
:mod:`experiments.checkpoints` (and preemption), :mod:`experiments.logs`,
:mod:`experiments.parallel` (mesh and sharding). Random numbers come from four keys split
once from the seed: ``fold_in(key, epoch)`` orders the data, ``fold_in(key, step)`` moves
training inputs, so a resumed run draws what an uninterrupted one would.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from experiments import checkpoints, input_pipeline, logs, metrics, parallel, steps, tasks
from experiments.validation import ConfigError, validate_config

__all__ = ["ConfigError", "train_and_evaluate"]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       start_time: float | None = None) -> dict[str, Any]:
  """Runs the experiment; writes metrics.jsonl, checkpoints, results.json and figures.

  Returns the results dict, or ``{"preempted": True, "step": ...}`` if SIGTERM arrived (a
  checkpoint of that step is saved first).
  """
  start_time = time.time() if start_time is None else start_time
  validate_config(config)
  main = parallel.is_main()
  say = logs.say if main else (lambda msg: None)
  mesh = parallel.mesh()
  parallel.check_batch(config.batch_size, mesh)
  if main:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json(indent=2))

  task = tasks.build_task(config)
  ds = input_pipeline.load_dataset(config)
  task.action.validate(ds.train.inputs[:1])
  train_inputs, train_labels = input_pipeline.put_train_set(ds.train, mesh)
  init_key, data_key, step_key, test_key = jax.random.split(jax.random.key(config.seed), 4)
  test_inputs, test_labels, test_elements = input_pipeline.test_set(
      test_key, ds.test, task.action, config.test_transformed)

  bs, n_train = config.batch_size, train_inputs.shape[0]
  steps_per_epoch = n_train // bs
  if steps_per_epoch == 0:
    raise ConfigError(f"config.batch_size = {bs} is larger than the {n_train} training examples")
  total_steps = steps_per_epoch * config.num_epochs
  state = steps.create_train_state(task, config, init_key, total_steps)
  state = parallel.put_tree(state, parallel.replicated(mesh))
  ckpts = checkpoints.Checkpoints(workdir, config.keep_checkpoints)
  state, _ = ckpts.restore_latest(state, say)
  train_step = steps.make_train_step(task, bs, steps_per_epoch, config.train_transformed,
                                     parallel.batch_sharded(mesh), config.microbatches)
  epoch_perm = input_pipeline.epoch_permutations(data_key, n_train, mesh)
  forward = jax.jit(task.model.apply)
  eval_bs = -(-config.eval_batch_size // mesh.devices.size) * mesh.devices.size
  predict = lambda: input_pipeline.predict(forward, state.params, test_inputs, eval_bs, mesh)

  step = int(parallel.fetch(state.step))
  progress = logs.Progress(total_steps, bs, step) if main else None
  say(_describe(task, state, steps_per_epoch, config.num_epochs, mesh))
  logits = None    # the last evaluation's, reused if it was of the final state
  with logs.MetricsLog(workdir, main) as log, checkpoints.Preemption() as preemption:
    while step < total_steps:
      epoch = step // steps_per_epoch
      perm, losses = epoch_perm(epoch), []
      while step < (epoch + 1) * steps_per_epoch:
        state, loss = train_step(state, train_inputs, train_labels, perm, step_key)
        step += 1
        losses.append(loss)
        if step % config.log_every_steps == 0:
          lv = float(parallel.fetch(loss))
          if progress:
            progress.update(step, epoch + 1, lv)
          log.write({"kind": "train", "step": step, "epoch": epoch + 1, "loss": lv,
                     "elapsed_s": time.time() - start_time})
        if config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0:
          ckpts.save(step, state)
        if preemption.requested(step, config.log_every_steps):
          return _stop_preempted(ckpts, step, state, say)
      if progress:
        progress.end_line()
      ckpts.save(step, state)
      if (epoch + 1) % config.eval_every_epochs == 0 or step == total_steps:
        t_eval = time.time()
        logits = predict()
        rec = {"kind": "eval", "step": step, "epoch": epoch + 1,
               "train_loss": float(parallel.fetch(jnp.mean(jnp.stack(losses)))),
               "elapsed_s": time.time() - start_time,
               **_prefixed(metrics.evaluate(task, logits, test_labels, test_elements))}
        log.write(rec)
        if progress:
          progress.exclude(time.time() - t_eval)
        say(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in rec.items()}))
  ckpts.wait()

  logits = predict() if logits is None else logits   # None: restarted after its last step
  results = _results(config, task, state, logits, test_labels, test_elements, step,
                     progress.images_per_s(step) if progress else None, start_time)
  if main:
    _write_results(workdir, config, results, task, state, ds.test, logits, test_elements)
  return results


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


def _stop_preempted(ckpts, step, state, say):
  ckpts.save(step, state)
  ckpts.wait()
  say(f"\nSIGTERM received: saved a checkpoint at step {step} in {ckpts.directory}; "
      f"exiting. Run the same command again to resume from it.")
  return {"preempted": True, "step": step}


def _describe(task, state, steps_per_epoch, num_epochs, mesh) -> str:
  group = task.action.group.name if task.equivariant else "no group"
  return (f"{task.model.__class__.__name__} over {group}: "
          f"{steps.parameter_count(state.params):,} parameters, {steps_per_epoch} steps/epoch, "
          f"{num_epochs} epochs, {mesh.devices.size} device(s) in {jax.process_count()} "
          f"process(es)" + (", training data in per-host shards" if jax.process_count() > 1 else ""))


def _write_results(workdir, config, results, task, state, test_split, logits, elements):
  """Figures (when the config asks) and results.json, from the first process."""
  if config.make_figures:
    from experiments import figures  # matplotlib only when figures are wanted
    figures.make_all(workdir, task, state, test_split, logits, test_split.labels, elements)
    results["figures"] = sorted(f for f in os.listdir(workdir) if f.endswith(".png"))
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=2)
