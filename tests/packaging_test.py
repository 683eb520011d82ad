"""The core needs only jax and numpy: eqnn imports and works with the optional packages gone."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPTIONAL = ["flax", "optax", "orbax", "tensorflow_datasets", "matplotlib", "ml_collections",
            "absl", "chex", "hypothesis", "experiments"]

SCRIPT = r"""
import sys
BLOCKED = %r

class Blocker:
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in BLOCKED:
      raise ImportError(f"{name} is blocked: the core must not need it")

sys.meta_path.insert(0, Blocker())
import jax, jax.numpy as jnp
import eqnn
from eqnn import actions, groups, ops, readouts, testing

act = actions.rotations_reflections()
w = jax.random.normal(jax.random.key(0), (36, 3))
f_hat = eqnn.equivarify(lambda x: jnp.tanh(x.reshape(-1) @ w), act)
x = jax.random.normal(jax.random.key(1), (6, 6, 1))
testing.assert_equivariant(f_hat, act, actions.regular(act.group), x)
k = jax.random.normal(jax.random.key(2), (3, 3, 1, 2))
testing.assert_equivariant(lambda x: ops.lift_conv(x, k, None, act), act,
                           ops.block_action(act.group), x[None])
print("core ok", sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED))
"""


def test_core_works_without_the_optional_packages():
  p = subprocess.run([sys.executable, "-c", SCRIPT % (OPTIONAL,)], cwd=ROOT, capture_output=True,
                     text=True, timeout=120)
  assert p.returncode == 0, p.stderr[-2000:]
  assert "core ok []" in p.stdout


def test_the_blocker_really_blocks():
  """Negative control: the same script that imports a layer module fails."""
  p = subprocess.run([sys.executable, "-c", SCRIPT % (OPTIONAL,) + "\nfrom eqnn import layers\n"],
                     cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert p.returncode != 0 and "flax is blocked" in p.stderr
