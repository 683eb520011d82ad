"""The train step: moved inputs with equivariant labels give the same step (the paper's
claim), and micro-batches give the same gradient."""

import re

import jax
import jax.numpy as jnp
import optax
import pytest
from flax.training import train_state

from eqnn import actions, data, models, readouts
from experiments import steps, tasks


def _state(model, x, lr=0.1):
  # Plain SGD: the update is lr * gradient, so equal gradients give equal parameters up to
  # float32 rounding. (Adam divides by |g| + eps, which turns the rounding noise of
  # gradients near zero, ~1e-12, into visible differences of the update.)
  params = jax.jit(model.init)(jax.random.key(0), x[:1])
  return train_state.TrainState.create(apply_fn=model.apply, params=params, tx=optax.sgd(lr))


def _digits(mnist_dir, n=32):
  ds = data.load_mnist(mnist_dir)
  return jnp.asarray(data.to_float(ds.train.inputs[:n])), jnp.asarray(ds.train.labels[:n])


def _max_diff(a, b):
  return max(jax.tree.leaves(jax.tree.map(lambda u, v: float(jnp.max(jnp.abs(u - v))), a, b)))


@pytest.mark.parametrize("gname", ["C4", "D4"])
def test_training_on_moved_images_gives_the_same_parameters(gname, mnist_dir):
  """The paper's claim: a step on g . batch with equivariant labels equals a step on batch."""
  act = tasks.action_by_name(gname)
  model = models.EquivariantCNN(act, (4, 8), (2, 2), (16,))
  x, m = _digits(mnist_dir)
  step = jax.jit(lambda s, x, y: steps.update(s, x, y, flat=readouts.joint_logits))
  upright, _ = step(_state(model, x), x, readouts.joint_labels(m, 0, 10))
  moved_x, g = data.transform_randomly(jax.random.key(3), x, act)
  moved, _ = step(_state(model, x), moved_x, readouts.joint_labels(m, g, 10))
  assert _max_diff(upright.params, moved.params) < 1e-6
  # Control: with the labels left upright, the step differs.
  wrong, _ = step(_state(model, x), moved_x, readouts.joint_labels(m, 0, 10))
  assert _max_diff(upright.params, wrong.params) > 1e-4


def test_microbatches_give_the_same_step(mnist_dir):
  model = models.EquivariantCNN(actions.rotations(), (4, 8), (2, 2), (16,))
  x, m = _digits(mnist_dir)
  y = readouts.joint_labels(m, 0, 10)
  step = jax.jit(lambda s, x, y, k: steps.update(s, x, y, k, flat=readouts.joint_logits),
                 static_argnums=3)
  one, l1 = step(_state(model, x), x, y, 1)
  four, l4 = step(_state(model, x), x, y, 4)
  assert abs(float(l1) - float(l4)) < 1e-5
  assert _max_diff(one.params, four.params) < 1e-6


@pytest.mark.parametrize("norm,smoothing,gname", [(False, 0.0, "C4"), (True, 0.1, "D4")])
def test_the_head_apart_from_the_slices_gives_the_same_step(norm, smoothing, gname, mnist_dir):
  """Convs in slices, the head once on the whole batch (``head_apart``): the same loss,
  parameters and running averages as the head in every slice, with batch norm (statistics
  per slice either way) and label smoothing, over C4 and D4 (not abelian); and not where the
  slices would differ."""
  model = models.EquivariantCNN(tasks.action_by_name(gname), (4, 8), (2, 2), (16,), norm=norm)
  x, m = _digits(mnist_dir)
  y = readouts.joint_labels(m, 0, 10)
  key = jax.random.key(2) if norm else None
  step = jax.jit(lambda s, x, y, k, apart: steps.update(
      s, x, y, k, readouts.joint_logits, key, smoothing, head_apart=apart), static_argnums=(3, 4))
  sliced, ls = step(_state(model, x), x, y, 4, False)
  apart, la = step(_state(model, x), x, y, 4, True)
  assert abs(float(ls) - float(la)) < 1e-5
  assert _max_diff(sliced.params, apart.params) < 1e-6
  if not norm:                                  # whole batch = slices without batch norm
    whole, _ = step(_state(model, x), x, y, 1, True)
    assert _max_diff(whole.params, apart.params) < 1e-6
  # Control: a step on another batch differs (the comparison above can fail).
  other, _ = step(_state(model, x), x[::-1] * 0.5, y, 4, True)
  assert _max_diff(other.params, apart.params) > 1e-4


