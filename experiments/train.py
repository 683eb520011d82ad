"""Train and evaluate an equivarified CNN (or its plain baseline) on transformed images.

``train_and_evaluate(config, workdir)`` is the whole experiment; ``mnist_rotated.py`` only
parses flags. The training set lives on the device; each jitted, donated step gathers its
batch by index from a per-epoch permutation drawn from ``fold_in(key, epoch)``, and draws
its random group elements from ``fold_in(key, step)``, so a resumed run sees the same data
and the same random numbers as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import signal
import sys
import threading
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax.training import train_state

from eqnn import actions, data, groups
from eqnn import nn as enn
from experiments import parallel

GROUP_ACTIONS = {
    "C1": lambda: actions.rotations(1),
    "C2": lambda: actions.rotations(2),
    "C4": lambda: actions.rotations(4),
    "D4": actions.rotations_reflections,
    # Cyclic shifts of 28 x 28 images by multiples of 7 pixels: C4 x C4 on the torus.
    "T4x4": lambda: actions.translations(28, 28, 7),
    # The 24 permutations of the 4 points of a set [4, 2].
    "S4": lambda: actions.permute_points(*groups.symmetric(4), axis=-2),
}
MODELS = ("lifted", "plain")
ARCHITECTURES = ("cnn", "mlp")
# Digits that look the same after some elements of D4 (f mirrors left-right, so f r^2
# mirrors top-bottom): a prediction off by such an element is right "up to the digit's
# own symmetry".
DIGIT_SYMMETRIES = {0: ("r^2", "f", "f r^2"), 1: ("r^2", "f", "f r^2"),
                    8: ("r^2", "f", "f r^2"), 3: ("f r^2",)}


class ConfigError(ValueError):
  """A config value that cannot work; the message names the field."""


def validate_config(c: ml_collections.ConfigDict) -> None:
  def need(ok, field, msg):
    if not ok:
      raise ConfigError(f"config.{field} = {c.get(field)!r}: {msg}")
  need(c.group in GROUP_ACTIONS, "group", f"choose one of {sorted(GROUP_ACTIONS)}")
  need(c.model in MODELS, "model", f"choose one of {MODELS}")
  need(c.architecture in ARCHITECTURES, "architecture", f"choose one of {ARCHITECTURES}")
  need(len(c.pools) == len(c.conv_features), "pools",
       f"need one pool window per conv ({len(c.conv_features)})")
  need(len(c.conv_features) >= 1, "conv_features", "need at least one conv")
  need(c.impl in enn.IMPLS, "impl", f"choose one of {enn.IMPLS}")
  for f in ("batch_size", "num_epochs", "eval_batch_size", "log_every_steps"):
    need(int(c[f]) > 0, f, "must be positive")
  need(c.learning_rate > 0, "learning_rate", "must be positive")
  need(c.schedule in ("cosine", "constant"), "schedule", "choose 'cosine' or 'constant'")
  need(c.microbatches >= 1 and c.batch_size % c.microbatches == 0, "microbatches",
       f"must be >= 1 and divide config.batch_size = {c.batch_size}")


@dataclasses.dataclass
class Problem:
  """Everything static about a run: model, action, sizes."""

  model: nn.Module
  action: actions.ImageAction
  lifted: bool
  num_classes: int

  @property
  def group_order(self) -> int:
    return self.action.group.order if self.lifted else 1


def build_problem(c: ml_collections.ConfigDict, num_classes: int) -> Problem:
  action = GROUP_ACTIONS[c.group]()
  lifted = c.model == "lifted"
  if c.architecture == "mlp":
    kw = dict(features=tuple(c.mlp_features), num_classes=num_classes)
    model = enn.LiftedMLP(action, **kw) if lifted else enn.MLP(**kw)
    return Problem(model, action, lifted, num_classes)
  kw = dict(conv_features=tuple(c.conv_features), pools=tuple(c.pools),
            dense_features=tuple(c.dense_features), num_classes=num_classes,
            kernel_size=c.kernel_size)
  model = enn.LiftedCNN(action, impl=c.impl, **kw) if lifted else enn.PlainCNN(**kw)
  return Problem(model, action, lifted, num_classes)


def load_dataset(c: ml_collections.ConfigDict) -> data.Dataset:
  if c.dataset == "mnist":
    ds = data.load_mnist(c.data_dir)
  elif c.dataset == "point_sets":
    ds = data.point_sets(c.seed)
  else:
    ds = data.load_tfds(c.dataset, c.tfds_data_dir or None, download=c.tfds_download)
  return data.Dataset(ds.name, ds.train.take(c.max_train_examples or None),
                      ds.test.take(c.max_test_examples or None), ds.num_classes)


def make_optimizer(c: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
  if c.schedule == "cosine":
    warm = min(c.warmup_steps, total_steps // 2)
    lr = optax.warmup_cosine_decay_schedule(0.0, c.learning_rate, warm,
                                            max(total_steps, warm + 1), end_value=0.0)
  else:
    lr = c.learning_rate
  if c.weight_decay:
    return optax.adamw(lr, weight_decay=c.weight_decay)
  return optax.adam(lr)


def targets(problem: Problem, labels, elements):
  """Joint labels ``g * K + m`` for the lifted model; plain digit labels otherwise."""
  if problem.lifted:
    return data.equivariant_labels(labels, elements, problem.num_classes)
  return labels


def loss_fn(params, apply_fn, images, labels):
  logits = apply_fn(params, images)
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def update(state, images, labels, microbatches: int = 1):
  """One optimiser step on a batch: ``(state, loss)``.

  ``microbatches > 1`` computes the same gradient (the batch mean) over that many slices in
  sequence: less activation memory, and on CPU faster for wide layers whose batch-128
  activations fall out of cache.
  """
  grad_fn = jax.value_and_grad(loss_fn)
  if microbatches <= 1:
    loss, grads = grad_fn(state.params, state.apply_fn, images, labels)
    return state.apply_gradients(grads=grads), loss
  n = images.shape[0]
  if n % microbatches:
    raise ValueError(f"batch {n} does not split into {microbatches} micro-batches")
  xs = images.reshape((microbatches, n // microbatches) + images.shape[1:])
  ys = labels.reshape((microbatches, n // microbatches) + labels.shape[1:])

  # A Python loop, unrolled at trace time, not lax.scan: XLA's CPU backend runs the
  # convolutions inside a while loop on one thread.
  loss, grads = jnp.zeros(()), jax.tree.map(jnp.zeros_like, state.params)
  for i in range(microbatches):
    li, gi = grad_fn(state.params, state.apply_fn, xs[i], ys[i])
    loss, grads = loss + li, jax.tree.map(jnp.add, grads, gi)
  grads = jax.tree.map(lambda g: g / microbatches, grads)
  return state.apply_gradients(grads=grads), loss / microbatches


def make_train_step(problem: Problem, batch_size: int, steps_per_epoch: int,
                    transform: bool, batch_sharding=None, microbatches: int = 1):
  """A jitted step ``(state, images, labels, perm, key) -> (state, loss)``.

  The batch is gathered on the device from the epoch's permutation; the state is donated.
  ``transform``: move each training image by a random group element (labels follow).
  """

  traces = []

  @functools.partial(jax.jit, donate_argnums=0)
  def step(state, images, labels, perm, key):
    # Guard against recompiles (a changed shape or dtype would retrace every step). Not
    # chex.assert_max_traces: it keys its counter on hash(fn), which a new closure can reuse.
    traces.append(1)
    if len(traces) > 1:
      raise AssertionError("the train step was traced twice: an input changed shape or dtype")
    i = state.step % steps_per_epoch
    idx = jax.lax.dynamic_slice(perm, (i * batch_size,), (batch_size,))
    x, m = images[idx], labels[idx]
    if batch_sharding is not None:     # each device computes its slice of the batch
      x = jax.lax.with_sharding_constraint(x, batch_sharding)
      m = jax.lax.with_sharding_constraint(m, batch_sharding)
    g = jnp.zeros_like(m)
    if transform:
      x, g = data.transform_randomly(jax.random.fold_in(key, state.step), x, problem.action)
    return update(state, x, targets(problem, m, g), microbatches)

  return step


def predict(fwd, params, images: np.ndarray, batch_size: int, mesh) -> np.ndarray:
  """Logits ``fwd(params, batch)`` for all ``images`` (host numpy, every process holds all),
  in sharded batches; ``fwd`` is jitted once per run by the caller."""
  sharding = parallel.batch_sharded(mesh)
  n = images.shape[0]
  out = []
  for s in range(0, n, batch_size):
    batch = images[s:s + batch_size]
    pad = batch_size - batch.shape[0]
    if pad:
      batch = np.concatenate([batch, np.zeros((pad,) + batch.shape[1:], batch.dtype)])
    out.append(parallel.fetch(fwd(params, parallel.put(batch, sharding)))[:batch_size - pad])
  return np.concatenate(out)


def readouts(problem: Problem, logits: np.ndarray):
  """``(joint, digit, element)`` predictions; digit and element by logsumexp marginals."""
  if not problem.lifted:
    return None, logits.argmax(-1), None
  z = logits.reshape(len(logits), problem.group_order, problem.num_classes)
  joint = logits.argmax(-1)
  digit = np.asarray(jax.nn.logsumexp(z, axis=1)).argmax(-1)   # invariant: forget g
  element = np.asarray(jax.nn.logsumexp(z, axis=2)).argmax(-1)
  return joint, digit, element


def metrics_from_predictions(problem: Problem, logits, labels, elements) -> dict[str, Any]:
  joint, digit, element = readouts(problem, logits)
  out = {"digit_accuracy": float(np.mean(digit == labels))}
  if problem.lifted:
    want = data.equivariant_labels(labels, elements, problem.num_classes)
    out["joint_accuracy"] = float(np.mean(joint == want))
    out["angle_accuracy"] = float(np.mean(element == elements))
    group = problem.action.group
    if problem.num_classes == 10 and "r^2" in group.element_names:
      pg, pm = data.decode_labels(joint, problem.num_classes)
      ok = np.zeros((10, group.order), bool)           # ok[m, s]: digit m looks the same after s
      ok[:, 0] = True
      for m, names in DIGIT_SYMMETRIES.items():
        for name in names:
          if name in group.element_names:
            ok[m, group.index(name)] = True
      rel = group.table[group.inverse[elements], pg]     # g^-1 g': the element the guess is off by
      out["joint_accuracy_up_to_symmetry"] = float(np.mean((pm == labels) & ok[labels, rel]))
  return out


def ambiguity_breakdown(problem: Problem, logits, labels, elements) -> dict[str, int]:
  """Joint errors explained by a half turn: (m, g) -> (m, g r^2) for m in {0, 1, 8}, and
  (6, g) <-> (9, g r^2). Only for groups that contain r^2 (C4, D4)."""
  group = problem.action.group
  if not problem.lifted or "r^2" not in group.element_names:
    return {}
  half = group.index("r^2")
  joint = logits.argmax(-1)
  pg, pm = data.decode_labels(joint, problem.num_classes)
  wrong = pg * problem.num_classes + pm != labels + elements * problem.num_classes
  turned = pg == group.table[elements, half]
  out = {"errors": int(wrong.sum())}
  for m in (0, 1, 8):
    out[f"{m}_half_turn"] = int(np.sum(wrong & (labels == m) & (pm == m) & turned))
  out["6_as_9_half_turn"] = int(np.sum(wrong & (labels == 6) & (pm == 9) & turned))
  out["9_as_6_half_turn"] = int(np.sum(wrong & (labels == 9) & (pm == 6) & turned))
  return out


class Progress:
  """A one-line progress bar on stderr with images/s and ETA."""

  def __init__(self, total_steps: int, batch_size: int, start_step: int):
    self.total, self.bs = total_steps, batch_size
    self.t0, self.s0 = time.time(), start_step
    self.excluded = 0.0      # seconds spent on evaluation, not training

  def exclude(self, seconds: float):
    self.excluded += seconds

  def _elapsed(self):
    return max(time.time() - self.t0 - self.excluded, 1e-9)

  def update(self, step: int, epoch: int, loss: float):
    dt = self._elapsed()
    rate = (step - self.s0) / dt
    eta = (self.total - step) / rate if rate > 0 else float("nan")
    sys.stderr.write(f"\repoch {epoch} step {step}/{self.total} loss {loss:.4f} | "
                     f"{rate * self.bs:,.0f} img/s | ETA {_fmt(eta)}   ")
    sys.stderr.flush()

  def images_per_s(self, step: int) -> float:
    """Training throughput, compilation included, evaluation excluded."""
    return (step - self.s0) * self.bs / self._elapsed()


def _fmt(seconds: float) -> str:
  if not np.isfinite(seconds):
    return "?"
  m, s = divmod(int(seconds), 60)
  return f"{m}m{s:02d}s"


def parameter_count(params) -> int:
  return int(sum(np.prod(p.shape) for p in jax.tree.leaves(params)))


class Preempted(Exception):
  """Raised inside the loop when SIGTERM arrived; caught by train_and_evaluate."""


def _install_sigterm_handler():
  """SIGTERM (what schedulers send before preemption) sets a flag the loop checks per step."""
  flag = {"set": False}
  if threading.current_thread() is not threading.main_thread():
    return flag, None        # signal handlers can only be installed from the main thread
  previous = signal.getsignal(signal.SIGTERM)

  def handler(signum, frame):
    del signum, frame
    flag["set"] = True

  signal.signal(signal.SIGTERM, handler)
  return flag, previous


def _preempted(flag, step: int, every: int) -> bool:
  """Whether to stop now. With several processes all must stop at the same step (each
  saves its part of the checkpoint), so the flags are combined every ``every`` steps."""
  if jax.process_count() == 1:
    return flag["set"]
  if step % every:
    return False
  from jax.experimental import multihost_utils
  return bool(np.any(multihost_utils.process_allgather(np.array(flag["set"]))))


def restore_latest(manager, state, log=print):
  """Restores the newest readable checkpoint; a corrupt one is reported and skipped."""
  manager.reload()
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      restored = manager.restore(step, args=ocp.args.StandardRestore(state))
    except Exception as e:  # orbax raises many types for a damaged checkpoint
      log(f"checkpoint at step {step} is unreadable ({type(e).__name__}: {str(e)[:200]}); "
          f"trying the one before it")
      continue
    log(f"resumed from checkpoint at step {step} in {manager.directory}")
    return restored, step
  return state, None


def input_shape(c: ml_collections.ConfigDict) -> tuple[int, ...]:
  """The shape of one model input for a config (without loading the data)."""
  if c.dataset == "point_sets":
    return (4, 2)
  if c.dataset == "mnist":
    return (28, 28, 1)
  return load_dataset(c).train.images.shape[1:]


def load_checkpoint(workdir: str, step: int | None = None):
  """``(config, problem, step, params)`` of a run's checkpoint, on this process's devices.

  Works whatever device topology the run was saved from (the target is built here).
  """
  with open(os.path.join(workdir, "config.json")) as f:
    config = ml_collections.ConfigDict(json.load(f))
  num_classes = 5 if config.dataset == "point_sets" else 10
  problem = build_problem(config, num_classes)
  params = problem.model.init(jax.random.key(0), jnp.zeros((1,) + input_shape(config)))
  state = train_state.TrainState.create(apply_fn=problem.model.apply, params=params,
                                        tx=make_optimizer(config, 1))
  manager = ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")))
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {workdir}/checkpoints: train first")
  state = manager.restore(step, args=ocp.args.StandardRestore(state))
  return config, problem, step, state.params


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       start_time: float | None = None) -> dict[str, Any]:
  """Runs the experiment; writes metrics.jsonl, checkpoints, results.json and figures.

  Returns the results dict, or ``{"preempted": True, "step": ...}`` if SIGTERM arrived (a
  checkpoint of that step is saved first).
  """
  start_time = time.time() if start_time is None else start_time
  validate_config(config)
  main = parallel.is_main()
  say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if main else (lambda msg: None)
  mesh = parallel.mesh()
  parallel.check_batch(config.batch_size, mesh)
  eval_bs = -(-config.eval_batch_size // mesh.devices.size) * mesh.devices.size
  if main:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json(indent=2))

  ds = load_dataset(config)
  problem = build_problem(config, ds.num_classes)
  problem.action.validate(ds.train.images[:1])
  replicated = parallel.replicated(mesh)
  if jax.process_count() > 1:      # each host keeps its own shard of the training set
    train_images = parallel.put_host_shards(data.as_inputs(ds.train.images), mesh)
    train_labels = parallel.put_host_shards(ds.train.labels, mesh)
  else:
    train_images = parallel.put(data.as_inputs(ds.train.images), replicated)
    train_labels = parallel.put(ds.train.labels, replicated)

  root = jax.random.key(config.seed)
  init_key, data_key, step_key, test_key = jax.random.split(root, 4)
  del root
  # The test set: each image moved by a seeded random group element, once, on the host.
  test_images = data.as_inputs(ds.test.images)
  test_elements = np.zeros(len(ds.test.labels), np.int32)
  if config.test_transformed:
    moved, g = jax.jit(data.transform_randomly, static_argnums=2)(
        test_key, test_images, problem.action)
    test_images, test_elements = np.asarray(moved), np.asarray(g)
  test_labels = ds.test.labels

  bs = config.batch_size
  n_train = train_images.shape[0]
  steps_per_epoch = n_train // bs
  if steps_per_epoch == 0:
    raise ConfigError(f"config.batch_size = {bs} is larger than the {n_train} training images")
  total_steps = steps_per_epoch * config.num_epochs
  params = jax.jit(problem.model.init)(init_key, jnp.zeros((1,) + ds.train.images.shape[1:]))
  state = train_state.TrainState.create(apply_fn=problem.model.apply, params=params,
                                        tx=make_optimizer(config, total_steps))
  state = parallel.put_tree(state, replicated)
  n_params = parameter_count(state.params)

  ckpt_dir = os.path.abspath(os.path.join(workdir, "checkpoints"))
  manager = ocp.CheckpointManager(ckpt_dir, options=ocp.CheckpointManagerOptions(
      max_to_keep=config.keep_checkpoints, create=True, enable_async_checkpointing=False))
  state, _ = restore_latest(manager, state, say)

  train_step = make_train_step(problem, bs, steps_per_epoch, config.train_transformed,
                               parallel.batch_sharded(mesh), config.microbatches)
  perm_fn = jax.jit(lambda e: jax.random.permutation(jax.random.fold_in(data_key, e), n_train),
                    out_shardings=replicated)
  forward = jax.jit(problem.model.apply)
  log = open(os.path.join(workdir, "metrics.jsonl"), "a") if main else None

  def write(record):
    if log:
      log.write(json.dumps(record) + "\n")
      log.flush()

  def save(step):
    if step not in manager.all_steps():
      manager.save(step, args=ocp.args.StandardSave(state))

  step = int(parallel.fetch(state.step))
  progress = Progress(total_steps, bs, step) if main else None
  say(f"{problem.model.__class__.__name__} over "
      f"{problem.action.group.name if problem.lifted else 'no group'}: {n_params:,} parameters, "
      f"{steps_per_epoch} steps/epoch, {config.num_epochs} epochs, {mesh.devices.size} "
      f"device(s) in {jax.process_count()} process(es)"
      + (", training data in per-host shards" if jax.process_count() > 1 else ""))
  last_logits = None    # the last evaluation's logits, reused if it was of the final state
  sigterm, previous_handler = _install_sigterm_handler()
  try:
    while step < total_steps:
      epoch = step // steps_per_epoch
      perm = perm_fn(epoch)
      losses = []
      while step < (epoch + 1) * steps_per_epoch:
        state, loss = train_step(state, train_images, train_labels, perm, step_key)
        step += 1
        losses.append(loss)
        if step % config.log_every_steps == 0:
          lv = float(parallel.fetch(loss))
          if progress:
            progress.update(step, epoch + 1, lv)
          write({"kind": "train", "step": step, "epoch": epoch + 1, "loss": lv,
                 "elapsed_s": time.time() - start_time})
        if config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0:
          save(step)
        if _preempted(sigterm, step, config.log_every_steps):
          raise Preempted()
      if main:
        sys.stderr.write("\n")
      save(step)
      if (epoch + 1) % config.eval_every_epochs == 0 or step == total_steps:
        t_eval = time.time()
        logits = last_logits = predict(forward, state.params, test_images, eval_bs, mesh)
        m = metrics_from_predictions(problem, logits, test_labels, test_elements)
        mean_loss = float(parallel.fetch(jnp.mean(jnp.stack(losses))))
        rec = {"kind": "eval", "step": step, "epoch": epoch + 1, "train_loss": mean_loss,
               "elapsed_s": time.time() - start_time, **{f"test_{k}": v for k, v in m.items()}}
        write(rec)
        if progress:
          progress.exclude(time.time() - t_eval)
        say(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in rec.items()}))
  except Preempted:
    save(step)
    manager.wait_until_finished()
    say(f"\nSIGTERM received: saved a checkpoint at step {step} in {ckpt_dir}; exiting. "
        f"Run the same command again to resume from it.")
    return {"preempted": True, "step": step}
  finally:
    if previous_handler is not None:
      signal.signal(signal.SIGTERM, previous_handler)
    if log:
      log.close()
  manager.wait_until_finished()

  resumed_finished = last_logits is None   # a run restarted after its last step
  logits = (predict(forward, state.params, test_images, eval_bs, mesh) if resumed_finished
            else last_logits)
  final = metrics_from_predictions(problem, logits, test_labels, test_elements)
  results = {
      "config": config.to_dict(),
      "model": problem.model.__class__.__name__,
      "group": problem.action.group.name,
      "test_transformed": bool(config.test_transformed),
      "train_transformed": bool(config.train_transformed),
      **{f"test_{k}": v for k, v in final.items()},
      "ambiguity": ambiguity_breakdown(problem, logits, test_labels, test_elements),
      "wall_time_s": time.time() - start_time,
      "train_images_per_s": progress.images_per_s(step) if progress else None,
      "parameters": n_params,
      "steps": step,
      "devices": [str(d) for d in jax.devices()],
      "processes": jax.process_count(),
  }
  if main and config.make_figures:
    from experiments import figures  # matplotlib only when figures are wanted
    figures.make_all(workdir, problem, state, ds.test, logits, test_labels, test_elements)
    results["figures"] = sorted(f for f in os.listdir(workdir) if f.endswith(".png"))
  if main:
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump(results, f, indent=2)
  return results
