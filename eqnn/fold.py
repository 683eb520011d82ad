"""How the lift runs its map: F on the moved copies folded into F's own batch axis.

:func:`eqnn.lift.equivarify` evaluates ``F(g^-1 . x)`` for every g. Where F maps each example
of its batch on its own (:func:`eqnn.per_example.prove`), the |G| moved copies of a batch of B
can go through F as one batch of |G| B (the fold) instead of a vmap over the group: the same
function, and on XLA's CPU backend a cheaper program. This module holds that form: when it is
proved (:func:`folds`), in how many calls (:func:`fold_calls`, :func:`fold_plan`), and the fold
itself (:func:`lift_in_batch`). The lift's mathematics, and the one place where g and g^-1
meet, stay in :mod:`eqnn.lift`, which re-exports these names.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from eqnn import per_example
from eqnn.actions import Action

def _batch_axis_problem(action: Action, x) -> str | None:
  """Why axis 0 of ``x`` is not a batch of examples that ``action`` moves one by one (None
  where it is): every leaf must have it, of one size, and one example ``x[0]`` must be a
  valid input of the action."""
  leaves = jax.tree.leaves(x)
  if not leaves or any(jnp.ndim(l) == 0 or l.shape[0] != leaves[0].shape[0] for l in leaves):
    return ("folds the group into axis 0 of f's input, which must be a batch axis of the same "
            f"size on every leaf; got shapes {[jnp.shape(l) for l in leaves]}")
  try:                 # axis 0 a batch: one example x[0] is itself something G acts on
    # (checked abstractly: no slice of x enters the traced program)
    jax.eval_shape(lambda x: action.validate(jax.tree.map(lambda l: l[0], x)), x)
  except ValueError as e:
    return (f"needs axis 0 of f's input to be a batch of examples that the action moves one "
            f"by one, but one example x[0] is not a valid input of {type(action).__name__} "
            f"({e})")
  return None


def lift_in_batch(call: Callable, action: Action, x, elements=None) -> Any:
  """``[k, B, ...]``: ``call`` once on the moved copies ``g^-1 . x`` (g in ``elements``,
  default all of G) folded into one batch of k B examples, every output leaf split back.

  The form of the lift for a ``call`` that takes axis 0 of its input as a batch
  (``equivarify(..., vectorize="batch")``, ``"auto"`` where ``call`` is proved to map each
  example on its own, and the Flax and NNX ``Equivarified`` modules, whose batch statistics
  then cover the orbit). Axis 0 must be a batch of every input leaf (one example ``x[0]`` a
  valid input of ``action``) and of every output leaf: named errors otherwise.
  """
  elements = np.arange(action.group.order) if elements is None else np.asarray(elements)
  x = action.prepare(x)
  problem = _batch_axis_problem(action, x)
  if problem is not None:
    raise ValueError(f"the lift in f's batch (vectorize='batch', the Equivarified modules) "
                     f"{problem}; give a single example a batch axis (x[None]), or use "
                     f"vectorize='auto' or True")
  return _fold(call, action, x, elements)


def _fold(call, action, x, elements, per_call=None):
  """:func:`lift_in_batch` for an ``x`` already prepared and checked to have a batch axis;
  ``per_call`` elements folded into each call of ``call`` (default: all in one call)."""
  per_call = len(elements) if per_call is None else per_call
  if per_call < len(elements):
    outs = [_fold(call, action, x, elements[i:i + per_call])
            for i in range(0, len(elements), per_call)]
    return jax.tree.map(lambda *leaves: jnp.concatenate(leaves), *outs)
  b, k = jax.tree.leaves(x)[0].shape[0], len(elements)
  from eqnn.lift import lift_inputs   # eqnn.lift imports this module: the g^-1 lives there
  # Example-major: row i k + j is example i moved by element j. A batch sharded over devices
  # in blocks of examples keeps its blocks through the fold (group-major rows, j B + i, had
  # XLA gather the whole batch onto every device and run F there in full); one device runs
  # either order at the same speed (scratch, 2026-12-05).
  copies = lift_inputs(action, x, elements, axis=1)               # [B, k, ...] per leaf
  out = call(jax.tree.map(lambda c: c.reshape((b * k,) + c.shape[2:]), copies))

  def unfold(leaf):
    if jnp.ndim(leaf) == 0 or jnp.shape(leaf)[0] != k * b:
      raise ValueError(f"the lift in f's batch: f returned a leaf of shape {jnp.shape(leaf)}, "
                       f"not one with its batch axis ({k} x {b} = {k * b} rows) first; f must "
                       f"map a batch to a batch")
    return jnp.moveaxis(leaf.reshape((b, k) + leaf.shape[1:]), 1, 0)      # [k, B, ...]
  return jax.tree.map(unfold, out)


def folds(f: Callable, action: Action, *args, argnum: int = 0, **kwargs) -> per_example.Verdict:
  """Whether ``equivarify(f, action, argnum)`` (``vectorize="auto"``) runs f on the group
  folded into its batch axis for these arguments, and if not, why: axis 0 of
  ``args[argnum]`` must be a batch of examples the action moves one by one, and f must be
  proved to map each example on its own at the batch B, at |G| B and, where the fold is
  split into several calls (:func:`fold_calls`), at those calls' batch sizes
  (:func:`eqnn.per_example.prove`). Otherwise the lift is one ``jax.vmap`` over the group:
  the same function either way."""
  return fold_plan(f, action, *args, argnum=argnum, **kwargs)[0]


def fold_plan(f: Callable, action: Action, *args, argnum: int = 0,
              **kwargs) -> tuple[per_example.Verdict, int]:
  """``(folds(...), per_call)``: the verdict of :func:`folds` and, where it folds, how many
  group elements each call of f takes (:func:`fold_calls`; |G| where it makes one call)."""
  return _fold_plan(f, action, args, kwargs, argnum, action.group.order)


def _fold_plan(f, action, args, kwargs, argnum, k):
  """:func:`fold_plan` for a lift over k elements. Where the fold is split, f is proved at
  its calls' batch sizes too: a proof covers the sizes it traced, no others."""
  if not 0 <= argnum < len(args):
    return per_example.Verdict(False, f"no positional argument {argnum}"), k
  x = action.prepare(args[argnum])
  problem = _batch_axis_problem(action, x)
  if problem is not None:
    return per_example.Verdict(False, f"the lift {problem}"), k
  b = jax.tree.leaves(x)[0].shape[0]
  args = (*args[:argnum], x, *args[argnum + 1:])
  verdict = per_example.prove(f, args, kwargs, argnum, (b, k * b))
  per_call = fold_calls(verdict.bytes_per_example * b, k) if verdict else k
  sizes = {b, per_call * b, (k - per_call * (-(-k // per_call) - 1)) * b} - {b, k * b}
  if sizes:
    verdict = per_example.prove(f, args, kwargs, argnum, (b, *sizes))
  return verdict, per_call


# "auto" on CPU: at most this many bytes of f's batched intermediates per call of the fold
# (Verdict.bytes_per_example x examples per call), in at most FOLD_MAX_CALLS calls. f's
# gradient costs more per example on larger batches on XLA's CPU backend, and several calls
# of f run side by side on its cores (docs/performance.md, "The lift's forms").
FOLD_BYTES_CPU = 32 << 20
FOLD_MAX_CALLS = 16


def fold_calls(bytes_per_copy: int, k: int, backend: str | None = None) -> int:
  """Elements per call where "auto" folds k group elements whose moved copies of the batch
  each make ``bytes_per_copy`` bytes of f's intermediates: as many as fit in
  :data:`FOLD_BYTES_CPU` on CPU (at least one, in at most :data:`FOLD_MAX_CALLS` calls, split
  evenly), all k in one call on any other backend."""
  backend = jax.default_backend() if backend is None else backend
  if backend != "cpu" or bytes_per_copy <= 0:
    return k
  fit = min(k, max(1, FOLD_BYTES_CPU // bytes_per_copy))
  calls = min(-(-k // fit), FOLD_MAX_CALLS)
  return -(-k // calls)
