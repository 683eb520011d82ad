"""Whether a function maps each example of a batch on its own: a proof read from its jaxpr.

The lift over G calls F on the |G| moved copies of a batch. ``jax.vmap`` does that for any F;
where F maps each example of its batch on its own, by one rule that does not depend on the
batch size (a model's forward pass at inference), folding the copies into F's batch axis is
the same function, and on XLA's CPU backend a cheaper program (the vmapped one carries a rank
more through every elementwise op and pooling, docs/performance.md).

:func:`check` decides that from F's jaxpr, traced once with a *symbolic* batch size b (JAX's
shape polymorphism), so the proof holds for every batch size and any use of the size itself
as a value (``x / x.shape[0]``) is seen and refused. A dataflow pass marks every value that
carries the batch: axis 0 of size b, nowhere else, row i computed from row i of the input
alone. Each primitive that touches such a value must be one whose rule keeps that (elementwise
ops with per-row or broadcast operands, convolutions and matmuls with the batch as their batch
or free axis, reductions, slices, pads, windows and gathers that leave axis 0 alone, calls and
custom derivatives by their forward jaxpr); anything else, or any other value whose shape
mentions b, ends the proof with the reason. It is conservative: a "no" means "not proved"
(scans over time with the batch second, batch statistics, random masks of the batch's shape,
loops), never a claim that F couples its examples.

Custom derivative rules (``jax.custom_jvp``, ``jax.custom_vjp``) are trusted to be per-example
where their forward pass is proved to be: their rules are Python functions, not jaxprs.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import export
from jax.extend import core as jcore

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
  """``per_example``: proved that f maps each example on its own; ``reason``: why not."""
  per_example: bool
  reason: str = ""

  def __bool__(self):
    return self.per_example


class _NotProved(Exception):
  pass


# The class of JAX's symbolic dimension sizes, taken from one (public API).
_DIM_EXPR = type(export.symbolic_shape("b")[0])


def _symbolic(d) -> bool:
  return isinstance(d, _DIM_EXPR)


def _mentions(shape, b) -> list[int]:
  """The axes of ``shape`` whose size involves the symbolic batch size (the only symbol)."""
  return [i for i, d in enumerate(shape) if _symbolic(d)]


def _is_b(d, b) -> bool:
  try:
    return _symbolic(d) and bool(d == b)
  except Exception:                                   # an undecidable comparison: not b
    return False


def _batched_shape_ok(aval, b) -> bool:
  shape = getattr(aval, "shape", ())
  return len(shape) > 0 and _is_b(shape[0], b) and _mentions(shape, b) == [0]


def _eqn_rule(eqn, batched: list[bool], b) -> list[bool]:
  """Which outputs of ``eqn`` carry the batch; :class:`_NotProved` unless ``eqn`` keeps axis 0
  a batch axis. (A call's outputs are read from its inner jaxpr; any other primitive's are
  all batched.)"""
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
    need(p.get("dimensions") is None and _is_b(p["new_sizes"][0], b),
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
  elif name == "concatenate":
    need(p["dimension"] != 0 and all(batched), "concatenates along the batch or with "
         "values without it")
  elif name == "pad":
    need(tuple(p["padding_config"][0]) == (0, 0, 0) and not batched[1], "pads the batch axis")
  elif name == "slice":
    strides = p.get("strides") or (1,) * len(p["start_indices"])
    need(p["start_indices"][0] == 0 and _is_b(p["limit_indices"][0], b) and strides[0] == 1,
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
           and _is_b(p["slice_sizes"][0], b) and dn.offset_dims[:1] == (0,),
           "gathers across the batch")
    else:                                      # table[ids]: per-example indices into a table
      need(0 not in dn.offset_dims, "gathers across the batch")
  elif name in _CALLS:
    inner = p[_CALLS[name]]
    closed = inner if isinstance(inner, jcore.ClosedJaxpr) else None
    jaxpr = closed.jaxpr if closed is not None else inner
    n_consts = len(jaxpr.invars) - len(eqn.invars)
    need(n_consts >= 0, "an inner jaxpr with a different signature")
    return _run(jaxpr, [False] * n_consts + batched, b)
  else:
    raise _NotProved(f"{name}: not known to keep the batch axis")
  return [True] * len(eqn.outvars)


def _run(jaxpr, in_batched: list[bool], b) -> list[bool]:
  """Batched flags of ``jaxpr``'s outputs, given its inputs' (constvars: not batched)."""
  env: dict[Any, bool] = {}
  for v in jaxpr.constvars:
    env[v] = False
  for v, is_b in zip(jaxpr.invars, in_batched):
    env[v] = is_b

  def read(v):
    return False if isinstance(v, jcore.Literal) else env[v]

  for eqn in jaxpr.eqns:
    batched = [read(v) for v in eqn.invars]
    name = eqn.primitive.name
    takes_shape = any(_mentions(getattr(v.aval, "shape", ()), b) for v in eqn.outvars)
    inner = any(_jaxpr_mentions(j) for j in _sub_jaxprs(eqn.params))
    if any(batched) or (name in _CALLS and (takes_shape or inner)):
      outs = _eqn_rule(eqn, batched, b)
      if inner and name not in _CALLS:
        raise _NotProved(f"{name}: an inner jaxpr that reads the batch size")
    else:
      # Values without the batch may be computed any way, but one that takes the batch's
      # shape must do so the same in every row: a broadcast along axis 0, or an iota along
      # another axis. (An iota along the batch, or random bits of its shape, vary by row.)
      # The batch size read as a value (``x / x.shape[0]``) shows as a parameter with b in it.
      if takes_shape or _params_mention(eqn.params):
        uniform = (name == "broadcast_in_dim" and 0 not in p_dims(eqn)) or (
            name == "iota" and eqn.params["dimension"] != 0)
        if not uniform:
          raise _NotProved(f"{name}: makes a value of the batch's shape that varies by row"
                           if takes_shape else f"{name}: reads the batch size as a value")
      outs = [takes_shape] * len(eqn.outvars)
    for v, out in zip(eqn.outvars, outs):
      shape = getattr(v.aval, "shape", ())
      if (not _batched_shape_ok(v.aval, b)) if out else bool(_mentions(shape, b)):
        raise _NotProved(f"{name}: its output {v.aval.str_short()} does not keep the batch "
                         f"as axis 0 alone")
      env[v] = out
  return [read(v) for v in jaxpr.outvars]


def _sub_jaxprs(params):
  """The jaxprs among an equation's parameters (a call's body, a loop's, a branch's)."""
  for v in params.values():
    for u in (v if isinstance(v, (tuple, list)) else (v,)):
      if isinstance(u, jcore.ClosedJaxpr):
        yield u.jaxpr
      elif isinstance(u, jcore.Jaxpr):
        yield u


def _params_mention(params) -> bool:
  """Whether an equation's parameters hold the symbolic batch size, directly (a shape) or
  anywhere inside a jaxpr among them (a loop body that reads it, say)."""
  def walk(v):
    return any(walk(u) for u in v) if isinstance(v, (tuple, list)) else _symbolic(v)
  return any(walk(v) for v in params.values()) or any(
      _jaxpr_mentions(j) for j in _sub_jaxprs(params))


def _jaxpr_mentions(jaxpr) -> bool:
  """Whether the batch size appears anywhere in ``jaxpr``: a shape or a parameter."""
  shapes = [getattr(v.aval, "shape", ()) for v in [*jaxpr.constvars, *jaxpr.invars]]
  for eqn in jaxpr.eqns:
    if _params_mention(eqn.params):
      return True
    shapes += [getattr(v.aval, "shape", ()) for v in eqn.outvars]
  return any(_symbolic(d) for shape in shapes for d in shape)


def p_dims(eqn) -> tuple:
  """The output axes a broadcast maps its operand's axes to, minus those of size 1 (which a
  broadcast copies to every row, the same in each)."""
  shape = eqn.invars[0].aval.shape
  return tuple(d for d, s in zip(eqn.params["broadcast_dimensions"], shape) if s != 1)


def _is_array(leaf) -> bool:
  return isinstance(leaf, (jax.Array, np.ndarray, np.generic)) or hasattr(leaf, "aval")


def check(f: Callable, *args, argnum: int = 0, **kwargs) -> Verdict:
  """Whether ``f(*args, **kwargs)`` maps each example of its batch (axis 0 of every leaf of
  ``args[argnum]``) on its own, by one rule for every batch size: ``f`` on a batch of n is
  then the same as f on each example, and folding several batches into one is the same as
  calling f on each. Traces f once, abstractly (no computation); the other arguments and
  non-array leaves are held as given. A :class:`Verdict`, falsy with the reason where not
  proved (including where f cannot be traced with a symbolic batch size)."""
  if not 0 <= argnum < len(args):
    return Verdict(False, f"no positional argument {argnum}")
  x_leaves = jax.tree.leaves(args[argnum])
  if not x_leaves or any(not _is_array(l) or jnp.ndim(l) == 0 for l in x_leaves):
    return Verdict(False, "the argument is not a pytree of arrays with a batch axis")
  if len({l.shape[0] for l in x_leaves}) != 1:
    return Verdict(False, "the argument's leaves differ in their first axis")
  b, = export.symbolic_shape("b")
  x_abs = jax.tree.map(lambda l: jax.ShapeDtypeStruct((b,) + tuple(l.shape[1:]),
                                                      jnp.result_type(l)), args[argnum])
  leaves, tree = jax.tree.flatten((args, kwargs))
  held = [l for l in leaves if _is_array(l)]
  abstract = [jax.ShapeDtypeStruct(jnp.shape(l), jnp.result_type(l)) for l in held]

  def traced(x, arrays):
    it = iter(arrays)
    a, kw = jax.tree.unflatten(tree, [next(it) if _is_array(l) else l for l in leaves])
    a = list(a)
    a[argnum] = x
    return f(*a, **kw)

  try:
    closed = jax.make_jaxpr(traced)(x_abs, abstract)
  except Exception as e:  # noqa: BLE001 -- any failure to trace symbolically: not proved
    return Verdict(False, f"f does not trace with a symbolic batch size "
                          f"({type(e).__name__}: {str(e).splitlines()[0][:160]})")
  n_x = len(jax.tree.leaves(x_abs))
  try:
    outs = _run(closed.jaxpr, [True] * n_x + [False] * len(abstract), b)
  except _NotProved as e:
    return Verdict(False, str(e))
  except Exception as e:  # noqa: BLE001 -- a primitive whose parameters this reader does not
    # know (another JAX version): not proved, so the caller keeps its general form
    return Verdict(False, f"the jaxpr could not be read ({type(e).__name__}: {e})")
  if not all(outs):
    return Verdict(False, "an output does not carry the batch as axis 0")
  return Verdict(True)
