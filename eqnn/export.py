"""Export a trained model for serving, with the weights inside and a symbolic batch axis.

* :func:`export_model`: serialized StableHLO; runs in any process with jax, no eqnn::

      from jax import export
      exp = export.deserialize(bytearray(open("model.jax", "rb").read()))
      logits = exp.call(images)            # images [B, H, W, C], any B

* :func:`export_onnx`: an ONNX model (through jax2onnx, the ``onnx`` extra); runs in
  onnxruntime or any ONNX runtime, no JAX::

      import onnxruntime as ort
      sess = ort.InferenceSession("model.onnx")
      logits = sess.run(None, {sess.get_inputs()[0].name: images})[0]
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


def export_onnx(apply_fn: Callable, params: Any, example_shape: tuple[int, ...],
                path: str | None = None, name: str = "eqnn_model") -> bytes:
  """``x -> apply_fn(params, x)`` as a serialized ONNX model with a dynamic batch axis "B".

  Needs jax2onnx (``pip install eqnn[onnx]``). Writes ``path`` too when given.
  """
  import logging
  try:
    from jax2onnx import to_onnx
  except ImportError as e:
    raise ImportError("ONNX export needs jax2onnx: pip install 'eqnn[onnx]'") from e
  logging.getLogger("onnx_ir").setLevel(logging.ERROR)   # notes on unnamed shape values
  params = jax.tree.map(jnp.asarray, params)
  proto = to_onnx(lambda x: apply_fn(params, x), [("B",) + tuple(example_shape)],
                  model_name=name)
  blob = proto.SerializeToString()
  if path is not None:
    with open(path, "wb") as f:
      f.write(blob)
  return blob
