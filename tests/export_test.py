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


def test_exported_model_runs_without_eqnn(tmp_path):
  model = models.EquivariantCNN(actions.rotations(), (4, 8), (2, 2), (16,))
  x = jax.random.normal(jax.random.key(0), (5, 28, 28, 1))
  params = model.init(jax.random.key(1), x[:1])
  blob = export.export_model(model.apply, params, (28, 28, 1))
  (tmp_path / "model.jax").write_bytes(blob)
  np.save(tmp_path / "x.npy", np.asarray(x))
  (tmp_path / "load.py").write_text(LOADER)
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  subprocess.run([sys.executable, str(tmp_path / "load.py"), str(tmp_path / "model.jax"),
                  str(tmp_path / "x.npy"), str(tmp_path / "out")], check=True, cwd=tmp_path,
                 env=env, timeout=120)
  for n in (3, 5):
    got = np.load(tmp_path / f"out_{n}.npy")
    np.testing.assert_allclose(got, model.apply(params, x[:n]), atol=1e-5, rtol=1e-5)
  # And in this process, through eqnn's own loader.
  np.testing.assert_allclose(export.load(blob)(x[:2]), model.apply(params, x[:2]), atol=1e-5)
  assert jnp.asarray(export.load(blob)(x)).shape == (5, 4, 10)
