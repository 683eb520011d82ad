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
from typing import Callable, Mapping

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


def _rel(a, b, ref) -> float:
  den = float(jnp.linalg.norm(ref.reshape(-1)))
  return float(jnp.linalg.norm((a - b).reshape(-1))) / den if den > 0 else float("nan")


def layer_errors(features: Callable[[jnp.ndarray], Mapping[str, jnp.ndarray]], x,
                 transforms: list[Transform]) -> list[dict]:
  """Rows ``{transform, size, layer, equivariance, invariance}`` for every layer and transform.

  ``features(x)`` returns the named features of every layer, in order (e.g. captured
  intermediates of a Flax model, output included).
  """
  base = features(x)
  rows = []
  for t in transforms:
    moved = features(t.apply(x))
    for name, f in base.items():
      fg = moved[name]
      want = t.expected(name, f)
      crop = (lambda a: t.crop(name, a)) if t.crop else (lambda a: a)
      eq = _rel(crop(fg), crop(want), crop(f)) if want is not None else float("nan")
      inv = _rel(crop(fg), crop(f), crop(f)) if fg.shape == f.shape else float("nan")
      rows.append({"transform": t.name, "size": t.size, "layer": name,
                   "equivariance": eq, "invariance": inv})
  return rows


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
