"""Export: the serialized model runs, any batch size, in a process without eqnn."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from eqnn import actions, export, models

LOADER = r"""
import sys
import numpy as np
from jax import export
exp = export.deserialize(bytearray(open(sys.argv[1], "rb").read()))
for n in (3, 5):
    x = np.load(sys.argv[2])[:n]
    np.save(sys.argv[3] + f"_{n}.npy", np.asarray(exp.call(x)))
assert not any(m == "eqnn" or m.startswith("eqnn.") or m.startswith("experiments")
               for m in sys.modules), "the loader imported eqnn"
"""


def _run_loader(tmp_path, script, model_file, x):
  """Runs ``script`` in a fresh process with no PYTHONPATH (so no eqnn), on ``x``."""
  np.save(tmp_path / "x.npy", np.asarray(x))
  (tmp_path / "load.py").write_text(script)
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  subprocess.run([sys.executable, str(tmp_path / "load.py"), str(tmp_path / model_file),
                  str(tmp_path / "x.npy"), str(tmp_path / "out")], check=True, cwd=tmp_path,
                 env=env, timeout=120)


def test_exported_model_runs_without_eqnn(tmp_path):
  model = models.EquivariantCNN(actions.rotations(), (4, 8), (2, 2), (16,))
  x = jax.random.normal(jax.random.key(0), (5, 28, 28, 1))
  params = jax.jit(model.init)(jax.random.key(1), x[:1])
  blob = export.export_model(model.apply, params, (28, 28, 1))
  (tmp_path / "model.jax").write_bytes(blob)
  _run_loader(tmp_path, LOADER, "model.jax", x)
  for n in (3, 5):
    got = np.load(tmp_path / f"out_{n}.npy")
    np.testing.assert_allclose(got, model.apply(params, x[:n]), atol=1e-5, rtol=1e-5)
  # And in this process, through eqnn's own loader.
  np.testing.assert_allclose(export.load(blob)(x[:2]), model.apply(params, x[:2]), atol=1e-5)
  assert jnp.asarray(export.load(blob)(x)).shape == (5, 4, 10)


ONNX_LOADER = r"""
import sys
import numpy as np
import onnxruntime as ort
sess = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
name = sess.get_inputs()[0].name
x = np.load(sys.argv[2])
for tag, batch in (("3", x[:3]), ("5", x), ("rot", np.rot90(x, 1, axes=(1, 2)).copy())):
    np.save(sys.argv[3] + f"_{tag}.npy", sess.run(None, {name: batch})[0])
assert not any(m.split(".")[0] in ("jax", "eqnn", "flax") for m in sys.modules), "imported JAX"
"""


def test_onnx_export_runs_in_onnxruntime_and_stays_equivariant(tmp_path):
  """Tolerance 1e-5 (absolute and relative): ONNX Runtime's float32 convolutions sum in
  another order than XLA's."""
  model = models.EquivariantCNN(actions.rotations(), (4, 8), (2, 2), (16,))
  x = jax.random.uniform(jax.random.key(0), (5, 28, 28, 1))
  params = jax.jit(model.init)(jax.random.key(1), x[:1])
  export.export_onnx(model.apply, params, (28, 28, 1), path=str(tmp_path / "model.onnx"))
  _run_loader(tmp_path, ONNX_LOADER, "model.onnx", x)
  want = np.asarray(model.apply(params, x))
  np.testing.assert_allclose(np.load(tmp_path / "out_3.npy"), want[:3], atol=1e-5, rtol=1e-5)
  got = np.load(tmp_path / "out_5.npy")
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
  # Still equivariant outside JAX: a quarter turn of the input shifts the group axis by one
  # (the 40 logits by 10 slots).
  np.testing.assert_allclose(np.load(tmp_path / "out_rot.npy"), np.roll(got, 1, axis=1),
                             atol=1e-5, rtol=1e-5)
