r"""Where a train step's milliseconds go: an :class:`eqnn.models.EquivariantCNN` step cut into
its layers, each timed forward and backward on its own with the shapes it has in the network.

    python -m experiments.profile_step --config=experiments/configs/default.py [--batch=128]

Each part is the layer's forward pass and its vector-Jacobian product (the gradients a train
step takes: weights, and inputs for every layer but the first), jitted alone and timed with
the others alternated round by round (`experiments.timing.alternate`). The whole step is timed
in the same rounds; "between the parts" is the whole minus their sum (what XLA fuses across
layer boundaries, or loses there). Executed GFLOP/s counts the multiply-adds each form really
does (the Fourier form's, not the expanded weights'): `make bench` puts them beside the same
run's matmul peak.

Beside each hidden conv layer, its plain convs alone (the Fourier basis's ``C_in -> C_out``
maps, or the expanded form's one conv) with the same shapes, forms, compilation and
multiply-adds, forward and backward; they are not parts of the step (left out of the sum).
The last row divides the step's FLOPs by those convs' time alone: the rate the step would run
at if everything but its hidden convs took no time, a bound for its share of the peak.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp


@dataclasses.dataclass
class Part:
  name: str
  run: Callable[[], object]        # one forward + backward, returns something to block on
  flops: float                     # executed FLOPs of ``run`` (0: memory-bound, not counted)
  repeat: int = 1                  # times per step (once per micro-batch)
  # A reference, not a part of the step: a layer's plain convs alone at its shapes, in its
  # forms (left out of the sum; they bound the step, see ``profile``).
  alone: bool = False
  head: bool = False               # the head's: once per step where the step runs it apart


def _vjp_runner(f, args, wrt, compiler_options=None, forms=(None, None)):
  """A jitted forward pass of ``f(*args)`` and its gradients with respect to the positions
  ``wrt``, as in a train step: the output is consumed (``<f(...), c>`` with a fixed random
  cotangent c, so that XLA can drop neither the forward pass nor the backward one).
  ``compiler_options``: ``jax.jit``'s, as the step's (XLA CPU's fusions); ``forms``: the
  network's ``(conv_form, kernel_gradient)``, set while ``f`` is traced
  (:func:`eqnn.spatial.forms`)."""
  from eqnn import spatial
  out = jax.eval_shape(f, *args)
  cot = jax.tree.map(lambda o: jax.random.normal(jax.random.key(7), o.shape, o.dtype), out)

  from experiments import fusions

  @functools.partial(fusions.jit_for, compiler_options=compiler_options)
  def fwd_bwd(cot, *a):
    def loss(*moving):
      full = list(a)
      for i, m in zip(wrt, moving):
        full[i] = m
      with spatial.forms(*forms):
        y = f(*full)
      return sum(jnp.vdot(o, c) for o, c in zip(jax.tree.leaves(y), jax.tree.leaves(cot)))
    return jax.value_and_grad(loss, argnums=tuple(range(len(wrt))))(*[a[i] for i in wrt])
  return lambda: fwd_bwd(cot, *args)


def cnn_parts(action, conv_features, pools, dense_features, num_classes, kernel_size,
              norm, batch, impl="auto", size=28, key=None, hidden="stacked",
              compiler_options=None, conv_form=None, kernel_gradient=None,
              head_batch=None) -> list[Part]:
  """The parts of an EquivariantCNN train step on ``[batch, size, size, 1]`` images
  (``hidden="gcnn"``: its G-CNN convs, turned into own frames before the last pooling), each
  compiled with ``compiler_options`` (the step's XLA CPU fusions) and its convs in the
  network's ``conv_form`` and ``kernel_gradient`` (None: "auto"); the head's parts at
  ``head_batch`` (default ``batch``; the whole batch where the step runs it apart)."""
  runner = functools.partial(_vjp_runner, compiler_options=compiler_options,
                             forms=(conv_form, kernel_gradient))
  from eqnn import ops
  from eqnn import spatial as spatial_lib
  from experiments import timing
  key = jax.random.key(0) if key is None else key
  keys = iter(jax.random.split(key, 64))
  rnd = lambda shape: jax.random.normal(next(keys), shape)
  from eqnn import models
  group, n = action.group, action.group.order
  ks = models.kernel_sizes(kernel_size, len(conv_features))
  k = ks[0]
  parts = []
  x = rnd((batch, size, size, 1))
  f0 = conv_features[0]
  gcnn = hidden == "gcnn"
  fused = models.first_block_fused(norm, hidden, len(conv_features))   # as EquivariantCNN
  first = pools[0] if fused else 0
  turned = not gcnn and ops.lift_pools_turned(impl, x, jnp.zeros((k, k, 1, f0)), action,
                                              relu_pool=first)
  lift_impl = ("G-CNN" if gcnn else "kernels" if turned
               else ops.resolve_impl(impl, "lift_conv", group))
  lift = ((lambda w, b, x: ops.gcnn_lift_conv(x, w, b, action, relu_pool=first)) if gcnn else
          (lambda w, b, x: ops.lift_conv(x, w, b, action, impl=impl, relu_pool=first)))
  taps = (jax.default_backend() == "cpu" and conv_form in (None, "auto")
          and spatial_lib.taps_fit((k, k, 1, f0), first)
          and (gcnn or turned or lift_impl == "vmap"))
  label = (f" + ReLU + {first}x{first} max pool ({lift_impl}{', taps, fused' if taps else ''})"
           if fused else f" ({lift_impl})")
  parts.append(Part(f"input lift 1->{f0} x |G|={n} @{size}{label}",
                    runner(lift, (rnd((k, k, 1, f0)), rnd((f0,)), x), (0, 1)),
                    2 * 2 * batch * size * size * k * k * f0 * n))
  h, cin = size, f0

  def relu_pool_part(i, h, c, pool):
    y = rnd((batch, h, h, n, c))
    if norm:
      from eqnn import layers
      bn = layers.GroupBatchNorm(group)
      v = bn.init(next(keys), y)
      parts.append(Part(f"batch norm {i} ({h}x{h}, {n}x{c} channels)",
                        runner(lambda p, y: bn.apply({**v, "params": p}, y, train=True,
                                                     mutable=["batch_stats"])[0],
                               (v["params"], y), (0, 1)), 0))
    parts.append(Part(f"ReLU + {pool}x{pool} max pool {i} ({h}x{h})",
                      runner(lambda y: ops.max_pool(jax.nn.relu(ops.to_channels(y)), pool),
                             (y,), (0,)), 0))

  if not fused:
    relu_pool_part(1, h, cin, pools[0])
  h //= max(pools[0], 1)

  def convs_alone(layer, units, h, k):
    """The plain convs ``layer`` runs, alone, forward and backward (kernels and inputs):
    what its multiply-adds cost at XLA's (or the form's) best, without the transforms,
    the layout changes and the bias around them."""
    ws = [rnd((k, k, a, b)) for _, a, b in units]
    xs = [rnd((batch * rows, h, h, a)) for rows, a, _ in units]
    shapes = ", ".join(f"{a}->{b}" + (f" x{rows}" if rows > 1 else "") for rows, a, b in units)
    return Part(f"{layer.name.split(':')[0]}'s convs alone: {shapes} @{h}",
                runner(lambda ws, xs: [spatial_lib.conv(x, w) for x, w in zip(xs, ws)],
                       (ws, xs), (0, 1)), layer.flops, alone=True)

  conv = ((lambda w, b, y: ops.gcnn_conv(y, w, b, action)) if gcnn else
          (lambda w, b, y: ops.group_conv(y, w, b, group, impl=impl)))
  for i, (f, pool, k) in enumerate(zip(conv_features[1:], pools[1:], ks[1:]), 2):
    conv_impl = "expanded" if gcnn else ops.resolve_impl(impl, "group_conv", group)
    parts.append(Part(f"{'G-CNN' if gcnn else 'group'} conv {i}: {cin}->{f} per element "
                      f"@{h} ({conv_impl})",
                      runner(conv, (rnd((k, k, n * cin, f)), rnd((f,)),
                                    rnd((batch, h, h, n, cin))), (0, 1, 2)),
                      3 * 2 * batch * sum(timing.conv_executed_macs(h, k, *u, conv_form or "auto")
                                          for u in timing.unit_convs(group, cin, f, conv_impl))))
    parts.append(convs_alone(parts[-1], timing.unit_convs(group, cin, f, conv_impl), h, k))
    if gcnn and i == len(conv_features):
      parts.append(Part(f"to own frames ({h}x{h}, {n}x{f} channels)",
                        runner(lambda y: ops.to_own_frames(y, action),
                               (rnd((batch, h, h, n, f)),), (0,)), 0))
    relu_pool_part(i, h, f, pool)
    h //= max(pool, 1)
    cin = f
  widths = list(dense_features) + [num_classes]
  dense_impl = ops.resolve_impl(impl, "group_dense", group)
  s = h * h
  hb = head_batch or batch           # the head's batch
  parts.append(Part(f"lifted dense {s}x{n}x{cin}->{widths[0]} ({dense_impl})",
                    runner(lambda w, b, y: ops.group_dense(y, w, b, group, impl=impl),
                           (rnd((s * n * cin, widths[0])), rnd((widths[0],)),
                            rnd((hb, h, h, n, cin))), (0, 1, 2)),
                    3 * 2 * hb * s * timing.layer_units(group, cin, widths[0], dense_impl),
                    head=True))

  def head(ws, hid, labels):
    for i, (w, b) in enumerate(ws):
      hid = jax.nn.relu(hid) @ w + b
    logp = jax.nn.log_softmax(hid.reshape(hb, -1))
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], 1))
  ws = [(rnd((a, b)) * 0.1, rnd((b,))) for a, b in zip(widths[:-1], widths[1:])]
  head_macs = sum(a * b for a, b in zip(widths[:-1], widths[1:])) * n
  parts.append(Part("shared dense layers + loss",
                    runner(head, (ws, rnd((hb, n, widths[0])),
                                  jnp.zeros((hb,), jnp.int32)), (0, 1)),
                    3 * 2 * hb * head_macs, head=True))
  return parts


def optimizer_part(params, tx) -> Part:
  """One optimiser update of ``params`` (gradients of the same shapes)."""
  params = jax.tree.map(jnp.copy, params)     # its own buffers: the whole step donates its own
  state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)

  @jax.jit
  def update(state, params):
    import optax
    u, state = tx.update(grads, state, params)
    return optax.apply_updates(params, u), state
  return Part(f"optimizer update ({sum(p.size for p in jax.tree.leaves(params)):,} parameters)",
              lambda: update(state, params), 0)


def profile(parts: list[Part], whole: Callable[[], object], whole_flops: float, rounds: int,
            alternate) -> list[dict]:
  """Rows ``{part, ms, share, gflops}``: the parts, their sum, the whole step and the gap;
  where the parts include convs alone (:attr:`Part.alone`), a last row bounds the step: its
  executed FLOPs over those convs' time alone, the rate the step would reach if everything
  but its hidden convs took no time and they ran as fast as alone."""
  runs = {p.name: p.run for p in parts}
  runs["whole train step"] = whole
  t = alternate(runs, rounds)
  t.update({p.name: t[p.name] * p.repeat for p in parts})
  total = t["whole train step"]
  rows = [{"part": p.name + (f" (x {p.repeat})" if p.repeat > 1 else ""), "ms": 1e3 * t[p.name],
           "share": t[p.name] / total,
           "gflops": p.repeat * p.flops / t[p.name] / 1e9 if p.flops else None} for p in parts]
  alone = sum(t[p.name] for p in parts if p.alone)
  parts_sum = sum(t[p.name] for p in parts if not p.alone)
  rows.append({"part": "sum of the parts", "ms": 1e3 * parts_sum, "share": parts_sum / total,
               "gflops": None})
  rows.append({"part": "between the parts (whole - sum)", "ms": 1e3 * (total - parts_sum),
               "share": (total - parts_sum) / total, "gflops": None})
  rows.append({"part": "whole train step", "ms": 1e3 * total, "share": 1.0,
               "gflops": whole_flops / total / 1e9})
  if alone:
    rows.append({"part": "bound: the step's FLOPs in its hidden convs' time alone",
                 "ms": 1e3 * alone, "share": alone / total, "gflops": whole_flops / alone / 1e9})
  return rows


def profile_config(c, batch: int, rounds: int, alternate) -> list[dict]:
  """The profile of config ``c``'s EquivariantCNN train step at ``batch``."""
  from flax.training import train_state
  from experiments import steps, tasks, timing
  task = tasks.build_task(c)
  m = task.model
  micro = c.microbatches
  if not micro:        # measured by the runner (experiments/budget.py): here likewise
    micro, _ = timing.fastest_microbatches(m, batch, m.num_classes, c.head_apart)
  # Its conv forms ("measured") and XLA CPU's fusions ("auto") likewise, in the runner's
  # order: after the micro-batches (the profile builds the config's own step below, so only
  # the choices are kept).
  forms, fusions, _ = timing.runner_forms_and_fusions(
      (c.conv_form, c.kernel_gradient), c.cpu_fusions, m, batch, m.num_classes, micro,
      head_apart=c.head_apart)
  m = m.clone(conv_form=forms[0], kernel_gradient=forms[1])
  options = steps.compiler_options(fusions)
  apart = c.head_apart and micro > 1          # the head once, on the whole batch
  parts = cnn_parts(m.action, m.conv_features, m.pools, m.dense_features, m.num_classes,
                    m.kernel_size, m.norm, batch // micro, m.impl, hidden=m.hidden,
                    compiler_options=options, conv_form=m.conv_form,
                    kernel_gradient=m.kernel_gradient, head_batch=batch if apart else None)
  for p in parts:
    p.repeat = 1 if apart and p.head else micro
  x = jax.random.normal(jax.random.key(1), (batch,) + task.input_shape)
  y = jnp.zeros((batch,), jnp.int32)
  variables = jax.jit(m.init)(jax.random.key(2), x[:1])
  tx = steps.make_optimizer(c, 1000)
  parts.append(optimizer_part(variables["params"], tx))
  if any(k in steps.STATE_COLLECTIONS for k in variables):
    tx = steps._only_params(tx)
  state = train_state.TrainState.create(apply_fn=m.apply, params=variables, tx=tx)
  key = jax.random.key(3) if steps.takes_train_flag(m) else None
  step = steps.jit_for(functools.partial(steps.update, microbatches=micro, flat=task.flat_logits,
                                         train_key=key, head_apart=c.head_apart),
                      donate_argnums=0, compiler_options=options)
  holder = [state]

  def whole():
    holder[0], loss = step(holder[0], x, y)
    return loss
  flops = sum(p.flops * p.repeat for p in parts if not p.alone)
  return profile(parts, whole, flops, rounds, alternate)


def markdown(rows, title: str, peak_gflops: float | None = None) -> str:
  out = [f"| {title} | ms | share of the step | executed GFLOP/s"
         + (" (% of peak)" if peak_gflops else "") + " |", "| --- | --- | --- | --- |"]
  for r in rows:
    g = r["gflops"]
    gs = "" if g is None else f"{g:.0f}" + (f" ({100 * g / peak_gflops:.0f}%)" if peak_gflops else "")
    out.append(f"| {r['part']} | {r['ms']:.1f} | {100 * r['share']:.0f}% | {gs} |")
  return "\n".join(out) + "\n"


def main(argv):
  del argv
  from absl import flags
  from experiments import logs, timing
  FLAGS = flags.FLAGS
  logs.quiet()
  c = FLAGS.config
  # The peak before and after the profile, the best kept: the machine's speed drifts (one run
  # read 113 GFLOP/s after a profile on a machine that ran 198-214 before and after it).
  before = timing.matmul_peak(3)
  rows = profile_config(c, FLAGS.batch or c.batch_size, FLAGS.rounds, timing.alternate)
  peak = max(before, timing.matmul_peak(3)) / 1e9
  print(f"float32 matmul peak through JAX, same run (best before and after): {peak:.0f} "
        "GFLOP/s\n")
  print(markdown(rows, f"{c.group} network, batch {FLAGS.batch or c.batch_size}", peak))


if __name__ == "__main__":
  from experiments import host_memory
  host_memory.reexec_with_huge_pages()
  from absl import app, flags
  from ml_collections import config_flags
  config_flags.DEFINE_config_file("config", "experiments/configs/default.py", "Config file.")
  flags.DEFINE_integer("batch", 0, "Batch size (0: the config's).")
  flags.DEFINE_integer("rounds", 5, "Rounds (the parts alternate in each).")
  app.run(main)
