"""Two traces of one function at two batch sizes: are they one program?

:func:`same_program` walks two jaxprs of the same function, traced at batch sizes ``nu`` and
``nv`` (axis 0 of its batched input), equation by equation: the same primitives on the same
values, the same literals and constants, the same parameters, where only axis 0 of shapes,
and the shape parameters that give it, may differ as ``nu`` against ``nv``. Anything that reads
the batch size as a value (``x / x.shape[0]``, ``x ** x.shape[0]``, Python that branches on
it) or puts it on another axis (a broadcast to ``[1, n]``) makes them differ. Used by
:mod:`eqnn.per_example`, which also reads from the walk which values carry the batch size on
axis 0.
"""

from __future__ import annotations

import jax
import numpy as np

try:       # the jaxpr types: public in jax.extend.core (jax >= 0.4.3x), else jax.core
  from jax.extend import core as jcore
  jcore.ClosedJaxpr, jcore.Jaxpr, jcore.Literal  # noqa: B018
except (ImportError, AttributeError):  # pragma: no cover - older jax
  from jax import core as jcore
try:       # a custom derivative's rule, wrapped anew in every trace
  from jax.extend.linear_util import WrappedFun as _WrappedFun
except ImportError:  # pragma: no cover - a jax without it: callables are checked as such
  _WrappedFun = ()


# The parameters that give a shape, whose first entry is the batch size where the shape is
# the batch's: the only parameters that may differ between the traces, and only there.
_SIZE_PARAMS = {("reshape", "new_sizes"), ("broadcast_in_dim", "shape"), ("iota", "shape"),
                ("slice", "limit_indices"), ("gather", "slice_sizes")}


def same_program(u: "jcore.ClosedJaxpr", v: "jcore.ClosedJaxpr", sizes: tuple[int, int],
                 sized: dict) -> bool:
  """Whether the traces ``u`` and ``v`` (batch sizes ``sizes = (nu, nv)``) are one program.
  ``sized`` is filled as the walk goes: for each variable of ``u``, whether its axis 0 is the
  batch size (``nu`` in ``u`` where ``v`` has ``nv``)."""
  return _same_value(u, v, sizes, sized)


def _same_value(u, v, sizes, sized: dict) -> bool:
  """Whether a parameter, literal or constant of one trace (``u``) is the other's (``v``):
  equal, but for the shapes inside jaxprs among them, whose axis 0 may differ as the two
  traces' batch sizes ``sizes = (nu, nv)``."""
  if isinstance(u, jcore.ClosedJaxpr) or isinstance(v, jcore.ClosedJaxpr):
    return (isinstance(u, jcore.ClosedJaxpr) and isinstance(v, jcore.ClosedJaxpr)
            and len(u.consts) == len(v.consts)
            and all(_same_array(a, c) for a, c in zip(u.consts, v.consts))
            and _same_jaxpr(u.jaxpr, v.jaxpr, sizes, sized))
  if isinstance(u, jcore.Jaxpr) or isinstance(v, jcore.Jaxpr):
    return isinstance(u, jcore.Jaxpr) and isinstance(v, jcore.Jaxpr) and _same_jaxpr(
        u, v, sizes, sized)
  if isinstance(u, (tuple, list)):
    return (isinstance(v, (tuple, list)) and len(u) == len(v)
            and all(_same_value(a, c, sizes, sized) for a, c in zip(u, v)))
  if isinstance(u, _WrappedFun) or (callable(u) and not isinstance(u, type)):
    # A custom derivative's rule (a Python function, wrapped anew in every trace): trusted,
    # as eqnn.per_example's docstring says.
    return isinstance(v, _WrappedFun) or callable(v)
  if isinstance(u, (jax.Array, np.ndarray, np.generic)):
    return _same_array(u, v)
  try:
    return bool(u == v)
  except Exception:  # noqa: BLE001 -- values without an equality: not the same
    return False


def _same_array(u, v) -> bool:
  """Literals and constants: the same values exactly (never rescaled with the batch)."""
  if u is v:
    return True
  try:
    return (np.shape(u) == np.shape(v) and np.result_type(u) == np.result_type(v)
            and bool(np.array_equal(np.asarray(u), np.asarray(v))))
  except Exception:  # noqa: BLE001 -- a traced value: the same only as the same object
    return False


def _same_sizes(u, v, sizes) -> bool:
  """Two shapes: the same but for axis 0, which may be the traces' batch sizes. Only axis
  0: the batch size anywhere else (a broadcast to ``[1, n]``, a power ``x ** n``) would
  make each example's result depend on it."""
  return (len(u) == len(v) and all(a == c for a, c in zip(u[1:], v[1:]))
          and (len(u) == 0 or u[0] == v[0] or (u[0], v[0]) == sizes))


def _same_aval(u, v, sizes) -> bool:
  return (getattr(u, "dtype", None) == getattr(v, "dtype", None)
          and _same_sizes(tuple(getattr(u, "shape", ())), tuple(getattr(v, "shape", ())), sizes))


def _same_jaxpr(ju, jv, sizes, sized: dict) -> bool:
  """Whether two traces are one program: the same equations on the same values, with the
  same parameters, literals and constants, where only the batch sizes ``sizes`` differ."""
  if (len(ju.constvars), len(ju.invars), len(ju.eqns), len(ju.outvars)) != (
      len(jv.constvars), len(jv.invars), len(jv.eqns), len(jv.outvars)):
    return False
  env = {}

  def bind(a, c):
    env[a] = c
    su, sv = getattr(a.aval, "shape", ()), getattr(c.aval, "shape", ())
    sized.setdefault(a, len(su) > 0 and len(sv) > 0 and (su[0], sv[0]) == sizes)
    return _same_aval(a.aval, c.aval, sizes)

  def same_atom(a, c):
    if isinstance(a, jcore.Literal) or isinstance(c, jcore.Literal):
      return (isinstance(a, jcore.Literal) and isinstance(c, jcore.Literal)
              and _same_array(a.val, c.val))
    return env.get(a) is c

  if not all(bind(a, c) for a, c in zip([*ju.constvars, *ju.invars],
                                        [*jv.constvars, *jv.invars])):
    return False
  for eu, ev in zip(ju.eqns, jv.eqns):
    if (eu.primitive is not ev.primitive or eu.params.keys() != ev.params.keys()
        or len(eu.invars) != len(ev.invars) or len(eu.outvars) != len(ev.outvars)
        or not all(same_atom(a, c) for a, c in zip(eu.invars, ev.invars))
        or not all(_same_sizes(tuple(eu.params[k]), tuple(ev.params[k]), sizes)
                   if (eu.primitive.name, k) in _SIZE_PARAMS
                   else _same_value(eu.params[k], ev.params[k], sizes, sized)
                   for k in eu.params)
        or not all(bind(a, c) for a, c in zip(eu.outvars, ev.outvars))):
      return False
  return all(same_atom(a, c) for a, c in zip(ju.outvars, jv.outvars))
