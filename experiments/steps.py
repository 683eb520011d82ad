"""The optimiser, the loss and the jitted train step: the pure JAX part of training."""

from __future__ import annotations

import functools
import inspect

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state

from eqnn import data, ops
from experiments import tasks
# XLA CPU's fusions, re-exported: the step's callers and tests read them from here.
from experiments.fusions import (CPU_FUSIONS, FIXED_FUSIONS, YNN_FUSION_OPTION,  # noqa: F401
                                 compiler_options, refused, jit_for)


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


# The variables of a model are trained by the optimiser, except these collections: state the
# forward pass itself updates in training mode (BatchNorm's running averages).
STATE_COLLECTIONS = ("batch_stats",)


def _only_params(tx: optax.GradientTransformation) -> optax.GradientTransformation:
  """``tx`` on the ``params`` collection; collections of state get no update (and no weight
  decay): :func:`update` writes them from the forward pass."""
  label = lambda variables: {k: "state" if k in STATE_COLLECTIONS else "train" for k in variables}
  return optax.multi_transform({"train": tx, "state": optax.set_to_zero()}, label)


def create_train_state(task: tasks.Task, c: ml_collections.ConfigDict, key: jax.Array,
                       total_steps: int) -> train_state.TrainState:
  """Fresh variables from ``key`` and the config's optimiser.

  ``state.params`` holds all of the model's variables (``{"params": ..., "batch_stats": ...}``),
  so ``model.apply(state.params, x)`` evaluates it everywhere (running averages, no dropout);
  the optimiser moves only the ``params`` collection.
  """
  params = jax.jit(task.model.init)(key, jnp.zeros((1,) + task.input_shape))
  tx = make_optimizer(c, total_steps)
  if any(k in STATE_COLLECTIONS for k in params):
    tx = _only_params(tx)
  return train_state.TrainState.create(apply_fn=task.model.apply, params=params, tx=tx)


def takes_train_flag(model) -> bool:
  """Whether ``model.__call__`` has a ``train`` argument (batch norm, dropout)."""
  return "train" in inspect.signature(model.__call__).parameters


def splits_at_head(model) -> bool:
  """Whether ``model.__call__`` has a ``stage`` argument (its features, its head apart)."""
  return "stage" in inspect.signature(model.__call__).parameters


def parameter_count(params) -> int:
  return int(sum(p.size for p in jax.tree.leaves(params)))


def loss_fn(params, apply_fn, inputs, targets, flat=lambda logits: logits, train_key=None,
            label_smoothing: float = 0.0):
  """Mean softmax cross entropy of ``flat(apply_fn(params, inputs))`` against integer targets,
  and the model's updated state collections (``{}`` for a model without).

  ``label_smoothing`` (alpha): the target puts 1 - alpha on the label and alpha spread evenly
  over all K outputs (``optax.smooth_labels``); 0 is the plain integer-label cross entropy.

  ``train_key`` (for a model with a ``train`` argument): call it in training mode, batch
  statistics from this batch, dropout drawn from the key.
  """
  if train_key is None:
    logits, new_state = apply_fn(params, inputs), {}
  else:
    mutable = [k for k in params if k in STATE_COLLECTIONS]
    logits, new_state = apply_fn(params, inputs, train=True, mutable=mutable,
                                 rngs={"dropout": train_key})
  return cross_entropy(flat(logits), targets, label_smoothing), dict(new_state)


def cross_entropy(flat_logits, targets, label_smoothing: float = 0.0):
  """The mean softmax cross entropy against integer targets (see :func:`loss_fn`)."""
  if label_smoothing:
    soft = optax.smooth_labels(jax.nn.one_hot(targets, flat_logits.shape[-1]), label_smoothing)
    return optax.softmax_cross_entropy(flat_logits, soft).mean()
  return optax.softmax_cross_entropy_with_integer_labels(flat_logits, targets).mean()


