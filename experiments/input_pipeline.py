"""The input pipeline: load the data a config names, place it on the devices, batch it.

The training set lives on the device; each step gathers its batch by index from a
per-epoch permutation drawn from ``fold_in(key, epoch)``, so a resumed run sees the same
batches as an uninterrupted one. The test set is moved once, on the host, by a seeded
random group element per example.
"""

from __future__ import annotations

import os
from typing import Callable

import jax
import ml_collections
import numpy as np

from eqnn import actions, data
from experiments import parallel, tasks


def load_dataset(c: ml_collections.ConfigDict, cache_dir: str | None = None) -> data.Dataset:
  """The config's dataset, trimmed to ``max_train_examples`` / ``max_test_examples`` (0: all).

  ``rotated_mnist`` (:func:`eqnn.data.rotated_mnist`, built once and kept in ``cache_dir``):
  with ``holdout = "test"`` training on all 12,000 digits and testing on the 50,000; with
  ``holdout = "validation"`` training on the 10,000 and testing on the 2,000 validation digits
  (for choosing a configuration without looking at the test digits).
  """
  if c.dataset == "mnist":
    ds = data.load_mnist(c.data_dir)
  elif c.dataset == "rotated_mnist":
    train, valid, test = data.rotated_mnist(data.load_mnist(c.data_dir), c.data_seed,
                                            cache_dir=cache_dir)
    if c.holdout == "test":
      train = data.Split(*(np.concatenate([getattr(train, f), getattr(valid, f)])
                           for f in ("inputs", "labels", "angles")))
    else:
      test = valid
    ds = data.Dataset("rotated_mnist", train, test, 10)
  elif c.dataset == "point_sets":
    ds = data.point_sets(c.seed, n_points=tasks.POINTS_PER_SET)
  else:
    ds = data.load_tfds(c.dataset, c.tfds_data_dir or None, download=c.tfds_download)
  return data.Dataset(ds.name, ds.train.take(c.max_train_examples or None),
                      ds.test.take(c.max_test_examples or None), ds.num_classes)


def describe(c: ml_collections.ConfigDict, ds: data.Dataset) -> str:
  """One line: what was loaded, and from where."""
  where = {"mnist": f"the IDX files in {os.path.abspath(c.data_dir)} (sha256 verified)",
           "rotated_mnist": f"MNIST-rot's protocol on the IDX files in "
                            f"{os.path.abspath(c.data_dir)} (seed {c.get('data_seed')}; "
                            f"evaluated on its {c.get('holdout')} digits)",
           "point_sets": f"generated from seed {c.seed}"}.get(
               c.dataset, f"tensorflow-datasets ({c.tfds_data_dir or 'its default folder'})")
  return (f"data: {ds.name} from {where}: {len(ds.train.labels):,} training and "
          f"{len(ds.test.labels):,} test examples of shape {ds.train.inputs.shape[1:]}")


def put_train_set(split: data.Split, mesh) -> tuple[jax.Array, jax.Array]:
  """``(inputs, labels)`` as global arrays: replicated with one process, in per-host
  shards with several (:func:`experiments.parallel.put_host_shards`)."""
  inputs = data.as_inputs(split.inputs)
  if jax.process_count() > 1:
    return parallel.put_host_shards(inputs, mesh), parallel.put_host_shards(split.labels, mesh)
  rep = parallel.replicated(mesh)
  return parallel.put(inputs, rep), parallel.put(split.labels, rep)


def test_set(key: jax.Array, split: data.Split, action: actions.Action, transformed: bool,
             nearest_elements=None):
  """``(inputs, labels, elements)`` on the host: each input moved by a random element of G
  drawn from ``key`` when ``transformed``, else as it is: elements all 0, or, for inputs
  already turned by known angles (``split.angles``), ``nearest_elements(angles)``."""
  inputs = data.as_inputs(split.inputs)
  elements = np.zeros(len(split.labels), np.int32)
  if split.angles is not None and nearest_elements is not None:
    elements = np.asarray(nearest_elements(split.angles), np.int32)
  if transformed:
    moved, g = jax.jit(data.transform_randomly, static_argnums=2)(key, inputs, action)
    inputs, elements = np.asarray(moved), np.asarray(g)
  return inputs, split.labels, elements


def epoch_permutations(key: jax.Array, n: int, mesh) -> Callable[[int], jax.Array]:
  """``epoch -> perm [n]``, drawn from ``fold_in(key, epoch)``, replicated on every device."""
  return jax.jit(lambda e: jax.random.permutation(jax.random.fold_in(key, e), n),
                 out_shardings=parallel.replicated(mesh))


def predict(forward, params, inputs: np.ndarray, batch_size: int, mesh) -> np.ndarray:
  """``forward(params, batch)`` for all ``inputs`` (host numpy, every process holds all),
  in sharded batches, the last one padded; ``forward`` is jitted once per run by the caller."""
  sharding = parallel.batch_sharded(mesh)
  out = []
  for s in range(0, inputs.shape[0], batch_size):
    batch = inputs[s:s + batch_size]
    pad = batch_size - batch.shape[0]
    if pad:
      batch = np.concatenate([batch, np.zeros((pad,) + batch.shape[1:], batch.dtype)])
    out.append(parallel.fetch(forward(params, parallel.put(batch, sharding)))[:batch_size - pad])
  return np.concatenate(out)
