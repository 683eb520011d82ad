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
import sys
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

from eqnn import actions, data
from eqnn import nn as enn

GROUP_ACTIONS = {
    "C1": lambda: actions.rotations(1),
    "C2": lambda: actions.rotations(2),
    "C4": lambda: actions.rotations(4),
    "D4": actions.rotations_reflections,
}
MODELS = ("lifted", "plain")


class ConfigError(ValueError):
  """A config value that cannot work; the message names the field."""


def validate_config(c: ml_collections.ConfigDict) -> None:
  def need(ok, field, msg):
    if not ok:
      raise ConfigError(f"config.{field} = {c.get(field)!r}: {msg}")
  need(c.group in GROUP_ACTIONS, "group", f"choose one of {sorted(GROUP_ACTIONS)}")
  need(c.model in MODELS, "model", f"choose one of {MODELS}")
  need(len(c.pools) == len(c.conv_features), "pools",
       f"need one pool window per conv ({len(c.conv_features)})")
  need(len(c.conv_features) >= 1, "conv_features", "need at least one conv")
  need(c.impl in enn.IMPLS, "impl", f"choose one of {enn.IMPLS}")
  for f in ("batch_size", "num_epochs", "eval_batch_size", "log_every_steps"):
    need(int(c[f]) > 0, f, "must be positive")
  need(c.learning_rate > 0, "learning_rate", "must be positive")
  need(c.schedule in ("cosine", "constant"), "schedule", "choose 'cosine' or 'constant'")


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
  kw = dict(conv_features=tuple(c.conv_features), pools=tuple(c.pools),
            dense_features=tuple(c.dense_features), num_classes=num_classes,
            kernel_size=c.kernel_size)
  if c.model == "lifted":
    model = enn.LiftedCNN(action, impl=c.impl, **kw)
  else:
    model = enn.PlainCNN(**kw)
  return Problem(model, action, c.model == "lifted", num_classes)


def load_dataset(c: ml_collections.ConfigDict) -> data.Dataset:
  if c.dataset == "mnist":
    ds = data.load_mnist(c.data_dir)
  else:
    ds = data.load_tfds(c.dataset, c.tfds_data_dir or None, download=c.tfds_download)
  return data.Dataset(ds.name, ds.train.take(c.max_train_examples or None),
                      ds.test.take(c.max_test_examples or None), ds.num_classes)