def test_the_head_apart_needs_a_model_that_splits_at_its_head():
  task = tasks.Task(models.PlainCNN((4,), (2,), (8,)), actions.rotations(), False, 10,
                    (28, 28, 1), labels="class")
  with pytest.raises(ValueError, match="head_apart: PlainCNN has no stage argument"):
    steps.make_train_step(task, 8, 1, microbatches=2, head_apart=True)


def test_batch_statistics_come_from_the_forward_pass_not_the_optimiser(mnist_dir):
  import ml_collections
  model = models.EquivariantCNN(actions.rotations(), (4, 8), (2, 2), (16,), norm=True)
  x, m = _digits(mnist_dir)
  task = tasks.Task(model, actions.rotations(), True, 10, (28, 28, 1), labels="class")
  c = ml_collections.ConfigDict(dict(schedule="constant", learning_rate=1e-3,
                                     weight_decay=0.5, warmup_steps=0))
  state = steps.create_train_state(task, c, jax.random.key(0), 10)
  key = jax.random.key(5)
  new, loss = jax.jit(lambda s: steps.update(s, x, m, flat=task.flat_logits, train_key=key))(state)
  # The forward passes in training mode, compiled (op by op they took 20 s of the suite).
  forward = jax.jit(lambda p, x, k: model.apply(p, x, train=True, mutable=["batch_stats"],
                                                rngs={"dropout": k})[1])
  want = forward(state.params, x, jax.random.split(key, 1)[0])
  # Running averages are what the forward pass wrote (no Adam step, no weight decay on them).
  assert _max_diff(new.params["batch_stats"], want["batch_stats"]) < 1e-6
  assert _max_diff(new.params["batch_stats"], state.params["batch_stats"]) > 1e-4
  assert _max_diff(new.params["params"], state.params["params"]) > 1e-5
  # Micro-batches: the statistics advance once per slice, in order.
  two, _ = jax.jit(lambda s: steps.update(s, x, m, 2, task.flat_logits, key))(state)
  k1, k2 = jax.random.split(key, 2)
  s1 = forward(state.params, x[:16], k1)
  s2 = forward({**state.params, **s1}, x[16:], k2)
  assert _max_diff(two.params["batch_stats"], s2["batch_stats"]) < 1e-6


def test_label_smoothing_is_the_cross_entropy_with_smoothed_targets():
  """alpha = 0 is the integer-label loss; alpha > 0 puts 1 - alpha + alpha/K on the label and
  alpha/K elsewhere (checked by hand), and it is larger than the plain loss on confident
  correct logits (negative control: smoothing must change the loss)."""
  logits = jnp.array([[4.0, 0.0, -1.0], [0.5, 2.0, 0.0]])
  labels = jnp.array([0, 1])
  apply = lambda params, x: x
  plain, _ = steps.loss_fn({}, apply, logits, labels)
  zero, _ = steps.loss_fn({}, apply, logits, labels, label_smoothing=0.0)
  smooth, _ = steps.loss_fn({}, apply, logits, labels, label_smoothing=0.3)
  logp = jax.nn.log_softmax(logits)
  target = jnp.full((2, 3), 0.1).at[jnp.arange(2), labels].set(0.8)
  assert float(zero) == float(plain)
  assert float(smooth) == pytest.approx(float(-(target * logp).sum(-1).mean()), rel=1e-6)
  assert float(smooth) > float(plain) + 0.1