def update(state, inputs, targets, microbatches: int = 1, flat=lambda logits: logits,
           train_key=None, label_smoothing: float = 0.0, head_apart: bool = False,
           batch_sharding=None):
  """One optimiser step on a batch: ``(state, loss)``.

  ``microbatches > 1`` computes the same gradient (the batch mean) over that many slices in
  sequence: less activation memory, and faster where a whole batch's activations do not
  stay in cache (`make bench` measures it). Batch statistics are then those of each slice,
  and running averages advance once per slice. ``train_key``, ``label_smoothing``: see
  :func:`loss_fn`.

  ``head_apart`` (a model with a ``stage`` argument, :class:`eqnn.models.EquivariantCNN`):
  with micro-batches, only the convs run in slices; the head runs once on the whole batch's
  features, so its weights are read, and their gradient written, once per step instead of
  once per slice (:func:`_sliced_features`). The same gradient, to float rounding; dropout
  in the head draws one mask for the batch. Every slice's activations then stay alive until
  the head's gradient: the memory of the whole batch's, not of one slice's.

  ``batch_sharding`` (the batch's sharding over several devices, or None): each slice is
  spread over all the devices as the batch is (``tests/parallel_test.py``). Sliced by a
  reshape to ``[microbatches, B / microbatches, ...]``, a batch sharded in contiguous blocks
  had its sharding moved onto the slices' axis, and XLA ran every slice whole on every
  device: make train's network on two host devices in 4 slices at 1,519-1,683 images/s,
  2,803-3,070 with each slice spread (one device: 3,143-3,573; scratch, 2026-12-05).
  """
  if head_apart and microbatches > 1:
    return _sliced_features(state, inputs, targets, microbatches, flat, train_key,
                            label_smoothing, batch_sharding)
  grad_fn = jax.value_and_grad(
      functools.partial(loss_fn, flat=flat, label_smoothing=label_smoothing), has_aux=True)
  keys = ([None] * microbatches if train_key is None
          else list(jax.random.split(train_key, microbatches)))
  if microbatches <= 1:
    (loss, new_state), grads = grad_fn(state.params, state.apply_fn, inputs, targets,
                                       train_key=keys[0])
    return _with_state(state.apply_gradients(grads=grads), new_state), loss
  xs, ys = _slices(inputs, targets, microbatches, batch_sharding)
  # A Python loop, unrolled at trace time, not lax.scan: XLA's CPU backend runs the
  # convolutions inside a while loop on one thread.
  loss, grads = jnp.zeros(()), jax.tree.map(jnp.zeros_like, state.params)
  variables = state.params
  for i in range(microbatches):
    (li, new_state), gi = grad_fn(variables, state.apply_fn, xs[i], ys[i], train_key=keys[i])
    variables = {**variables, **new_state}
    loss, grads = loss + li, jax.tree.map(jnp.add, grads, gi)
  grads = jax.tree.map(lambda g: g / microbatches, grads)
  state = _with_state(state.apply_gradients(grads=grads), _state_of(variables))
  return state, loss / microbatches


def _slices(inputs, targets, microbatches, sharding=None):
  """The batch's ``microbatches`` contiguous slices, of inputs and of targets (lists), each
  laid out by ``sharding`` where given (:func:`_spread`)."""
  n = inputs.shape[0]
  if n % microbatches:
    raise ValueError(f"batch {n} does not split into {microbatches} micro-batches")
  return ([_spread(a, sharding) for a in jnp.split(inputs, microbatches)],
          [_spread(a, sharding) for a in jnp.split(targets, microbatches)])


def _spread(a, sharding):
  """``a`` laid out by ``sharding`` (a slice of the batch over all its devices), or as it is."""
  return a if sharding is None else jax.lax.with_sharding_constraint(a, sharding)


