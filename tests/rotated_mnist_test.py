"""MNIST-rot's protocol built offline, and the benchmark config's smoke run."""

import json
import os
import shutil

import numpy as np
import pytest

from eqnn import actions, data
from experiments import train
from experiments.configs import rotated_mnist as rotated_config


@pytest.fixture(scope="module")
def built(mnist_dir, tmp_path_factory):
  """The protocol's splits for seed 0, built once (about 30 s) into a cache folder."""
  cache = str(tmp_path_factory.mktemp("rotated_mnist_cache"))
  mnist = data.load_mnist(mnist_dir)
  return mnist, cache, data.rotated_mnist(mnist, 0, cache_dir=cache)


def test_the_splits_have_mnist_rots_sizes_and_uniform_angles(built):
  mnist, _, (train_split, valid, test) = built
  for split, n in zip((train_split, valid, test), (10_000, 2_000, 50_000)):
    assert split.inputs.shape == (n, 28, 28, 1) and split.inputs.dtype == np.uint8
    assert split.labels.shape == (n,) and split.angles.shape == (n,)
    assert 0 <= split.angles.min() and split.angles.max() < 2 * np.pi
    assert set(np.unique(split.labels)) == set(range(10))
  # Uniform on [0, 2 pi): each quarter of the circle holds about a quarter of the test digits.
  quarters = np.bincount((test.angles // (np.pi / 2)).astype(int), minlength=4) / 50_000
  np.testing.assert_allclose(quarters, 0.25, atol=0.01)
  # The first 10,000 test digits are MNIST's test digits, in order, turned by their angles.
  np.testing.assert_array_equal(test.labels[:10_000], mnist.test.labels)
  turned = actions.turn_images(data.to_float(mnist.test.inputs[:5]), test.angles[:5],
                               "bicubic", mask=False)
  np.testing.assert_allclose(data.to_float(test.inputs[:5]), np.clip(turned, 0, 1), atol=0.5 / 255)


def test_training_and_test_digits_are_disjoint_and_the_split_is_seeded():
  idx = data.rotated_mnist_indices(np.random.default_rng(0))
  sizes = {k: len(v) for k, v in idx.items()}
  assert sizes == {"train": 10_000, "validation": 2_000, "test": 40_000}
  every = np.concatenate(list(idx.values()))
  assert len(np.unique(every)) == len(every) == 52_000      # no digit in two splits
  again = data.rotated_mnist_indices(np.random.default_rng(0))
  other = data.rotated_mnist_indices(np.random.default_rng(1))
  assert all(np.array_equal(idx[k], again[k]) for k in idx)
  assert not np.array_equal(idx["train"], other["train"])


def test_the_cache_is_reused_and_rebuilt_when_stale(built, monkeypatch, tmp_path):
  mnist, cache, (train_split, _, test) = built
  calls = []
  monkeypatch.setattr(actions, "turn_images",
                      lambda x, a, *args, **kw: calls.append(1) or np.asarray(x, np.float32))
  again = data.rotated_mnist(mnist, 0, cache_dir=cache)          # read back: nothing turned
  assert not calls
  np.testing.assert_array_equal(again[0].inputs, train_split.inputs)
  np.testing.assert_array_equal(again[2].angles, test.angles)
  # A damaged cache file is rebuilt, not trusted.
  path = os.path.join(cache, "rotated_mnist-seed0-bicubic.npz")
  stale = str(tmp_path)
  shutil.copy(path, stale)
  with open(os.path.join(stale, os.path.basename(path)), "r+b") as f:
    f.seek(100)
    f.write(b"garbage")
  rebuilt = data.rotated_mnist(mnist, 0, cache_dir=stale)
  assert calls and rebuilt[0].inputs.shape == (10_000, 28, 28, 1)
  with pytest.raises(data.DataError, match="full MNIST"):
    data.rotated_mnist(data.Dataset("mnist", mnist.train.take(100), mnist.test, 10), 0)


def test_the_benchmark_config_runs_end_to_end(built, mnist_dir, tmp_path):
  _, cache, _ = built
  workdir = str(tmp_path / "run")
  os.makedirs(os.path.join(workdir, "data"))
  shutil.copy(os.path.join(cache, "rotated_mnist-seed0-bicubic.npz"), os.path.join(workdir, "data"))
  c = rotated_config.get_config("smoke")
  c.data_dir = mnist_dir
  # The best network's form (G-CNN hidden layers), shrunk; the table's rows use the stacking.
  assert c.hidden == rotated_config.get_config().hidden == "gcnn"
  assert rotated_config.get_config("c8").hidden == "stacked"
  results = train.train_and_evaluate(c, workdir)
  assert results["model"] == "EquivariantCNN" and results["group"] == "C8"
  assert results["steps"] == 4 and 0.0 <= results["test_class_accuracy"] <= 1.0
  assert results["eval_turns"] == 2 and 0.0 <= results["test_class_accuracy_turned"] <= 1.0
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f)["config"]["dataset"] == "rotated_mnist"
  # Every variant of the config names a group the runner knows, and builds.
  for variant in rotated_config.VARIANTS:
    cfg = rotated_config.get_config(variant)
    train.validate_config(cfg)
  with pytest.raises(train.ConfigError, match="test_transformed"):
    bad = rotated_config.get_config("smoke")
    bad.test_transformed = True
    train.validate_config(bad)
