"""Whether a function maps each example of a batch on its own: a proof read from its jaxprs.

The lift over G calls F on the |G| moved copies of a batch. ``jax.vmap`` does that for any F;
where F maps each example of its batch on its own, by one rule that does not depend on the
batch size (a model's forward pass at inference), folding the copies into F's batch axis is
the same function, and on XLA's CPU backend a cheaper program (the vmapped one carries a rank
more through every elementwise op and pooling, docs/performance.md).

:func:`prove` decides that for the batch sizes that will run (the lift: B, which the vmap
hands F per copy, and k B, the fold's), from F's jaxprs traced abstractly at each:

* **one rule per example**: a dataflow pass over the largest size's jaxpr follows the batch
  as axis 0 from the input. Each primitive that touches it must be one whose rule keeps row
  i a function of row i alone (elementwise ops with per-row or broadcast operands,
  convolutions and matmuls with the batch as their batch or free axis, reductions,
  cumulative ops, slices, pads, windows, sorts and gathers that leave axis 0 alone, calls and
  custom derivatives by their forward jaxpr), and every output must carry it. Values made
  without the input may be anything and meet the batch only through those rules, except
  those made from the batch size (an iota along the batch, random bits of its shape, a sum
  over them), which vary by row or with the size and must never meet it.
* **the same rule at every size** (:func:`eqnn.traces.same_program`): the jaxprs at the
  other sizes must be the same program, equation for equation, with the same literals and
  constants, where only axis 0 of shapes (and the shape parameters that give it) may
  differ. Anything that reads the size shows there: ``x / x.shape[0]``, Python that
  branches on it, ``x ** x.shape[0]``, a broadcast to ``[1, n]``.

It is conservative: a "no" means "not proved" (batch statistics, loops over batched values,
the batch moved off axis 0 as a scan over time with the batch second does), never a claim
that F couples its examples, and the reason says which equation ended it.

Custom derivative rules (``jax.custom_jvp``, ``jax.custom_vjp``) are trusted to be per-example
where their forward pass is proved to be: their rules are Python functions, not jaxprs.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from eqnn.traces import jcore, same_program

_ELEMENTWISE = frozenset("""
  abs acos acosh add and asin asinh atan atan2 atanh cbrt ceil clamp clz complex conj
  convert_element_type copy copy_p cos cosh digamma div eq erf erf_inv erfc exp exp2 expm1
  floor ge gt igamma igammac imag integer_pow is_finite le lgamma log log1p logistic lt max
  min mul ne neg nextafter not or population_count pow real reduce_precision rem round rsqrt
  select_n sharding_constraint shift_left shift_right_arithmetic shift_right_logical sign sin sinh sqrt square
  stop_gradient sub tan tanh xor
