"""The optimiser, the loss and the jitted train step: the pure JAX part of training."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state

from eqnn import data, ops
from experiments import tasks


def learning_rate(c: ml_collections.ConfigDict, total_steps: int):
  """The config's learning rate: a schedule ``step -> rate`` or a constant."""
  if c.schedule == "cosine":
    warm = min(c.warmup_steps, total_steps // 2)
    return optax.warmup_cosine_decay_schedule(0.0, c.learning_rate, warm,
                                              max(total_steps, warm + 1), end_value=0.0)
  return c.learning_rate


def make_optimizer(c: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
  lr = learning_rate(c, total_steps)
  if c.weight_decay:
    return optax.adamw(lr, weight_decay=c.weight_decay)
  return optax.adam(lr)


def create_train_state(task: tasks.Task, c: ml_collections.ConfigDict, key: jax.Array,
                       total_steps: int) -> train_state.TrainState:
  """Fresh parameters from ``key`` and the config's optimiser."""
  params = jax.jit(task.model.init)(key, jnp.zeros((1,) + task.input_shape))
  return train_state.TrainState.create(apply_fn=task.model.apply, params=params,
                                       tx=make_optimizer(c, total_steps))


def parameter_count(params) -> int:
  return int(sum(p.size for p in jax.tree.leaves(params)))


def loss_fn(params, apply_fn, inputs, targets, flat=lambda logits: logits):
  """Mean softmax cross entropy of ``flat(apply_fn(params, inputs))`` against integer targets."""
  logits = flat(apply_fn(params, inputs))
  return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()


def update(state, inputs, targets, microbatches: int = 1, flat=lambda logits: logits):
  """One optimiser step on a batch: ``(state, loss)``.

  ``microbatches > 1`` computes the same gradient (the batch mean) over that many slices in
  sequence: less activation memory, and faster where a whole batch's activations do not
  stay in cache (`make bench` measures it).
  """
  grad_fn = jax.value_and_grad(functools.partial(loss_fn, flat=flat))
  if microbatches <= 1:
    loss, grads = grad_fn(state.params, state.apply_fn, inputs, targets)
    return state.apply_gradients(grads=grads), loss
  n = inputs.shape[0]
  if n % microbatches:
    raise ValueError(f"batch {n} does not split into {microbatches} micro-batches")
  xs = inputs.reshape((microbatches, n // microbatches) + inputs.shape[1:])
  ys = targets.reshape((microbatches, n // microbatches) + targets.shape[1:])
  # A Python loop, unrolled at trace time, not lax.scan: XLA's CPU backend runs the
  # convolutions inside a while loop on one thread.
  loss, grads = jnp.zeros(()), jax.tree.map(jnp.zeros_like, state.params)
  for i in range(microbatches):
    li, gi = grad_fn(state.params, state.apply_fn, xs[i], ys[i])
    loss, grads = loss + li, jax.tree.map(jnp.add, grads, gi)
  grads = jax.tree.map(lambda g: g / microbatches, grads)
  return state.apply_gradients(grads=grads), loss / microbatches


def all_finite(loss, params) -> jax.Array:
  """A scalar bool: the loss and every parameter are finite."""
  leaves = [jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(params)]
  return jnp.logical_and(jnp.isfinite(loss), jnp.all(jnp.stack(leaves)))


def make_train_step(task: tasks.Task, batch_size: int, steps_per_epoch: int, transform: bool,
                    batch_sharding=None, microbatches: int = 1, rotate: bool = False):
  """A jitted step ``(state, inputs, labels, perm, key, healthy) -> (state, loss, healthy)``.

  The batch is gathered on the device from the epoch's permutation; the state is donated.
  ``transform``: move each training input by a random group element (labels follow), drawn
  from ``fold_in(key, step)``. ``rotate``: turn each training image by a uniform random angle
  in [0, 360) degrees (``ops.rotate``, continuous; joint labels at the nearest group
  element). ``healthy`` (a device scalar) stays True while every loss and
  parameter has been finite: the loop reads it only when it reads the loss or saves, so
  the check costs no host sync per step.
  """
  traces = []

  @functools.partial(jax.jit, donate_argnums=0)
  def step(state, inputs, labels, perm, key, healthy):
    # Guard against recompiles (a changed shape or dtype would retrace every step). Not
    # chex.assert_max_traces: it keys its counter on hash(fn), which a new closure can reuse.
    traces.append(1)
    if len(traces) > 1:
      raise AssertionError("the train step was traced twice: an input changed shape or dtype")
    i = state.step % steps_per_epoch
    idx = jax.lax.dynamic_slice(perm, (i * batch_size,), (batch_size,))
    x, m = inputs[idx], labels[idx]
    if batch_sharding is not None:     # each device computes its slice of the batch
      x = jax.lax.with_sharding_constraint(x, batch_sharding)
      m = jax.lax.with_sharding_constraint(m, batch_sharding)
    g = jnp.zeros_like(m)
    if transform:
      x, g = data.transform_randomly(jax.random.fold_in(key, state.step), x, task.action)
    if rotate:
      angles = jax.random.uniform(jax.random.fold_in(jax.random.fold_in(key, state.step), 1),
                                  (x.shape[0],), x.dtype, 0.0, 2 * jnp.pi)
      x, g = ops.rotate(x, angles), task.nearest_elements(angles)
    state, loss = update(state, x, task.targets(m, g), microbatches, task.flat_logits)
    return state, loss, jnp.logical_and(healthy, all_finite(loss, state.params))

  return step
