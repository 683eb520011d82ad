"""Data: IDX parsing, checksums, clear errors, scaling, and the label convention."""

import gzip
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eqnn import actions, data



def _write_idx(path, array, magic=None, truncate=0):
  array = np.asarray(array, np.uint8)
  magic = magic or (2051 if array.ndim == 3 else 2049)
  raw = np.array([magic, *array.shape], ">u4").tobytes() + array.tobytes()
  with gzip.open(path, "wb") as f:
    f.write(raw[:len(raw) - truncate])


def test_read_idx_round_trip(tmp_path):
  imgs = np.arange(2 * 3 * 4).reshape(2, 3, 4)
  _write_idx(tmp_path / "x.gz", imgs)
  np.testing.assert_array_equal(data.read_idx(str(tmp_path / "x.gz"), 3), imgs)


def test_read_idx_refuses_bad_files(tmp_path):
  _write_idx(tmp_path / "magic.gz", np.zeros((2, 2, 2)), magic=1234)
  with pytest.raises(data.DataError, match="IDX magic 1234, expected 2051"):
    data.read_idx(str(tmp_path / "magic.gz"), 3)
  _write_idx(tmp_path / "short.gz", np.zeros((2, 2, 2)), truncate=3)
  with pytest.raises(data.DataError, match="truncated or corrupt"):
    data.read_idx(str(tmp_path / "short.gz"), 3)
  (tmp_path / "junk.gz").write_bytes(b"not gzip at all")
  with pytest.raises(data.DataError, match="cannot be read"):
    data.read_idx(str(tmp_path / "junk.gz"), 3)


def test_missing_file_names_the_file(tmp_path):
  with pytest.raises(data.DataError, match="train-images-idx3-ubyte.gz is missing"):
    data.load_mnist(str(tmp_path))


def test_corrupt_file_fails_the_checksum(tmp_path, mnist_dir):
  for fname, _ in data.MNIST_FILES.values():
    shutil.copy(os.path.join(mnist_dir, fname), tmp_path / fname)
  bad = tmp_path / "t10k-labels-idx1-ubyte.gz"
  raw = bytearray(bad.read_bytes())
  raw[-1] ^= 0xFF
  bad.write_bytes(bytes(raw))
  with pytest.raises(data.DataError, match="t10k-labels-idx1-ubyte.gz: sha256 .* does not match"):
    data.load_mnist(str(tmp_path))


def test_load_real_mnist(mnist_dir):
  ds = data.load_mnist(mnist_dir)
  assert ds.train.inputs.shape == (60000, 28, 28, 1) and ds.train.inputs.dtype == np.uint8
  assert ds.test.inputs.shape == (10000, 28, 28, 1)
  assert ds.train.labels[:5].tolist() == [5, 0, 4, 1, 9]
  assert np.bincount(ds.test.labels).tolist()[:2] == [980, 1135]


def test_to_float_scales_once():
  x = np.array([[0, 255]], np.uint8)[..., None, None]
  y = data.to_float(x)
  assert y.dtype == np.float32 and y.max() == 1.0 and y.min() == 0.0
  with pytest.raises(data.DataError, match="already scaled"):
    data.to_float(y)


def test_transform_randomly_is_seeded_and_moves_each_image():
  act = actions.rotations()
  x = jax.random.normal(jax.random.key(0), (64, 5, 5, 1))
  y1, g1 = data.transform_randomly(jax.random.key(1), x, act)
  y2, g2 = data.transform_randomly(jax.random.key(1), x, act)
  np.testing.assert_array_equal(y1, y2)
  assert set(np.asarray(g1).tolist()) == {0, 1, 2, 3}
  for i in range(8):
    np.testing.assert_array_equal(y1[i], jnp.rot90(x[i], int(g1[i]), axes=(0, 1)))
  with pytest.raises(ValueError, match="square"):
    data.transform_randomly(jax.random.key(1), jnp.zeros((2, 5, 6, 1)), act)


def test_tfds_datasets_load_through_data_source():
  """tfds' own API (tfds.data_source), exercised offline with tfds' mock data."""
  import tensorflow_datasets as tfds
  with tfds.testing.mock_data(num_examples=7):
    ds = data.load_tfds("mnist")
  assert ds.train.inputs.shape == (7, 28, 28, 1) and ds.train.inputs.dtype == np.uint8
  assert ds.test.labels.shape == (7,) and ds.num_classes == 10


def test_unknown_tfds_dataset_is_a_clear_error():
  with pytest.raises(data.DataError, match="no dataset 'no_such_dataset_xyz'"):
    data.load_tfds("no_such_dataset_xyz")