def _sliced_features(state, inputs, targets, microbatches, flat, train_key, label_smoothing,
                     sharding=None):
  """:func:`update` with the features in slices and the head once: each slice's features and
  their pullback (``jax.vjp``), the head's loss and its gradients (parameters and features)
  on the whole batch, then each slice's pullback of its part of the features' cotangent."""
  xs, _ = _slices(inputs, targets, microbatches, sharding)
  apply, variables = state.apply_fn, state.params
  train = train_key is not None
  mutable = [k for k in variables if k in STATE_COLLECTIONS]

  def features(v, x):
    if not train:
      return apply(v, x, stage="features"), {}
    y, new_state = apply(v, x, train=True, stage="features", mutable=mutable)
    return y, dict(new_state)

  def head_loss(v, y):
    logits = (apply(v, y, train=True, stage="head", rngs={"dropout": train_key}) if train
              else apply(v, y, stage="head"))
    return cross_entropy(flat(logits), targets, label_smoothing)

  ys, pullbacks = [], []
  for x in xs:                       # unrolled, as in update
    y, pullback, new_state = jax.vjp(functools.partial(features, x=x), variables, has_aux=True)
    variables = {**variables, **new_state}
    ys.append(y)
    pullbacks.append(pullback)
  loss, (grads, dy) = jax.value_and_grad(head_loss, (0, 1))(variables, jnp.concatenate(ys))
  for pullback, d in zip(pullbacks, jnp.split(dy, microbatches)):
    grads = jax.tree.map(jnp.add, grads, pullback(_spread(d, sharding))[0])
  return _with_state(state.apply_gradients(grads=grads), _state_of(variables)), loss


def _state_of(variables) -> dict:
  """The state collections (batch statistics) of ``variables``."""
  return {k: variables[k] for k in variables if k in STATE_COLLECTIONS}


def _with_state(state, new_state):
  """``state`` with its state collections (batch statistics) replaced by ``new_state``."""
  if not new_state:
    return state
  return state.replace(params={**state.params, **new_state})


def all_finite(loss, params) -> jax.Array:
  """A scalar bool: the loss and every parameter are finite."""
  leaves = [jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(params)]
  return jnp.logical_and(jnp.isfinite(loss), jnp.all(jnp.stack(leaves)))


def config_train_step(task: tasks.Task, c: ml_collections.ConfigDict, steps_per_epoch: int,
                      microbatches: int, batch_sharding=None, programs: int = 2,
                      cpu_fusions: str = "default"):
  """:func:`make_train_step` with the config's batch size, augmentation and loss."""
  return make_train_step(task, c.batch_size, steps_per_epoch, transform=c.train_transformed,
                         batch_sharding=batch_sharding, microbatches=microbatches,
                         rotate=c.train_rotated, scale=c.train_scale, shift=c.train_shift,
                         interpolation=c.interpolation, label_smoothing=c.label_smoothing,
                         programs=programs, cpu_fusions=cpu_fusions, head_apart=c.head_apart)


