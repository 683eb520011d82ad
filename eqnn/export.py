"""Export a trained model for serving: serialized StableHLO with a symbolic batch dimension.

The exported artefact holds the weights as constants and runs in any process with jax
installed, without eqnn::

    from jax import export
    exp = export.deserialize(open("model.jax", "rb").read())
    logits = exp.call(images)            # images [B, H, W, C], any B
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import export as jax_export


def export_model(apply_fn: Callable, params: Any, example_shape: tuple[int, ...],
                 dtype=jnp.float32, platforms: tuple[str, ...] | None = None) -> bytes:
  """Serializes ``x -> apply_fn(params, x)`` with the leading (batch) dimension symbolic.

  Args:
    apply_fn: e.g. a Flax ``model.apply``.
    params: its parameters, baked into the artefact.
    example_shape: the shape of one input without the batch axis, e.g. ``(28, 28, 1)``.
    dtype: the input dtype.
    platforms: lowering platforms, e.g. ``("cpu", "cuda")``; default: the current backend.
  """
  params = jax.tree.map(jnp.asarray, params)
  batch = jax_export.symbolic_shape("b")
  spec = jax.ShapeDtypeStruct(tuple(batch) + tuple(example_shape), dtype)
  fn = jax.jit(lambda x: apply_fn(params, x))
  exported = jax_export.export(fn, platforms=platforms)(spec)
  return exported.serialize()


def load(serialized: bytes) -> Callable:
  """The exported function, callable on any batch size."""
  return jax_export.deserialize(bytearray(serialized)).call
