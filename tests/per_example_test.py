"""eqnn.per_example.check: what it proves holds (f on a batch is f on its parts, at any batch
size), and what couples a batch, or reads its size, is refused with the reason."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eqnn import per_example, spatial

X = jax.random.normal(jax.random.key(0), (6, 8, 8, 2))
W = jax.random.normal(jax.random.key(1), (8 * 8 * 2, 5)) / 8


class _Net(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(4, (3, 3))(x))
    x = nn.max_pool(x, (2, 2), (2, 2)) + nn.avg_pool(x, (2, 2), (2, 2))
    x = nn.LayerNorm()(x)
    return jax.nn.softmax(nn.Dense(3)(x.reshape(x.shape[0], -1)))


class _BatchNorm(nn.Module):
  train: bool

  @nn.compact
  def __call__(self, x):
    return nn.BatchNorm(use_running_average=not self.train)(x)


def _flax(module):
  variables = jax.jit(module.init)(jax.random.key(2), X)
  return lambda x: module.apply(variables, x, mutable=False) if not isinstance(
      module, _BatchNorm) or not module.train else module.apply(
          variables, x, mutable=["batch_stats"])[0]


TABLE = jnp.arange(30.0).reshape(10, 3)
IDS = jnp.array([[1, 2, 3], [0, 0, 9], [4, 4, 4], [5, 6, 7], [8, 1, 2], [3, 3, 0]])

# (name, f, input): each maps every example on its own, by one rule for every batch size.
PER_EXAMPLE = [
    ("flax convnet", _flax(_Net()), X),
    ("batch norm at inference", _flax(_BatchNorm(False)), X),
    ("attention scores", lambda q: jnp.einsum("bqd,bkd->bqk", q, q), X[:, 0]),
    ("embedding lookup", lambda ids: TABLE[ids], IDS),
    ("columns by index", lambda x: x[:, jnp.array([3, 0, 1])], X[:, 0, 0]),
    ("pad, roll and cumsum within an image",
     lambda x: jnp.cumsum(jnp.roll(jnp.pad(x, ((0, 0), (1, 1), (0, 0), (0, 0))), 2, axis=1), 2), X),
    ("one-hot of the argmax", lambda x: jax.nn.one_hot(jnp.argmax(x.reshape(x.shape[0], -1), -1), 7), X),
    ("sort within an example", lambda x: jnp.sort(x.reshape(x.shape[0], -1), axis=-1), X),
    ("a stack within an example", lambda x: jnp.stack([x, 2 * x], 2), X),
    ("a Winograd conv (eqnn.spatial.conv)",
     lambda x: spatial.conv(x, jnp.ones((3, 3, 2, 3)), form="winograd"), X),
    ("zeros of the batch's shape made in a jit",
     lambda x: jax.jit(lambda: jnp.ones(x.shape))() * x, X),
]
# (name, f, input, the reason's start): not proved, and each of these does couple the batch or
# depend on its size.
NOT_PROVED = [
    ("batch norm in training", _flax(_BatchNorm(True)), X, "reduce_sum"),
    ("the batch's mean", lambda x: x - x.mean(0), X, "reduce_sum"),
    ("divides by the batch size", lambda x: x / x.shape[0], X, "f is another program"),
    # ... also where the size is read inside a call or a loop that takes no batched input
    ("the batch size read in a jit",
     lambda x: x * jax.jit(lambda: jnp.asarray(x.shape[0], jnp.float32))(), X,
     "f is another program"),
    ("the batch size read in a loop",
     lambda x: x * jax.lax.fori_loop(0, 2, lambda i, c: c + x.shape[0], 0.0), X,
     "f is another program"),
    ("the batch size as an axis of a per-example value",
     lambda x: (x[:, None] * jnp.ones((1, x.shape[0], 1, 1, 1))).sum(1), X, "f is another program"),
    ("the batch size as a power", lambda x: x ** x.shape[0], X, "f is another program"),
    ("a batch-long arange indexed per example",
     lambda x: jnp.take(jnp.arange(x.shape[0]), (x[:, 0, 0, 0] > 0).astype(int) * 9,
                        mode="clip")[:, None, None, None] * x, X, "gather: a value made from"),
    ("a sum over a batch-long arange", lambda x: x * jnp.arange(x.shape[0]).sum(), X,
     "mul: a value made from"),
    ("adds the row index", lambda x: x + jnp.arange(x.shape[0])[:, None, None, None], X, "add"),
    ("a sum over the batch", lambda x: x.sum(0), X, "reduce_sum"),
    ("stacks along the batch", lambda x: jnp.stack([x, x]).reshape((-1,) + x.shape[1:]), X,
     "stack"),
    ("rolls the batch", lambda x: jnp.roll(x, 1, axis=0), X, "slice"),
    ("cumsum along the batch", lambda x: jnp.cumsum(x, 0), X, "cumsum"),
    ("a dropout mask of the batch's shape",
     lambda x: x * jax.random.bernoulli(jax.random.key(0), 0.5, x.shape), X, "mul"),
]


@pytest.mark.parametrize("name,f,x", PER_EXAMPLE, ids=[c[0] for c in PER_EXAMPLE])
def test_what_is_proved_maps_each_example_on_its_own(name, f, x):
  verdict = per_example.check(f, x)
  assert verdict, verdict.reason
  # The claim itself: f on the batch is f on its parts, whatever their sizes.
  whole = f(x)
  parts = jnp.concatenate([f(x[:1]), f(x[1:4]), f(x[4:])])
  np.testing.assert_allclose(whole, parts, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,f,x,reason", NOT_PROVED, ids=[c[0] for c in NOT_PROVED])
def test_what_couples_the_batch_or_reads_its_size_is_not_proved(name, f, x, reason):
  verdict = per_example.check(f, x)
  assert not verdict and verdict.reason.startswith(reason), verdict.reason
  # Each really does: f on the batch is not f on its parts.
  whole, parts = f(x), jnp.concatenate([f(x[:1]), f(x[1:4]), f(x[4:])])
  assert whole.shape != parts.shape or not np.allclose(whole, parts, atol=1e-4)


def test_other_arguments_and_pytrees():
  # The batch is argument 1; a pytree input (both leaves batched) and a pytree output.
  f = lambda w, xs: {"y": jnp.tanh(xs["a"].reshape(xs["a"].shape[0], -1) @ w),
                     "z": xs["b"] * 2.0}
  xs = {"a": X, "b": X[:, 0, 0]}
  assert per_example.check(f, W, xs, argnum=1)
  # Non-array arguments are held as given (a static flag).
  g = lambda x, scale=None: x * scale if scale is not None else x
  assert per_example.check(g, X, scale=3.0)
  assert not per_example.check(f, W, xs, argnum=0)       # W's axis 0 is contracted
  assert not per_example.check(lambda x: x, jnp.float32(1.0))
  assert "differ" in per_example.check(lambda x: x, (X, X[:2])).reason
  # Python that branches on the batch size: the same rule at 6 and 12 (proved there), not
  # at 2 and 4, nor at 1 and 2; f that does not trace at a size: not proved, with the error.
  branchy = lambda x: x * 2 if x.shape[0] > 3 else x
  assert per_example.check(branchy, X)
  assert per_example.check(branchy, X[:2]).reason.startswith("f is another program at batch "
                                                             "size 2 than at 4")
  single = lambda x: x[0] if x.shape[0] == 1 else x      # a common "one example" special case
  assert per_example.check(single, X[:1]).reason.startswith("f is another program")
  fixed = lambda x: x[:, 0, 0, 0] + jnp.zeros(6)         # only at batch 6
  assert per_example.check(fixed, X).reason.startswith("f does not trace at batch sizes [12, 6]")


def test_a_proof_counts_the_batched_bytes_per_example():
  # What one more example adds to f's forward working set: every equation's batched outputs
  # (a call's, inside it, not twice), not the weights nor the values made without the input.
  x = jnp.ones((6, 3))                                   # 12 bytes per example
  f = lambda x: jnp.tanh(x * 2.0)                        # mul, tanh: 2 x 12
  assert per_example.check(f, x).bytes_per_example == 24
  g = lambda x: jax.jit(f)(x) @ jnp.ones((3, 5)) + jnp.arange(5.0)   # + 20 (dot) + 20 (add)
  assert per_example.check(g, x).bytes_per_example == 24 + 40
  assert per_example.check(lambda x: x - x.mean(0), x).bytes_per_example == 0   # not proved


def test_the_proof_is_conservative():
  # Per-example, but through a value with the batch off axis 0 (the image's rows flipped via
  # two transposes; a scan over time with the batch second, as RNNs run): not proved, so the
  # lift takes its vmap, the same function (tests/lift_test.py).
  flip_rows = lambda x: jnp.swapaxes(jnp.swapaxes(x, 0, 1)[::-1], 0, 1)
  np.testing.assert_allclose(flip_rows(X), X[:, ::-1])
  assert per_example.check(flip_rows, X).reason.startswith("transpose")

  def rnn(x):                                            # [B, T, C]: a running tanh sum
    step = lambda h, xt: (jnp.tanh(h + xt),) * 2
    return jax.lax.scan(step, jnp.zeros_like(x[:, 0]), jnp.swapaxes(x, 0, 1))[1]
  assert not per_example.check(rnn, X[:, :, 0])


def test_a_rule_that_breaks_is_not_a_proof(monkeypatch):
  # A rule that fails on parameters it does not know (say, another JAX version's) gives "not
  # proved" and the lift keeps its vmap, never an exception out of equivarify.
  import eqnn
  from eqnn import actions

  def broken(eqn, batched, b):
    raise KeyError("axes")
  monkeypatch.setattr(per_example, "_eqn_rule", broken)
  verdict = per_example.check(jnp.tanh, X)
  assert not verdict and "KeyError" in verdict.reason
  act = actions.rotations()
  np.testing.assert_allclose(eqnn.equivarify(jnp.tanh, act)(X),
                             eqnn.equivarify(jnp.tanh, act, vectorize=True)(X))


# A random pipeline of ops that each keep the batch (P) or not (C): the proof is sound (every
# "yes" satisfies f(x) = f on the parts) and complete on these ops (all-P pipelines pass).
_OPS = {
    "tanh": (True, jnp.tanh),
    "scale": (True, lambda x: x * jnp.linspace(0.5, 1.5, x.shape[-1])),
    "flatten-dense": (True, lambda x: jnp.tanh(x.reshape(x.shape[0], -1)[:, :16]
                                              @ jnp.ones((16, 4 * 4 * 2))).reshape(
                                                  x.shape[0], 4, 4, 2)),
    "pool": (True, lambda x: jnp.repeat(jnp.repeat(
        x.reshape(x.shape[0], 2, 2, 2, 2, 2).max((2, 4)), 2, 1), 2, 2)),
    "softmax": (True, lambda x: jax.nn.softmax(x, axis=(1, 2))),
    "conv": (True, lambda x: jax.lax.conv_general_dilated(
        x, jnp.full((3, 3, 2, 2), 0.1), (1, 1), "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"))),
    "flip rows, roll columns": (True, lambda x: jnp.roll(x[:, ::-1], 1, axis=2)),
    "sort within": (True, lambda x: jnp.sort(x, axis=1)),
    "gram": (True, lambda x: jnp.einsum("bhwc,bhvc->bhwv", x, x)[..., :2]),
    "batch roll": (False, lambda x: jnp.roll(x, 1, axis=0)),
    "batch sort": (False, lambda x: jnp.sort(x, axis=0)),
    "size as a power": (False, lambda x: x * 0.5 ** x.shape[0]),
    "arange of the batch, taken": (False, lambda x: x + jnp.take(
        jnp.arange(x.shape[0], dtype=x.dtype), (x[:, 0, 0, 0] > 0).astype(int) * 3,
        mode="clip")[:, None, None, None]),
    "batch mean": (False, lambda x: x - x.mean(0)),
    "batch max": (False, lambda x: x - x.max(0, keepdims=True)),
    "row index": (False, lambda x: x * jnp.arange(1.0, 1.0 + x.shape[0])[:, None, None, None]),
    "flip batch": (False, lambda x: x[::-1]),
    "by size": (False, lambda x: x / x.shape[0]),
    "size as an axis": (False, lambda x: (x[:, None] * jnp.ones((1, x.shape[0], 1, 1, 1))).sum(1)),
}


@settings(max_examples=40, deadline=None)
@given(names=st.lists(st.sampled_from(sorted(_OPS)), min_size=1, max_size=4))
def test_the_proof_is_sound_and_complete_on_random_pipelines(names):
  def f(x):
    for n in names:
      x = _OPS[n][1](x)
    return x
  x = jax.random.normal(jax.random.key(3), (5, 4, 4, 2))
  verdict = per_example.check(f, x)
  assert bool(verdict) == all(_OPS[n][0] for n in names), (names, verdict.reason)
  if verdict:
    np.testing.assert_allclose(f(x), jnp.concatenate([f(x[:2]), f(x[2:])]), atol=1e-5,
                               rtol=1e-5)
