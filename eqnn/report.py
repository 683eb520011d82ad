"""The equivariance report: layer by layer, is a model equivariant, invariant, or neither?

For a transformation g of the input and a layer's features f:

    equivariance error  ||f(g.x) - g'.f(x)|| / ||f(x)||     (g' the expected action on f)
    invariance error    ||f(g.x) - f(x)||    / ||f(x)||

with Frobenius norms over the whole batch. A layer can score low on the first (it moves
with the input: convolutions under shifts, the lift under its group) or on the second (it
does not move: a symmetric readout), or on neither (a plain CNN under rotation).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Transform:
  """An input transformation and, per layer, the action expected on that layer's features.

  Attributes:
    name: e.g. "shift", "rotate", "flip".
    size: e.g. the shift in pixels or the number of quarter turns.
    apply: ``x -> g . x`` on input batches.
    expected: ``(layer_name, features) -> g' . features``, or None where no action is
      expected (the equivariance error is then not defined, reported as NaN).
    crop: ``(layer_name, features) -> features`` restricting both sides before comparing
      (e.g. dropping a border band the transformation pushes zeros into), or None.
  """

  name: str
  size: int
  apply: Callable
  expected: Callable[[str, jnp.ndarray], jnp.ndarray | None]
  crop: Callable[[str, jnp.ndarray], jnp.ndarray] | None = None


def _rel(a, b, ref):
  """||a - b|| / ||ref|| over the whole batch (a traced scalar), -1 where ``ref`` is 0 (NaN
  once read back: no NaN inside the program, which jax_debug_nans would stop)."""
  den = jnp.linalg.norm(ref.reshape(-1))
  ok = den > 0
  return jnp.where(ok, jnp.linalg.norm((a - b).reshape(-1)) / jnp.where(ok, den, 1.0), -1.0)


def layer_errors(features: Callable[[jnp.ndarray], Mapping[str, jnp.ndarray]], x,
                 transforms: list[Transform]) -> list[dict]:
  """Rows ``{transform, size, layer, equivariance, invariance}`` for every layer and transform.

  ``features(x)`` returns the named features of every layer, in order (e.g. captured
  intermediates of a Flax model, output included). Each transform's errors of every layer
  are one compiled program (``expected`` and ``crop`` traced with jax.numpy), read back once.
  """
  base = features(x)
  rows = []
  for t in transforms:
    errs = jax.device_get(_errors(t, base, features(t.apply(x))))
    for name in base:
      eq, inv = (float(v) if v >= 0 else float("nan") for v in errs[name])
      rows.append({"transform": t.name, "size": t.size, "layer": name,
                   "equivariance": eq, "invariance": inv})
  return rows


@functools.partial(jax.jit, static_argnums=0)
def _errors(t: Transform, base, moved):
  """``{layer: [equivariance, invariance]}`` of one transform, -1 where not defined (no
  expected action; a layer whose shape the transform changed). One compiled program per
  transform and shapes, cached across calls (``t`` is hashable: a frozen dataclass)."""
  crop = t.crop or (lambda name, a: a)
  out = {}
  for name, f in base.items():
    fg, want = moved[name], t.expected(name, f)     # None: no action expected
    cf, cg = crop(name, f), crop(name, fg)
    eq = _rel(cg, crop(name, want), cf) if want is not None else jnp.float32(-1)
    inv = _rel(cg, cf, cf) if fg.shape == f.shape else jnp.float32(-1)
    out[name] = jnp.stack([eq, inv]).astype(jnp.float32)
  return out


def markdown_table(rows_by_model: Mapping[str, list[dict]]) -> str:
  """One row per (model, layer), one column per transform: ``equivariance / invariance``."""
  cols = []
  for rows in rows_by_model.values():
    for r in rows:
      key = (r["transform"], r["size"])
      if key not in cols:
        cols.append(key)
  head = "| model | layer | " + " | ".join(f"{n} {s}" for n, s in cols) + " |"
  sep = "|" + " --- |" * (len(cols) + 2)
  lines = [head, sep]
  fmt = lambda v: "n/a" if np.isnan(v) else f"{v:.2g}" if v >= 1e-3 else f"{v:.0e}"
  for model, rows in rows_by_model.items():
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    for layer in layers:
      cells = []
      for n, s in cols:
        r = next((r for r in rows if r["layer"] == layer and (r["transform"], r["size"]) == (n, s)),
                 None)
        cells.append("" if r is None else f"{fmt(r['equivariance'])} / {fmt(r['invariance'])}")
      lines.append(f"| {model} | {layer} | " + " | ".join(cells) + " |")
  return "\n".join(lines)