def test_one_program_and_two_take_the_same_augmented_step(mnist_dir):
  """The runner's step runs the batch (gather, random turns) and the update as two jitted
  programs (faster on CPU, `make bench`); compiled as one, the same step to float rounding."""
  from experiments.configs import rotated_mnist
  c = rotated_mnist.get_config("smoke")
  c.group = "C4"
  task = tasks.build_task(c)
  x, m = _digits(mnist_dir, 64)
  perm = jnp.arange(64)[::-1]
  start = steps.create_train_state(task, c, jax.random.key(0), 10)

  def run(step, key):      # a copy of one state: the step donates it, and a new optimiser
    s, healthy = jax.tree.map(jnp.copy, start), jnp.array(True)     # would be a new trace
    for _ in range(3):
      s, loss, healthy = step(s, x, m, perm, key, healthy)
    assert bool(healthy) and int(s.step) == 3
    return s.params, float(loss)
  make = lambda programs: steps.make_train_step(
      task, 16, 4, microbatches=2, rotate=True, scale=0.1, shift=1.0,
      interpolation="bicubic", label_smoothing=0.1, programs=programs)
  two = make(2)
  (p1, l1), (p2, l2) = run(make(1), jax.random.key(5)), run(two, jax.random.key(5))
  assert abs(l1 - l2) < 1e-5
  assert _max_diff(p1, p2) < 1e-5
  # Control: another key turns the digits by other angles, and the step differs.
  assert _max_diff(p2, run(two, jax.random.key(6))[0]) > 1e-4
  with pytest.raises(ValueError, match="programs = 3"):
    steps.make_train_step(task, 16, 4, programs=3)


def _ynnpack_ops(hlo: str) -> list[str]:
  """The ops (``convolution``, ``dot``, ...) inside the computations a compiled program's
  YNNPACK fusions call, from its HLO text."""
  called = set(re.findall(r"ynn_fusion[^\n]*calls=%([\w.\-]+)", hlo))
  ops, current = [], None
  for line in hlo.splitlines():
    head = re.match(r"^(?:ENTRY )?%([\w.\-]+) ", line)
    if head:
      current = head.group(1)
    elif current in called:
      ops += re.findall(r"= \S+ (convolution|dot)\(", line)
  return ops


def test_the_update_compiled_with_other_ynnpack_fusions_is_the_same_step(mnist_dir):
  """``cpu_fusions`` "no_ynnpack" and "ynnpack_dots" change how XLA's CPU backend compiles the
  update, not what it computes: three steps agree to float rounding; each option reaches the
  compiler (the compiled step has no YNNPACK fusion, or YNNPACK's dots and none of its
  convolutions, where XLA's default fuses both), and an unknown value is refused by name."""
  from experiments.configs import default
  c = default.get_config("smoke")
  task = tasks.build_task(c)
  x, m = _digits(mnist_dir, 64)
  perm = jnp.arange(64)
  start = steps.create_train_state(task, c, jax.random.key(0), 10)

  def run(step):
    s, healthy = jax.tree.map(jnp.copy, start), jnp.array(True)
    for _ in range(3):
      s, loss, healthy = step(s, x, m, perm, jax.random.key(1), healthy)
    return s.params, float(loss)
  make = lambda f: steps.make_train_step(task, 16, 4, cpu_fusions=f)
  p1, l1 = run(make("default"))
  for other in ("no_ynnpack", "ynnpack_dots"):
    p2, l2 = run(make(other))
    # Adam divides by the gradients' running size, so rounding reaches the parameters at
    # ~1e-5 (the learning rate is 2e-3 per step: a different step would move them by ~1e-3).
    assert abs(l1 - l2) < 1e-5 and _max_diff(p1, p2) < 1e-4, other
  assert _max_diff(p1, start.params) > 1e-3
  if jax.default_backend() == "cpu":
    assert steps.compiler_options("no_ynnpack") == {"xla_cpu_experimental_ynn_fusion_type": ""}
    # The options as the step passes them to jax.jit, on a conv and a dot big enough for
    # XLA's default to fuse both into YNNPACK (the smoke network's convs are too small).
    def conv_dot(x, k, w):
      y = jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
      return jnp.sum(jax.nn.relu(y) @ w)
    args = jnp.ones((8, 14, 14, 16)), jnp.ones((3, 3, 16, 32)), jnp.ones((32, 10))
    compiled = lambda f: _ynnpack_ops(jax.jit(conv_dot, compiler_options=steps.compiler_options(
        f)).lower(*args).compile().as_text())
    assert sorted(compiled("default")) == ["convolution", "dot"]              # control
    assert compiled("no_ynnpack") == [] and compiled("ynnpack_dots") == ["dot"]
  assert steps.compiler_options("default") is None
  for bad in ("auto", "none"):
    with pytest.raises(ValueError, match="cpu_fusions"):
      steps.make_train_step(task, 16, 4, cpu_fusions=bad)
