"""Equivariance and invariance checks for anyone's models, and hypothesis strategies.

    f(g . x) = g' . f(x)     equivariant: the output moves with the input (out_action)
    f(g . x) = f(x)          invariant: the output does not move (out_action trivial)

Both are measured, never assumed: :func:`equivariance_error` returns the worst absolute
error and the error relative to the size of ``f(x)``, over every group element or the
ones given. Actions that permute entries (all of eqnn's) are exact, so float32 errors at
rounding level (~1e-6 relative) mean "equivariant"; anything larger is a real violation.

Two ways to call the checks::

    assert_equivariant(f, in_action, out_action, x)     # any function, actions given
    assert_equivariant(layer.bind(params), x)           # a layer or model that declares
                                                        # in_action and out_action (linen
                                                        # bound, or an NNX module)

>>> import jax, jax.numpy as jnp
>>> from eqnn import actions
>>> act = actions.rotations()
>>> x = jax.random.normal(jax.random.key(0), (5, 5, 1))
>>> invariance_error(lambda x: jnp.sum(x ** 2), act, x).max_abs < 1e-5    # invariant
True
>>> invariance_error(lambda x: x[0, 0, 0], act, x).max_rel > 0.1          # not invariant
True
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from eqnn.actions import Action, TrivialAction
from eqnn.groups import FiniteGroup


@dataclasses.dataclass(frozen=True)
class Error:
  """Worst-case error over the group elements checked.

  Attributes:
    max_abs: ``max_g max |f(g.x) - g'.f(x)|`` over all output entries.
    max_rel: ``max_abs / max |f(x)|`` (0 if f(x) is all zeros and so is the error).
    per_element: ``max_abs`` for each checked element, in the order of ``elements``.
    elements: the group element indices checked.
    scale: ``max |f(x)|``, the reference of ``max_rel``.
  """

  max_abs: float
  max_rel: float
  per_element: tuple[float, ...]
  elements: tuple[int, ...]
  scale: float


def declared_actions(f) -> tuple[Action, Action]:
  """``(in_action, out_action)`` that a layer or model declares; a clear error if it does not."""
  ins, outs = getattr(f, "in_action", None), getattr(f, "out_action", None)
  if not isinstance(ins, Action) or not isinstance(outs, Action):
    raise TypeError(f"{type(f).__name__} declares no in_action/out_action: pass them, as in "
                    f"assert_equivariant(f, in_action, out_action, x)")
  return ins, outs


def _split_args(f, args) -> tuple[Action, Action, object]:
  if len(args) == 1:
    return (*declared_actions(f), args[0])
  if len(args) == 3:
    return tuple(args)
  raise TypeError(f"expected (f, x) for a module that declares its actions or "
                  f"(f, in_action, out_action, x), got {len(args) + 1} arguments")


def _compiled(f):
  """A bound Flax linen module is compiled once (it would otherwise run op by op for every
  group element); functions and NNX modules (which may update their own state) run as given."""
  if hasattr(f, "scope") and hasattr(f, "variables") and getattr(f, "scope", None) is not None:
    return jax.jit(f.__call__)
  return f


def equivariance_error(f: Callable, *args, elements: Sequence[int] | None = None) -> Error:
  """How far ``f`` is from ``f(g . x) = g' . f(x)``; g' is g acting through the output action.

  Called as ``equivariance_error(f, in_action, out_action, x)``, or as
  ``equivariance_error(module, x)`` for a layer or model that declares ``in_action`` and
  ``out_action``. ``f`` may return any pytree; the output action acts on every leaf. Both
  actions must be of the same group (e.g. rotations of images in,
  :func:`eqnn.actions.regular` on the group axis out).
  """
  in_action, out_action, x = _split_args(f, args)
  f = _compiled(f)
  if in_action.group != out_action.group:
    raise ValueError(f"input action is of {in_action.group.name}, output action of {out_action.group.name}")
  group = in_action.group
  elements = tuple(range(group.order)) if elements is None else tuple(int(g) for g in elements)
  for g in elements:
    if not 0 <= g < group.order:
      raise ValueError(f"element {g} is out of range for {group.name} (order {group.order})")
  x = in_action.prepare(x)
  fx = f(x)
  if jax.tree.structure(fx).num_leaves == 0:
    raise ValueError("f returned no arrays to compare")

  # A loop, not a jit of a vmap: the caller's f is usually jitted already, and a fresh jit
  # here would recompile for every new closure.
  per = []
  for g in elements:
    lhs = f(in_action(g, x))
    rhs = jax.tree.map(lambda leaf, g=g: out_action(g, leaf), fx)
    diffs = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), lhs, rhs)
    per.append(max(jax.tree.leaves(diffs)))
  per = np.asarray(per)
  scale = max(float(jnp.max(jnp.abs(leaf))) for leaf in jax.tree.leaves(fx))
  max_abs = float(per.max())
  max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
  return Error(max_abs, max_rel, tuple(float(e) for e in per), elements, scale)


def invariance_error(f: Callable, in_action: Action, x,
                     elements: Sequence[int] | None = None) -> Error:
  """How far ``f`` is from ``f(g . x) = f(x)``."""
  return equivariance_error(f, in_action, TrivialAction(in_action.group), x, elements=elements)


def assert_equivariant(f: Callable, *args, atol: float = 1e-5, rtol: float = 1e-5,
                       elements: Sequence[int] | None = None) -> Error:
  """Raises AssertionError naming the worst group element unless f is equivariant on x.

  Arguments as for :func:`equivariance_error`. Passes when
  ``max_abs <= atol + rtol * max|f(x)|``. The defaults fit float32 and exact (permutation)
  actions; loosen them only with a reason.
  """
  in_action, out_action, x = _split_args(f, args)
  err = equivariance_error(f, in_action, out_action, x, elements=elements)
  if err.max_abs > atol + rtol * err.scale:
    worst = err.elements[int(np.argmax(err.per_element))]
    name = in_action.group.element_names[worst]
    raise AssertionError(
        f"not equivariant: max |f(g.x) - g'.f(x)| = {err.max_abs:.3g} "
        f"(relative {err.max_rel:.3g}) at g = {name}; tolerance atol={atol}, rtol={rtol}")
  return err


def assert_invariant(f: Callable, in_action: Action, x, atol: float = 1e-5,
                     rtol: float = 1e-5, elements: Sequence[int] | None = None) -> Error:
  """Raises AssertionError unless ``f(g . x) = f(x)`` within tolerance."""
  return assert_equivariant(f, in_action, TrivialAction(in_action.group), x, atol=atol,
                            rtol=rtol, elements=elements)


# --- hypothesis strategies -------------------------------------------------------------

def group_elements(group: FiniteGroup, include_identity: bool = True):
  """A hypothesis strategy drawing element indices of ``group`` (shrinks towards e)."""
  from hypothesis import strategies as st  # hypothesis is a test-time dependency
  lo = 0 if include_identity else 1
  if lo >= group.order:
    raise ValueError(f"{group.name} has no non-identity elements")
  return st.integers(min_value=lo, max_value=group.order - 1)


def element_pairs(group: FiniteGroup):
  """A strategy drawing pairs ``(g, h)`` of element indices."""
  from hypothesis import strategies as st
  return st.tuples(group_elements(group), group_elements(group))


def inputs(action: Action, shape=None, batch: tuple[int, ...] = (), scale: float = 1.0):
  """A hypothesis strategy drawing inputs that ``action`` acts on: standard normal arrays
  (times ``scale``) of ``batch + shape`` for every leaf, ``shape`` a shape or a pytree of
  shapes matching the action (default: ``action.example_shape()``).

  Hypothesis draws an integer seed and JAX draws the arrays from it, so shrinking stays cheap
  and a failing example is reproducible from its seed. The shape is checked against the
  action once, when the strategy is made.
  """
  from hypothesis import strategies as st
  shape = action.example_shape() if shape is None else shape
  is_shape = lambda s: isinstance(s, tuple) and all(isinstance(d, int) for d in s)
  shapes = jax.tree.map(lambda s: tuple(batch) + tuple(s), shape, is_leaf=is_shape)

  def draw(seed):
    leaves, tree = jax.tree.flatten(shapes, is_leaf=is_shape)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(tree, [scale * jax.random.normal(k, s)
                                     for k, s in zip(keys, leaves)])

  action.prepare(draw(0))          # a shape the action does not take fails here, not in a test
  return st.integers(0, 2**31 - 1).map(draw)


def elements_and_inputs(action: Action, shape=None, batch: tuple[int, ...] = ()):
  """A strategy drawing ``(g, x)``: a group element and an input for ``action``."""
  from hypothesis import strategies as st
  return st.tuples(group_elements(action.group), inputs(action, shape, batch))
