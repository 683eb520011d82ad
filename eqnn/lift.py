"""Equivarification: the lift of a map to functions on the group, and its minimal form.

This file holds the one place where g and g^-1 meet (paper, Lemma 3.0.1 and formula 3.0.2):

    F_hat(x)(g) = F(g^-1 . x)                  the lift, group axis first, in group order
    (h . s)(g)  = s(h^-1 g)                    G acting on the lift (eqnn.actions.regular)
    p(s)        = s(e)                         the projection, p . F_hat = F

so that ``F_hat(h . x) = h . F_hat(x)`` for every h. For C4 ordered (e, r, r^2, r^3),
``F_hat(x) = (F(x), F(r^-1 x), F(r^-2 x), F(r^-3 x))`` and r acts by
``(z0, z1, z2, z3) -> (z3, z0, z1, z2)``. The authors' own code shifted the other way
(their footnote 1); eqnn follows the paper's mathematics.

Minimal equivarification (paper, appendix 5.4): if F is already invariant under a
subgroup H (``F(h x) = F(x)``), then ``F_hat(x)(g)`` depends only on the coset gH, and
the map ``G/H -> Z``, ``gH -> F(g^-1 x)``, is G-equivariant under ``(k.s)(gH) = s(k^-1 g H)``
with |H| times fewer evaluations of F. The full lift factors through it:
``F_hat(x)[g] = F_min(x)[coset_of[g]]`` (:func:`expand_minimal`).

How the lift runs F where F maps each example on its own (the moved copies folded into F's
batch axis, in how many calls) is :mod:`eqnn.fold`'s; its names are re-exported here.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from eqnn.actions import Action
from eqnn import fold as fold_lib
from eqnn.fold import _fold, _fold_plan
from eqnn.groups import Subgroup

_REDUCTIONS = {
    "max": jnp.max,
    "mean": jnp.mean,
    "sum": jnp.sum,
    "logsumexp": jax.nn.logsumexp,
}


def lift_inputs(action: Action, x, elements=None, axis: int = 0) -> jax.Array:
  """``[k, ...]``: ``g^-1 . x`` for each g in ``elements`` (default: all of G, in order),
  the copies stacked on ``axis`` of every leaf (0 unless given).

  What the lift evaluates its map on: ``F_hat(x)[g] = F(lift_inputs(action, x)[g])``. Every
  lifted layer (:mod:`eqnn.ops`) builds its copies with this function, so that the
  convention between g and g^-1 is written here and nowhere else.

  >>> import jax.numpy as jnp
  >>> from eqnn import actions
  >>> x = jnp.arange(4.0).reshape(2, 2, 1)
  >>> copies = lift_inputs(actions.rotations(), x)     # [4, 2, 2, 1]
  >>> copies[1][..., 0].tolist()                       # r^-1 . x: a quarter turn clockwise
  [[2.0, 0.0], [3.0, 1.0]]
  """
  x = action.prepare(x)
  elements = np.arange(action.group.order) if elements is None else np.asarray(elements)
  inverses = jnp.asarray(action.group.inverse[elements], jnp.int32)
  return jax.vmap(lambda g_inv: action.apply(g_inv, x), out_axes=axis)(inverses)


def conjugated(action: Action, transform: Callable, s, axis: int = 0):
  """``s'[g] = g^-1 . transform(g . s[g])`` for every slot g of a lifted value ``s``.

  Where a lifted map's slots hold ``F(g^-1 . x)``, a transformation t of x that F commutes
  with reaches slot g as ``g^-1 t g``: this is what the equivariance report expects of a
  lifted conv under shifts (block g moves along the direction turned by g^-1).
  ``action`` must act on one slot ``s[g]`` (taken along ``axis``).
  """
  slots = jnp.moveaxis(jnp.asarray(s), axis, 0)
  group = action.group
  out = [action.apply(int(group.inverse[g]), transform(action.apply(g, slots[g])))
         for g in range(group.order)]
  return jnp.moveaxis(jnp.stack(out), 0, axis)


# The fold (F on the moved copies folded into its batch axis), as eqnn.lift's names too.
folds, fold_plan, fold_calls = fold_lib.folds, fold_lib.fold_plan, fold_lib.fold_calls
lift_in_batch = fold_lib.lift_in_batch

_AUTO, _BATCH = -1, 0


def _chunk(vectorize: bool | int | str, n: int) -> int:
  """Group elements per vmapped call of the lifted map: ``n`` (one vmap), 1 (unrolled), or k;
  ``_BATCH`` for "batch" (no vmap: the group folded into f's batch axis), ``_AUTO`` for
  "auto" (that fold where f is proved to map each example on its own, else one vmap)."""
  if isinstance(vectorize, str) and vectorize in ("batch", "auto"):
    return _BATCH if vectorize == "batch" else _AUTO
  if isinstance(vectorize, (bool, np.bool_)):
    return n if vectorize else 1
  if not isinstance(vectorize, (int, np.integer)) or vectorize < 1:
    raise ValueError(f"vectorize = {vectorize!r}: 'auto' (the default: f on the group folded "
                     "into its batch axis where f is proved to map each example on its own, "
                     "else one vmap), True (one vmap over the group), False (one call per "
                     "element), a positive int (vmap over chunks of that many) or 'batch' "
                     "(the group folded into f's batch axis, unchecked)")
  return min(int(vectorize), n)


def _lift_over(f: Callable, action: Action, elements, argnum: int,
               vectorize: bool | int | str = "auto") -> Callable:
  """``x -> stack_i f(elements[i]^-1 . x)``; ``elements`` is static (numpy)."""
  elements = np.asarray(elements)
  chunk = _chunk(vectorize, len(elements))

  @functools.wraps(f)
  def lifted(*args, **kwargs):
    if not 0 <= argnum < len(args):
      raise ValueError(f"the lift acts on positional argument {argnum}, "
                       f"but the call has {len(args)} positional arguments")

    def with_input(moved_x):
      moved = list(args)
      moved[argnum] = moved_x
      return f(*moved, **kwargs)

    if chunk == _AUTO:
      # The fold where it is the same function as the vmap: f proved to map each example on
      # its own (more traces of f, abstract), in calls sized by a byte budget on CPU. On
      # XLA's CPU backend the folded program is the cheaper one (docs/performance.md).
      verdict, per_call = _fold_plan(f, action, args, kwargs, argnum, len(elements))
      if verdict:                                                       # checked the batch axis
        return _fold(with_input, action, action.prepare(args[argnum]), elements, per_call)
      return jax.vmap(with_input)(lift_inputs(action, args[argnum], elements))
    if chunk == _BATCH:
      return lift_in_batch(with_input, action, args[argnum], elements)
    if chunk == len(elements):
      return jax.vmap(with_input)(lift_inputs(action, args[argnum], elements))
    # Unrolled at trace time rather than lax.map: on CPU, XLA runs a while loop's body
    # (and its gradient) on one thread.
    x = action.prepare(args[argnum])
    if chunk == 1:
      outs = [with_input(action.apply(int(action.group.inverse[g]), x)) for g in elements]
      return jax.tree.map(lambda *leaves: jnp.stack(leaves), *outs)
    outs = [jax.vmap(with_input)(lift_inputs(action, x, elements[i:i + chunk]))
            for i in range(0, len(elements), chunk)]
    return jax.tree.map(lambda *leaves: jnp.concatenate(leaves), *outs)

  return lifted


def equivarify(f: Callable, action: Action, argnum: int = 0,
               vectorize: bool | int | str = "auto") -> Callable:
  """The lift ``F_hat(x)[g] = F(g^-1 . x)`` of ``f`` over ``action.group``.

  Args:
    f: any JAX-traceable function; its output may be any pytree of arrays.
    action: how G acts on the argument ``argnum`` of f.
    argnum: which positional argument G acts on; the others pass through unchanged
      (e.g. ``equivarify(model.apply, action, argnum=1)`` for ``apply(params, x)``).
    vectorize: "auto" (default): one ``jax.vmap`` over the group, run as f on the |G| B
      moved examples folded into its batch axis where that is proved to be the
      same function: axis 0 of the argument is a batch (one example ``x[0]`` a valid input
      of ``action``) and f's jaxprs at the vmap's batch B and the fold's |G| B show one rule
      applied to each example on its own, the same at both (:func:`eqnn.per_example.prove`;
      :func:`folds` says which form a call takes, and why). The fold costs what f does on
      the |G| B examples; the vmapped program carries a rank more through every elementwise
      op and pool, and its forward pass cost up to 1.6x that on XLA's CPU backend
      (docs/performance.md). f is traced twice more, abstractly, to decide: once per
      compilation under ``jax.jit``, but on every call of an f_hat run eagerly (about
      doubling an eager call of a small CNN's lift: `make bench`'s lift section times it).
      On CPU the fold is split into calls of a few elements each where f's intermediates
      on |G| B examples would pass :data:`eqnn.fold.FOLD_BYTES_CPU` (:func:`fold_calls`; f then also
      proved at those calls' batch sizes, and traced once per call): f's gradient costs
      more per example on large batches there, and separate calls run side by side.
      True: ``jax.vmap`` over the group always, one call of f on |G| times the batch, traced
      once; False: |G| calls of f, one per group element, each on the original batch (the
      same function; traced |G| times, and faster where a |G|-fold batch falls out of
      cache); an int k: ``jax.vmap`` over chunks of k group elements, ceil(|G| / k) calls of
      f on k times the batch (between the two: bounded memory for large groups, traced once
      per chunk); "batch": the fold, unchecked (axis 0 of the argument and of every output
      leaf must be a batch: named errors otherwise). Where f couples its examples
      symmetrically (batch statistics), "batch" shows it the |G| B moved examples as one
      batch: still exactly equivariant (h permutes that batch), but ``project(f_hat(x))`` is
      then not ``f(x)``; "auto" never folds such an f. On a batch sharded over devices the
      fold and False keep each device on its own examples; the vmap form (True, chunks, and
      "auto" where the fold is not proved) merges the group into the batch inside JAX's
      batching rules, group first, and XLA then gathers the batch onto every device.

  Returns:
    ``f_hat`` with the same signature; every output leaf gains a leading group axis
    ``[|G|, ...]`` in group order. It is equivariant: ``f_hat(h . x) = h . f_hat(x)`` with
    h acting on the group axis by :func:`eqnn.actions.regular`. ``jax.jit(f_hat)`` compiles
    once per input shape.
  """
  return _lift_over(f, action, np.arange(action.group.order), argnum, vectorize)


def symmetrize(f: Callable, in_action: Action, out_action: Action, argnum: int = 0,
               vectorize: bool | int | str = "auto") -> Callable:
  """The group average ``x -> (1/|G|) sum_g g . F(g^-1 . x)``: an equivariant map whose output
  transforms by ``out_action`` in its own space (per-node outputs of a graph model, vectors
  that turn with a point cloud), not by the group axis of the lift.

  It is the lift followed by ``s -> mean_g g . s(g)``, which maps the lift's regular action
  onto ``out_action``: the projection of the lift onto the equivariant maps (``f`` itself when
  ``f`` is already equivariant). Both actions must be of the same group. ``vectorize``: as
  for :func:`equivarify`.
  """
  if in_action.group != out_action.group:
    raise ValueError(f"input action is of {in_action.group.name}, output action of "
                     f"{out_action.group.name}")
  lifted = equivarify(f, in_action, argnum, vectorize)
  elements = jnp.arange(in_action.group.order)

  @functools.wraps(f)
  def averaged(*args, **kwargs):
    s = lifted(*args, **kwargs)                     # [|G|, ...], slot g = F(g^-1 . x)
    moved = jax.vmap(lambda g, leaf: jax.tree.map(lambda y: out_action.apply(g, y), leaf))(
        elements, s)
    return jax.tree.map(lambda y: jnp.mean(y, axis=0), moved)

  return averaged


def equivarify_nested(f: Callable, outer: Action, inner: Action, argnum: int = 0) -> Callable:
  """The lift over A x B as a lift over A of the lift over B, for two actions that commute:
  ``F_hat(x)[a, b] = F(b^-1 . a^-1 . x)``, shape ``[|A|, |B|, ...]``.

  It holds the same values as the lift over ``actions.product(outer, inner)`` (reshape its
  ``[|A| |B|, ...]`` to ``[|A|, |B|, ...]``), and A x B acts on it by the regular action of A
  on axis 0 and of B on axis 1. Nested, each level vmaps over its own group, so a product too
  large to enumerate as one table is never built.
  """
  return equivarify(equivarify(f, inner, argnum), outer, argnum)


def equivarify_minimal(f: Callable, action: Action, subgroup: Subgroup,
                       argnum: int = 0, vectorize: bool | int | str = "auto") -> Callable:
  """The minimal lift over G/H of an f that is invariant under the subgroup H.

  ``F_min(x)[c] = F(r_c^-1 . x)`` for the coset representatives ``r_c`` of G/H
  (``subgroup.representatives``), stacked on a leading coset axis ``[|G/H|, ...]``. G acts
  on it by :func:`eqnn.actions.on_cosets`. Correct only if f really is H-invariant; check
  with :func:`eqnn.testing.invariance_error` over ``subgroup.elements``. ``vectorize``: as
  for :func:`equivarify`, over the |G/H| representatives.
  """
  if subgroup.group != action.group:
    raise ValueError(f"the subgroup lives in {subgroup.group.name}, the action is of {action.group.name}")
  return _lift_over(f, action, subgroup.representatives, argnum, vectorize)


def expand_minimal(s_min: Any, subgroup: Subgroup) -> Any:
  """The full lift from the minimal one: ``s[g] = s_min[coset_of[g]]`` on every leaf."""
  idx = jnp.asarray(subgroup.coset_of)
  return jax.tree.map(lambda leaf: jnp.take(leaf, idx, axis=0), s_min)


def project(s: Any, axis: int = 0) -> Any:
  """``p(s) = s(e)``: the identity's slot of every leaf; ``project(equivarify(f, a)(x)) == f(x)``."""
  return jax.tree.map(lambda leaf: jnp.take(leaf, 0, axis=axis), s)


def invariant(s: Any, reduce: str | Callable = "max", axis: int = 0) -> Any:
  """A G-invariant readout: a symmetric reduction over the group axis of every leaf.

  Any reduction that does not depend on the order of the group axis is invariant,
  because G acts on that axis by a permutation. ``reduce`` is one of "max", "mean", "sum",
  "logsumexp", or a function ``(array, axis) -> array`` that must itself be symmetric.
  """
  if isinstance(reduce, str):
    if reduce not in _REDUCTIONS:
      raise ValueError(f"unknown reduction {reduce!r}; choose one of {sorted(_REDUCTIONS)}")
    reduce = _REDUCTIONS[reduce]
  return jax.tree.map(lambda leaf: reduce(leaf, axis=axis), s)