""".split())
_REDUCTIONS = frozenset("reduce_sum reduce_max reduce_min reduce_prod reduce_and reduce_or "
                        "reduce_xor argmax argmin".split())
_CUMULATIVE = frozenset("cumsum cumprod cummax cummin cumlogsumexp".split())
_WINDOWS = frozenset("reduce_window_sum reduce_window_max reduce_window_min reduce_window".split())
# Call-like primitives: the batch flows through their inner jaxpr, read by the same rules.
_CALLS = {"jit": "jaxpr", "pjit": "jaxpr", "closed_call": "call_jaxpr", "core_call": "call_jaxpr",
          "custom_jvp_call": "call_jaxpr", "custom_vjp_call": "call_jaxpr",
          "custom_vjp_call_jaxpr": "fun_jaxpr", "checkpoint": "jaxpr", "remat": "jaxpr"}


@dataclasses.dataclass(frozen=True)
class Verdict:
  """``per_example``: proved that f maps each example on its own; ``reason``: why not.
  ``bytes_per_example`` (where proved): the bytes of f's intermediate values that carry the
  batch, per example, summed over its trace (each equation's outputs, calls read through):
  what one more example adds to the working set of f's forward pass."""
  per_example: bool
  reason: str = ""
  bytes_per_example: int = 0

  def __bool__(self):
    return self.per_example


class _NotProved(Exception):
  pass


# What a value of f's trace is: computed from the batch, row by row (_BAT); made without the
# input nor the batch size (_FREE); or made from the batch size and not the input (_SIZED: an
# iota along the batch, a mean over a batch-sized axis), which must never meet the batch.
_BAT, _FREE, _SIZED = "batch", "free", "sized"


def _leading(aval, n) -> bool:
  shape = getattr(aval, "shape", ())
  return len(shape) > 0 and shape[0] == n


def _eqn_rule(eqn, batched: list[bool], n: int) -> None:
  """:class:`_NotProved` unless ``eqn`` (not a call), some of whose inputs carry the batch,
  keeps axis 0 a batch axis: every output row i from input row i alone."""
  name, p = eqn.primitive.name, eqn.params
  avals = [v.aval for v in eqn.invars]
  out_rank = len(eqn.outvars[0].aval.shape) if eqn.outvars else 0

  def need(cond, why):
    if not cond:
      raise _NotProved(f"{name}: {why}")

  if name in _ELEMENTWISE:
    for is_b, a in zip(batched, avals):
      shape = getattr(a, "shape", ())
      need(is_b or len(shape) == 0 or (len(shape) == out_rank and shape[0] == 1),
           f"an operand of shape {shape} without the batch meets the batch")
  elif name == "broadcast_in_dim":
    need(p["broadcast_dimensions"][:1] == (0,), "the batch axis broadcast away from axis 0")
  elif name == "reshape":
    need(p.get("dimensions") is None and p["new_sizes"][0] == n,
         "a reshape that merges or splits the batch axis")
  elif name == "squeeze":
    need(0 not in p["dimensions"], "squeezes the batch axis")
  elif name == "transpose":
    need(p["permutation"][0] == 0, "moves the batch axis")
  elif name == "rev":
    need(0 not in p["dimensions"], "reverses the batch")
  elif name in _REDUCTIONS:
    need(0 not in p["axes"], "reduces over the batch")
  elif name in _CUMULATIVE:
    need(p["axis"] != 0, "accumulates along the batch")
  elif name in ("sort", "split"):
    need(p.get("dimension", p.get("axis")) != 0 and all(batched), "along the batch axis")
  elif name == "top_k":
    rank = len(avals[0].shape)
    need(rank > 1 and p.get("axis", -1) % rank != 0, "along the batch axis")
  elif name == "stack":
    need(p["axis"] != 0 and all(batched), "stacks along the batch or with values without it")
  elif name == "concatenate":
    need(p["dimension"] != 0 and all(batched), "concatenates along the batch or with "
         "values without it")
  elif name == "pad":
    need(tuple(p["padding_config"][0]) == (0, 0, 0) and not batched[1], "pads the batch axis")
  elif name == "slice":
    strides = p.get("strides") or (1,) * len(p["start_indices"])
    need(p["start_indices"][0] == 0 and p["limit_indices"][0] == n and strides[0] == 1,
         "slices the batch")
  elif name in _WINDOWS:
    n_ops = len(avals) // 2 if name == "reduce_window" else 1
    need(all(batched[:n_ops]) and not any(batched[n_ops:]), "a window over mixed operands")
    need(p["window_dimensions"][0] == 1 and p["window_strides"][0] == 1
         and tuple(p["padding"][0]) == (0, 0) and p["base_dilation"][0] == 1
         and p["window_dilation"][0] == 1, "a window along the batch axis")
  elif name == "conv_general_dilated":
    dn = p["dimension_numbers"]
    need(batched[0] and not batched[1], "the batch in the kernel")
    need(dn.lhs_spec[0] == 0 and dn.out_spec[0] == 0 and p["batch_group_count"] == 1,
         "the batch axis is not the convolution's batch dimension")
  elif name == "dot_general":
    (lc, rc), (lb, rb) = p["dimension_numbers"]
    lhs_b, rhs_b = batched
    if lhs_b and rhs_b:                       # per-example products (attention): batch dim 0
      need(tuple(lb[:1]) == (0,) and tuple(rb[:1]) == (0,), "the batch is not the product's "
           "first batch dimension")
    elif lhs_b:
      need(0 not in lc and not lb, "contracts the batch")
    else:
      lhs_free = len(avals[0].shape) - len(lc) - len(lb)
      need(lhs_free == 0 and not lb and 0 not in rc, "puts the batch after other axes")
  elif name == "gather":
    dn = p["dimension_numbers"]
    need(not dn.operand_batching_dims and not dn.start_indices_batching_dims,
         "a batched gather")
    if batched[0]:                             # x[:, idx]: per-row slices of the batch
      need(not batched[1] and 0 not in dn.collapsed_slice_dims and 0 not in dn.start_index_map
           and p["slice_sizes"][0] == n and dn.offset_dims[:1] == (0,),
           "gathers across the batch")
    else:                                      # table[ids]: per-example indices into a table
      need(0 not in dn.offset_dims, "gathers across the batch")
  else:
    raise _NotProved(f"{name}: not known to keep the batch axis")


def _call(eqn, status: list[str], n: int, sized: dict, tally: list[int]) -> list[str]:
  """A call's outputs, read from its inner jaxpr with its inputs' statuses."""
  inner = eqn.params[_CALLS[eqn.primitive.name]]
  jaxpr = inner.jaxpr if isinstance(inner, jcore.ClosedJaxpr) else inner
  n_consts = len(jaxpr.invars) - len(eqn.invars)
  if n_consts < 0:
    raise _NotProved(f"{eqn.primitive.name}: an inner jaxpr with a different signature")
  return _run(jaxpr, [_FREE] * n_consts + status, n, sized, tally)


def _run(jaxpr, in_status: list[str], n: int, sized: dict, tally: list[int]) -> list[str]:
  """The statuses of ``jaxpr``'s outputs given its inputs' (constvars: free). ``sized``: for
  each variable, whether its axis 0 is the batch size (it differs between the traces at
  two batch sizes; read from the shape where the traces did not get that far). ``tally[0]``
  gains the bytes of every batched value an equation makes (a call's, inside it)."""
  env: dict[Any, str] = {v: _FREE for v in jaxpr.constvars}
  env.update(zip(jaxpr.invars, in_status))

  def read(v):
    return _FREE if isinstance(v, jcore.Literal) else env[v]

  for eqn in jaxpr.eqns:
    status = [read(v) for v in eqn.invars]
    name = eqn.primitive.name
    lead = [sized.get(v, _leading(v.aval, n)) for v in eqn.outvars]
    if name in _CALLS and (_BAT in status or _SIZED in status or any(lead)):
      outs = _call(eqn, status, n, sized, tally)
    elif _BAT in status:
      if _SIZED in status:
        raise _NotProved(f"{name}: a value made from the batch size, not the input, meets "
                         f"the batch")
      _eqn_rule(eqn, [s == _BAT for s in status], n)
      outs = [_BAT] * len(eqn.outvars)
    elif _SIZED in status:
      outs = [_SIZED] * len(eqn.outvars)
    else:
      # A value of the batch's size made without the input carries the batch where every row
      # of it is the same, made without the size: a broadcast along axis 0, an iota along
      # another axis. Any other (an iota along the batch, random bits of its shape) is _SIZED.
      uniform = (name == "broadcast_in_dim" and 0 not in _mapped_dims(eqn)) or (
          name == "iota" and eqn.params["dimension"] != 0)
      outs = [(_BAT if uniform else _SIZED) if l else _FREE for l in lead]
    for v, out, l in zip(eqn.outvars, outs, lead):
      if out == _BAT and not l:
        raise _NotProved(f"{name}: its output {v.aval.str_short()} does not keep the batch "
                         f"as axis 0")
      env[v] = out
      if out == _BAT and name not in _CALLS:
        tally[0] += int(np.prod(v.aval.shape)) * np.dtype(v.aval.dtype).itemsize
  return [read(v) for v in jaxpr.outvars]


def _mapped_dims(eqn) -> tuple:
  """The output axes a broadcast maps its operand's axes to, minus those of size 1 (which a
  broadcast copies to every row, the same in each)."""
  shape = eqn.invars[0].aval.shape
  return tuple(d for d, s in zip(eqn.params["broadcast_dimensions"], shape) if s != 1)


def _is_array(leaf) -> bool:
  return isinstance(leaf, (jax.Array, np.ndarray, np.generic)) or hasattr(leaf, "aval")


def check(f: Callable, *args, argnum: int = 0, **kwargs) -> Verdict:
  """Whether ``f(*args, **kwargs)`` maps each example of its batch (axis 0 of every leaf of
  ``args[argnum]``, of size n) on its own by one rule, the same at batch sizes n and 2 n:
  :func:`prove` at those two sizes. A :class:`Verdict`, falsy with the reason where not
  proved."""
  leaves = jax.tree.leaves(args[argnum]) if 0 <= argnum < len(args) else []
  n = leaves[0].shape[0] if leaves and jnp.ndim(leaves[0]) else 0
  return prove(f, args, kwargs, argnum, (n, 2 * n))


def prove(f: Callable, args: tuple, kwargs: dict, argnum: int, sizes) -> Verdict:
  """Whether ``f(*args, **kwargs)`` with batches of each size in ``sizes`` (axis 0 of every
  leaf of ``args[argnum]``) is one rule applied to each example on its own, the same rule
  at every one of those sizes: then f on a batch of k B examples is f on each of k batches
  of B. Traces f abstractly at each size (no computation); the other arguments and
  non-array leaves are held as given. A :class:`Verdict`, falsy with the reason where not
  proved (including where f does not trace)."""
  if not 0 <= argnum < len(args):
    return Verdict(False, f"no positional argument {argnum}")
  x_leaves = jax.tree.leaves(args[argnum])
  if not x_leaves or any(not _is_array(l) or jnp.ndim(l) == 0 for l in x_leaves):
    return Verdict(False, "the argument is not a pytree of arrays with a batch axis")
  if len({l.shape[0] for l in x_leaves}) != 1:
    return Verdict(False, "the argument's leaves differ in their first axis")
  sizes = sorted({int(n) for n in sizes}, reverse=True)
  if len(sizes) < 2 or sizes[-1] < 1:
    return Verdict(False, f"it takes two batch sizes to prove one rule at every size, got "
                          f"{sizes}")
  leaves, tree = jax.tree.flatten((args, kwargs))
  held = [l for l in leaves if _is_array(l)]
  abstract = [jax.ShapeDtypeStruct(jnp.shape(l), jnp.result_type(l)) for l in held]

  def traced(x, arrays):
    it = iter(arrays)
    a, kw = jax.tree.unflatten(tree, [next(it) if _is_array(l) else l for l in leaves])
    a = list(a)
    a[argnum] = x
    return f(*a, **kw)

  def trace(size):
    x_abs = jax.tree.map(lambda l: jax.ShapeDtypeStruct((size,) + tuple(l.shape[1:]),
                                                        jnp.result_type(l)), args[argnum])
    return jax.make_jaxpr(traced)(x_abs, abstract)

  try:
    closed = [trace(n) for n in sizes]
  except Exception as e:  # noqa: BLE001 -- f does not trace at these sizes: not proved
    return Verdict(False, f"f does not trace at batch sizes {sizes} "
                          f"({type(e).__name__}: {str(e).splitlines()[0][:160]})")
  try:
    sized: dict = {}
    tally = [0]
    same = [same_program(closed[0], other, (sizes[0], n), sized)
            for n, other in zip(sizes[1:], closed[1:])]
    outs = _run(closed[0].jaxpr, [_BAT] * len(x_leaves) + [_FREE] * len(abstract), sizes[0], sized,
                tally)
  except _NotProved as e:
    return Verdict(False, str(e))
  except Exception as e:  # noqa: BLE001 -- a primitive whose parameters this reader does not
    # know (another JAX version): not proved, so the caller keeps its general form
    return Verdict(False, f"the jaxpr could not be read ({type(e).__name__}: {e})")
  for n, ok in zip(sizes[1:], same):
    if not ok:
      return Verdict(False, f"f is another program at batch size {n} than at {sizes[0]}: it "
                            f"reads the batch size (x / x.shape[0], or Python that branches "
                            f"on it)")
  if not all(o == _BAT for o in outs):
    return Verdict(False, "an output does not carry the batch as axis 0")
  return Verdict(True, bytes_per_example=tally[0] // sizes[0])