def make_train_step(task: tasks.Task, batch_size: int, steps_per_epoch: int, *,
                    transform: bool = False, batch_sharding=None, microbatches: int = 1,
                    rotate: bool = False,
                    scale: float = 0.0, shift: float = 0.0, interpolation: str = "bilinear",
                    label_smoothing: float = 0.0, programs: int = 2,
                    cpu_fusions: str = "default", head_apart: bool = False):
  """A step ``(state, inputs, labels, perm, key, healthy) -> (state, loss, healthy)``.

  The batch is gathered on the device from the epoch's permutation; the state is donated.
  ``transform``: move each training input by a random group element (labels follow), drawn
  from ``fold_in(key, step)``. ``rotate``: turn each training image by a uniform random angle
  in [0, 360) degrees (``ops.rotate`` with ``interpolation``, continuous; joint labels at
  the nearest group element); with ``rotate``, also magnify each by a uniform factor in
  [1 - scale, 1 + scale] and move it by a uniform shift in [-shift, shift] pixels along each
  axis (augmentation beyond the group; labels keep the turn's element). ``healthy`` (a device
  scalar) stays True while every loss and parameter has been finite: the loop reads it only
  when it reads the loss or saves, so the check costs no host sync per step.
  ``label_smoothing``: see :func:`loss_fn`.

  ``programs``: 2 (the default) runs two jitted programs in turn, with no host sync between
  them: the batch (gather, augmentation) and the update; 1 compiles both into one. In one
  program, XLA's CPU backend ran the C16 MNIST-rot update about 1.3x slower beside the
  resampling augmentation, which alone takes under 1 ms (`make bench` times both forms).

  ``cpu_fusions``: how XLA's CPU backend compiles the update (:func:`compiler_options`):
  one of :data:`FIXED_FUSIONS`; the same function either way, to float rounding.
  ``head_apart``: with micro-batches, the head once on the whole batch (:func:`update`).
  """
  if programs not in (1, 2):
    raise ValueError(f"programs = {programs}: 1 (one jitted program) or 2 (batch, then update)")
  options = compiler_options(cpu_fusions)
  if head_apart and not splits_at_head(task.model):
    raise ValueError(f"head_apart: {type(task.model).__name__} has no stage argument to run "
                     "its convs and its head apart (eqnn.models.EquivariantCNN has)")
  traces = []

  def once(name):
    # Guard against recompiles (a changed shape or dtype would retrace every step). Not
    # chex.assert_max_traces: it keys its counter on hash(fn), which a new closure can reuse.
    traces.append(name)
    if traces.count(name) > 1:
      raise AssertionError(f"the train step's {name} was traced twice: an input changed shape "
                           "or dtype")

  @jax.jit
  def batch(step, inputs, labels, perm, key):
    once("batch")
    i = step % steps_per_epoch
    idx = jax.lax.dynamic_slice(perm, (i * batch_size,), (batch_size,))
    x, m = inputs[idx], labels[idx]
    if batch_sharding is not None:     # each device computes its slice of the batch
      x = jax.lax.with_sharding_constraint(x, batch_sharding)
      m = jax.lax.with_sharding_constraint(m, batch_sharding)
    g = jnp.zeros_like(m)
    if transform:
      x, g = data.transform_randomly(jax.random.fold_in(key, step), x, task.action)
    if rotate:
      k_angle, k_scale, k_shift = jax.random.split(
          jax.random.fold_in(jax.random.fold_in(key, step), 1), 3)
      b = x.shape[0]
      angles = jax.random.uniform(k_angle, (b,), x.dtype, 0.0, 2 * jnp.pi)
      scales = (jax.random.uniform(k_scale, (b,), x.dtype, 1.0 - scale, 1.0 + scale)
                if scale else None)
      shifts = jax.random.uniform(k_shift, (b, 2), x.dtype, -shift, shift) if shift else None
      x, g = (ops.rotate(x, angles, scales, shifts, interpolation),
              task.nearest_elements(angles))
    return x, task.targets(m, g)

  @functools.partial(jit_for, donate_argnums=0, compiler_options=options)
  def learn(state, x, targets, key, healthy):
    once("update")
    train_key = (jax.random.fold_in(jax.random.fold_in(key, state.step), 2)
                 if takes_train_flag(task.model) else None)
    state, loss = update(state, x, targets, microbatches, task.flat_logits, train_key,
                         label_smoothing, head_apart, batch_sharding)
    return state, loss, jnp.logical_and(healthy, all_finite(loss, state.params))

  if programs == 1:
    @functools.partial(jit_for, donate_argnums=0, compiler_options=options)
    def fused(state, inputs, labels, perm, key, healthy):
      x, targets = batch.__wrapped__(state.step, inputs, labels, perm, key)
      return learn.__wrapped__(state, x, targets, key, healthy)
    return fused

  def step(state, inputs, labels, perm, key, healthy):
    x, targets = batch(state.step, inputs, labels, perm, key)
    return learn(state, x, targets, key, healthy)

  return step
