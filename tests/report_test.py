"""The equivariance report shows, in numbers, what the textbook says in words."""

import jax.numpy as jnp
import numpy as np
import pytest

from eqnn import report
from experiments import equivariance_report as er


def test_layer_errors_on_known_functions():
  x = jnp.arange(2 * 6 * 6 * 1, dtype=jnp.float32).reshape(2, 6, 6, 1)
  feats = lambda x: {"id": x, "sum": jnp.sum(x, axis=(1, 2, 3))}
  t = report.Transform("flip", 1, lambda x: jnp.flip(x, 2),
                       lambda name, f: jnp.flip(f, 2) if name == "id" else f)
  rows = {r["layer"]: r for r in report.layer_errors(feats, x, [t])}
  assert rows["id"]["equivariance"] == 0.0 and rows["id"]["invariance"] > 0.05
  assert rows["sum"]["invariance"] == 0.0
  table = report.markdown_table({"toy": list(rows.values())})
  assert "| toy | id | 0e+00 /" in table


@pytest.fixture(scope="module")
def rows(tmp_path_factory, mnist_dir):
  out, _ = er.run(str(tmp_path_factory.mktemp("report")), mnist_dir, 0, 16, 0)
  return out


def _get(rows, model, layer, transform, size):
  return next(r for r in rows[model] if r["layer"] == layer and r["transform"] == transform
              and r["size"] == size)


def test_convolutions_are_translation_equivariant_not_invariant(rows):
  for size in (1, 2, 3):
    r = _get(rows, "plain CNN", "conv1", "shift", size)
    assert r["equivariance"] < 1e-5 and r["invariance"] > 0.1


def test_pooling_is_exact_only_for_multiples_of_its_stride(rows):
  assert _get(rows, "plain CNN + pooling", "pool1", "shift", 2)["equivariance"] < 1e-5
  assert _get(rows, "plain CNN + pooling", "pool1", "shift", 1)["equivariance"] > 1e-3


def test_plain_cnn_is_neither_rotation_equivariant_nor_invariant(rows):
  for layer in ("conv1", "conv2"):
    r = _get(rows, "plain CNN", layer, "rotate", 1)
    assert r["equivariance"] > 0.05 and r["invariance"] > 0.05
  assert _get(rows, "plain CNN", "logits", "rotate", 1)["invariance"] > 0.01


def test_lifted_first_layer_is_translation_equivariant_blockwise_and_the_stack_is_not(rows):
  model = "equivarified CNN (C4)"
  # Block g is a conv of the copy turned by g^-1: a shift moves it along the turned direction.
  r = _get(rows, model, "conv1", "shift", 1)
  assert r["equivariance"] < 1e-5 and r["invariance"] > 0.1
  # The next conv mixes blocks that moved in four different directions: the paper's stacking
  # keeps exact rotation equivariance but not translation equivariance past the first layer.
  assert _get(rows, model, "conv2", "shift", 2)["equivariance"] > 1e-2


def test_equivarified_cnn_is_exact_at_every_layer(rows):
  model = "equivarified CNN (C4)"
  layers = {r["layer"] for r in rows[model]}
  assert {"conv1", "pool1", "conv2", "pool2", "conv3", "dense1", "logits"} <= layers
  for layer in layers - {"readout (logsumexp over G)"}:
    for j in (1, 2):
      assert _get(rows, model, layer, "rotate", j)["equivariance"] < 1e-5, layer
  readout = "readout (logsumexp over G)"
  assert _get(rows, model, readout, "rotate", 1)["invariance"] < 1e-5
  assert _get(rows, model, "logits", "rotate", 1)["invariance"] > 1e-3     # equivariant, not invariant
  assert _get(rows, model, readout, "flip", 1)["invariance"] > 1e-4        # flips are not in C4
  assert np.isnan(_get(rows, model, "conv1", "flip", 1)["equivariance"])