def make_optimizer(c: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
  if c.schedule == "cosine":
    lr = optax.warmup_cosine_decay_schedule(0.0, c.learning_rate, min(c.warmup_steps, total_steps),
                                            max(total_steps, 1), end_value=0.0)
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


def update(state, images, labels):
  """One optimiser step on a batch: ``(state, loss)``."""
  loss, grads = jax.value_and_grad(loss_fn)(state.params, state.apply_fn, images, labels)
  return state.apply_gradients(grads=grads), loss


def make_train_step(problem: Problem, batch_size: int, steps_per_epoch: int,
                    transform: bool):
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
    g = jnp.zeros_like(m)
    if transform:
      x, g = data.transform_randomly(jax.random.fold_in(key, state.step), x, problem.action)
    return update(state, x, targets(problem, m, g))

  return step


def predict(problem: Problem, state, images, batch_size: int) -> np.ndarray:
  """Logits ``[N, |G| * K]`` (or ``[N, K]``) for all images, in batches."""
  fwd = jax.jit(state.apply_fn)
  n = images.shape[0]
  out = []
  for s in range(0, n, batch_size):
    batch = images[s:s + batch_size]
    pad = batch_size - batch.shape[0]
    if pad:
      batch = jnp.concatenate([batch, jnp.zeros((pad,) + batch.shape[1:], batch.dtype)])
    out.append(fwd(state.params, batch)[:batch_size - pad])
  return np.asarray(jnp.concatenate(out))


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

  def update(self, step: int, epoch: int, loss: float):
    dt = max(time.time() - self.t0, 1e-9)
    rate = (step - self.s0) / dt
    eta = (self.total - step) / rate if rate > 0 else float("nan")
    sys.stderr.write(f"\repoch {epoch} step {step}/{self.total} loss {loss:.4f} | "
                     f"{rate * self.bs:,.0f} img/s | ETA {_fmt(eta)}   ")
    sys.stderr.flush()

  def images_per_s(self, step: int) -> float:
    return (step - self.s0) * self.bs / max(time.time() - self.t0, 1e-9)


def _fmt(seconds: float) -> str:
  if not np.isfinite(seconds):
    return "?"
  m, s = divmod(int(seconds), 60)
  return f"{m}m{s:02d}s"


def parameter_count(params) -> int:
  return int(sum(np.prod(p.shape) for p in jax.tree.leaves(params)))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       start_time: float | None = None) -> dict[str, Any]:
  """Runs the experiment; writes metrics.jsonl, checkpoints, results.json and figures."""
  start_time = time.time() if start_time is None else start_time
  validate_config(config)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json(indent=2))

  ds = load_dataset(config)
  problem = build_problem(config, ds.num_classes)
  train_images = jnp.asarray(data.to_float(ds.train.images))
  train_labels = jnp.asarray(ds.train.labels)
  problem.action.validate(train_images[:1])

  root = jax.random.key(config.seed)
  init_key, data_key, step_key, test_key = jax.random.split(root, 4)
  del root
  # The test set: each image moved by a seeded random group element, once.
  test_images = jnp.asarray(data.to_float(ds.test.images))
  test_elements = np.zeros(len(ds.test.labels), np.int32)
  if config.test_transformed:
    test_images, g = data.transform_randomly(test_key, test_images, problem.action)
    test_elements = np.asarray(g)
  test_labels = ds.test.labels

  bs = config.batch_size
  n_train = train_images.shape[0]
  steps_per_epoch = n_train // bs
  if steps_per_epoch == 0:
    raise ConfigError(f"config.batch_size = {bs} is larger than the {n_train} training images")
  total_steps = steps_per_epoch * config.num_epochs
  params = problem.model.init(init_key, train_images[:1])
  state = train_state.TrainState.create(apply_fn=problem.model.apply, params=params,
                                        tx=make_optimizer(config, total_steps))
  n_params = parameter_count(state.params)

  ckpt_dir = os.path.abspath(os.path.join(workdir, "checkpoints"))
  manager = ocp.CheckpointManager(ckpt_dir, options=ocp.CheckpointManagerOptions(
      max_to_keep=config.keep_checkpoints, create=True, enable_async_checkpointing=False))
  if manager.latest_step() is not None:
    state = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore(state))
    print(f"resumed from checkpoint at step {int(state.step)} in {ckpt_dir}", file=sys.stderr)

  train_step = make_train_step(problem, bs, steps_per_epoch, config.train_transformed)
  perm_fn = jax.jit(lambda e: jax.random.permutation(jax.random.fold_in(data_key, e), n_train))
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  log = open(metrics_path, "a")

  def write(record):
    log.write(json.dumps(record) + "\n")
    log.flush()

  step = int(state.step)
  progress = Progress(total_steps, bs, step)
  history = []
  print(f"{problem.model.__class__.__name__} over {problem.action.group.name if problem.lifted else 'no group'}: "
        f"{n_params:,} parameters, {steps_per_epoch} steps/epoch, {config.num_epochs} epochs",
        file=sys.stderr)
  while step < total_steps:
    epoch = step // steps_per_epoch
    perm = perm_fn(epoch)
    losses = []
    while step < (epoch + 1) * steps_per_epoch:
      state, loss = train_step(state, train_images, train_labels, perm, step_key)
      step += 1
      losses.append(loss)
      if step % config.log_every_steps == 0:
        lv = float(loss)
        progress.update(step, epoch + 1, lv)
        write({"kind": "train", "step": step, "epoch": epoch + 1, "loss": lv,
               "elapsed_s": time.time() - start_time})
      if config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0:
        manager.save(step, args=ocp.args.StandardSave(state))
    sys.stderr.write("\n")
    manager.save(step, args=ocp.args.StandardSave(state))
    if (epoch + 1) % config.eval_every_epochs == 0 or step == total_steps:
      logits = predict(problem, state, test_images, config.eval_batch_size)
      m = metrics_from_predictions(problem, logits, test_labels, test_elements)
      rec = {"kind": "eval", "step": step, "epoch": epoch + 1,
             "train_loss": float(jnp.mean(jnp.stack(losses))) if losses else None,
             "elapsed_s": time.time() - start_time, **{f"test_{k}": v for k, v in m.items()}}
      write(rec)
      history.append(rec)
      print(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in rec.items()}),
            file=sys.stderr)
  manager.wait_until_finished()
  log.close()

  logits = predict(problem, state, test_images, config.eval_batch_size)
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
      "train_images_per_s": progress.images_per_s(step),
      "parameters": n_params,
      "steps": step,
      "devices": [str(d) for d in jax.devices()],
  }
  if config.make_figures:
    from experiments import figures  # matplotlib only when figures are wanted
    figures.make_all(workdir, problem, state, ds.test, logits, test_labels, test_elements)
    results["figures"] = sorted(f for f in os.listdir(workdir) if f.endswith(".png"))
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=2)
  return results
