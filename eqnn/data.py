"""Image classification data for the experiments, and the equivariant label encoding.

MNIST comes from the four original IDX files (no TensorFlow), verified by sha256 against
the sums tensorflow-datasets registers; any other tensorflow-datasets image classification
dataset comes through ``tfds.data_source``. Everything is returned as numpy arrays:
inputs ``uint8 [N, H, W, C]`` for images (scaled to [0, 1] exactly once, :func:`to_float`) or
``float32 [N, n, d]`` for point sets, and class labels ``int32 [N]``. The joint labels a
lifted classifier trains on are in :mod:`eqnn.readouts`.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import zipfile

import jax
import jax.numpy as jnp
import numpy as np

from eqnn import actions as actions_lib

# name -> (file, sha256), as registered by tensorflow-datasets' mnist builder.
MNIST_FILES = {
    "train_images": ("train-images-idx3-ubyte.gz",
                     "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
    "train_labels": ("train-labels-idx1-ubyte.gz",
                     "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
    "test_images": ("t10k-images-idx3-ubyte.gz",
                    "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
    "test_labels": ("t10k-labels-idx1-ubyte.gz",
                    "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
}
_IDX_MAGIC = {3: 2051, 1: 2049}   # ndim -> magic number


class DataError(ValueError):
  """A missing, corrupt or unusable data file or dataset; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class Split:
  """Model inputs and class labels of one split."""

  inputs: np.ndarray   # [N, ...]: uint8 images [N, H, W, C], float32 point sets [N, n, d]
  labels: np.ndarray   # int32 [N]
  angles: np.ndarray | None = None   # float32 [N]: radians each input was turned by, if known

  def __post_init__(self):
    if self.inputs.ndim < 2 or self.labels.shape != (self.inputs.shape[0],):
      raise DataError(f"inputs [N, ...] and labels [N] expected, got "
                      f"{self.inputs.shape} and {self.labels.shape}")
    if self.angles is not None and self.angles.shape != self.labels.shape:
      raise DataError(f"angles [N] expected, got {self.angles.shape} for {self.labels.shape[0]} "
                      f"examples")

  def take(self, n: int | None) -> "Split":
    """The first n examples (all for None)."""
    if n is None or n >= len(self.labels):
      return self
    return Split(self.inputs[:n], self.labels[:n],
                 None if self.angles is None else self.angles[:n])

  def slice(self, start: int, stop: int) -> "Split":
    return Split(self.inputs[start:stop], self.labels[start:stop],
                 None if self.angles is None else self.angles[start:stop])


@dataclasses.dataclass(frozen=True)
class Dataset:
  name: str
  train: Split
  test: Split
  num_classes: int


def sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def read_idx(path: str, ndim: int) -> np.ndarray:
  """An IDX file (gzip or not) as a uint8 array; checks the magic number and the size."""
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      data = f.read()
  except (OSError, EOFError) as e:
    raise DataError(f"{path}: cannot be read ({e}); replace it with an intact copy") from e
  header = 4 * (1 + ndim)
  if len(data) < header:
    raise DataError(f"{path}: too short for an IDX header ({len(data)} bytes)")
  magic, *dims = np.frombuffer(data[:header], ">u4").tolist()
  if magic != _IDX_MAGIC[ndim]:
    raise DataError(f"{path}: IDX magic {magic}, expected {_IDX_MAGIC[ndim]} for a "
                    f"{ndim}-d array")
  payload = np.frombuffer(data, np.uint8, offset=header)
  if payload.size != int(np.prod(dims)):
    raise DataError(f"{path}: header says {dims} ({int(np.prod(dims))} bytes) but the "
                    f"payload has {payload.size}; the file is truncated or corrupt")
  return payload.reshape(dims)


def load_mnist(data_dir: str, verify: bool = True) -> Dataset:
  """MNIST from the four original IDX files in ``data_dir``, checked by sha256."""
  arrays = {}
  for key, (fname, digest) in MNIST_FILES.items():
    path = os.path.join(data_dir, fname)
    if not os.path.exists(path):
      raise DataError(
          f"MNIST file {fname} is missing from {os.path.abspath(data_dir)}. Put the four "
          f"original files ({', '.join(f for f, _ in MNIST_FILES.values())}) there, or point "
          f"--config.data_dir at the folder that holds them.")
    if verify:
      got = sha256(path)
      if got != digest:
        raise DataError(f"{path}: sha256 {got} does not match the published {digest}; the "
                        f"file is corrupt or not the original MNIST file. Replace it.")
    arrays[key] = read_idx(path, 3 if key.endswith("images") else 1)
  split = lambda s: Split(arrays[f"{s}_images"][..., None], arrays[f"{s}_labels"].astype(np.int32))
  return Dataset("mnist", split("train"), split("test"), 10)


def load_tfds(name: str, data_dir: str | None = None, download: bool = False,
              image_key: str = "image", label_key: str = "label") -> Dataset:
  """Any tensorflow-datasets image classification dataset, through ``tfds.data_source``.

  Needs the dataset prepared in ``data_dir`` (or ``download=True`` on a machine that is
  online); TensorFlow is not needed.
  """
  import tensorflow_datasets as tfds  # only this path needs tfds
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # tfds raises several types for unknown names
    raise DataError(f"tensorflow-datasets has no dataset {name!r}: {e}") from e
  try:
    if download:
      builder.download_and_prepare(file_format="array_record")
    sources = {s: tfds.data_source(name, split=s, data_dir=data_dir, download=False)
               for s in ("train", "test")}
  except Exception as e:
    raise DataError(
        f"tensorflow-datasets could not provide {name!r} from data_dir={data_dir!r} "
        f"({type(e).__name__}: {e}). Prepare it there first (on a machine that is online: "
        f"download=True), or use the MNIST IDX files.") from e
  splits = {}
  for s, src in sources.items():
    records = [src[i] for i in range(len(src))]
    images = np.stack([np.asarray(r[image_key]) for r in records]).astype(np.uint8)
    if images.ndim == 3:
      images = images[..., None]
    splits[s] = Split(images, np.asarray([r[label_key] for r in records], np.int32))
  num_classes = builder.info.features[label_key].num_classes
  return Dataset(name, splits["train"], splits["test"], num_classes)


@dataclasses.dataclass(frozen=True)
class Info:
  """A dataset's example shape and class count, known without reading its examples."""

  input_shape: tuple[int, ...]
  num_classes: int


def tfds_info(name: str, data_dir: str | None = None, image_key: str = "image",
              label_key: str = "label") -> Info:
  """The image shape and class count that tensorflow-datasets registers for ``name``."""
  import tensorflow_datasets as tfds  # only this path needs tfds
  try:
    features = tfds.builder(name, data_dir=data_dir).info.features
    shape = tuple(features[image_key].shape)
    num_classes = features[label_key].num_classes
  except Exception as e:  # tfds raises several types for unknown names and missing data
    raise DataError(f"tensorflow-datasets cannot describe {name!r} "
                    f"({type(e).__name__}: {e})") from e
  if any(d is None for d in shape):
    raise DataError(f"{name!r} has images of varying size {shape}; eqnn needs a fixed size")
  return Info(shape if len(shape) == 3 else shape + (1,), num_classes)


def to_float(images: np.ndarray) -> np.ndarray:
  """uint8 -> float32 in [0, 1]. Scaled exactly once (the authors' code scaled twice)."""
  if images.dtype != np.uint8:
    raise DataError(f"to_float expects raw uint8 images, got {images.dtype}: already scaled?")
  return images.astype(np.float32) / 255.0


def as_inputs(x: np.ndarray) -> np.ndarray:
  """Model inputs: raw uint8 images scaled once to [0, 1]; float data passed through."""
  return to_float(x) if x.dtype == np.uint8 else np.asarray(x, np.float32)


# The MNIST-rot protocol (Larochelle et al. 2007): 10,000 training, 2,000 validation and 50,000
# test digits, each turned by an angle drawn uniformly from [0, 2 pi).
ROTATED_MNIST_SIZES = {"train": 10_000, "validation": 2_000, "test": 50_000}
ROTATED_MNIST_VERSION = 1     # bump when the construction changes: cached copies are rebuilt


def rotated_mnist(mnist: Dataset, seed: int = 0, interpolation: str = "bicubic",
                  cache_dir: str | None = None) -> tuple[Split, Split, Split]:
  """``(train, validation, test)``: MNIST-rot's protocol built from the original MNIST files.

  A permutation of MNIST's 60,000 training digits drawn from ``seed`` gives 10,000 training
  and 2,000 validation digits (MNIST-rot's 12,000) and 40,000 more which, with the 10,000
  test digits, are the 50,000 test digits: disjoint from training, as in MNIST-rot. Each digit
  is turned by its own uniform angle in [0, 2 pi) (also from ``seed``; kept in
  ``Split.angles``) by ``interpolation`` resampling (:func:`eqnn.actions.turn_images`, not
  masked: MNIST's digits lie in the inscribed disk) and stored as uint8 like the originals.
  The sizes and the sampling are MNIST-rot's; the digits and angles are not (that set cannot
  be downloaded here), so errors compare with published ones in kind, not digit for digit.

  ``cache_dir``: keep the result there (``rotated_mnist-seed{seed}-{interpolation}.npz``) and
  reuse it when its stored construction matches.
  """
  path = (os.path.join(cache_dir, f"rotated_mnist-seed{seed}-{interpolation}.npz")
          if cache_dir else None)
  key = np.array([ROTATED_MNIST_VERSION, seed], np.int64)
  if path and os.path.exists(path):
    try:
      with np.load(path) as z:
        if np.array_equal(z["key"], key):
          return tuple(Split(z[f"{n}_inputs"], z[f"{n}_labels"], z[f"{n}_angles"])
                       for n in ROTATED_MNIST_SIZES)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
      pass   # unreadable or from another construction: rebuild it below
  if mnist.name != "mnist" or mnist.train.inputs.shape != (60_000, 28, 28, 1):
    raise DataError(f"rotated_mnist builds from the full MNIST (60,000 training digits), got "
                    f"{mnist.name} with {mnist.train.inputs.shape[0]:,}")
  rng = np.random.default_rng(seed)
  splits = []
  for name, idx in rotated_mnist_indices(rng).items():
    images, labels = mnist.train.inputs[idx], mnist.train.labels[idx]
    if name == "test":
      images = np.concatenate([mnist.test.inputs, images])
      labels = np.concatenate([mnist.test.labels, labels])
    angles = rng.uniform(0.0, 2 * np.pi, len(labels)).astype(np.float32)
    turned = actions_lib.turn_images(to_float(images), angles, interpolation, mask=False)
    turned = np.clip(np.round(turned * 255.0), 0, 255).astype(np.uint8)
    splits.append(Split(turned, labels.astype(np.int32), angles))
  if path:
    os.makedirs(cache_dir, exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez(tmp, key=key, **{f"{n}_{f}": getattr(sp, f) for n, sp in zip(ROTATED_MNIST_SIZES, splits)
                              for f in ("inputs", "labels", "angles")})
    os.replace(tmp, path)
  return tuple(splits)


def rotated_mnist_indices(rng: np.random.Generator) -> dict[str, np.ndarray]:
  """Which of MNIST's 60,000 training digits go to MNIST-rot's train, validation and test
  splits (the test split also takes all 10,000 MNIST test digits): one permutation, cut."""
  order = rng.permutation(60_000)
  n_tr, n_va = ROTATED_MNIST_SIZES["train"], ROTATED_MNIST_SIZES["validation"]
  n_extra = ROTATED_MNIST_SIZES["test"] - 10_000
  return {"train": order[:n_tr], "validation": order[n_tr:n_tr + n_va],
          "test": order[n_tr + n_va:n_tr + n_va + n_extra]}


def point_sets(seed: int, n_train: int = 20000, n_test: int = 5000, n_points: int = 4,
               radius: float = 1.0) -> Dataset:
  """A set-structured task: ``n_points`` points in the plane, ``[N, n_points, 2]``.

  The class is how many points lie within ``radius`` of the origin (0 .. n_points), a
  property of the set; the canonical ("upright") order lists the points by increasing x,
  so a permutation of the points is the analogue of a rotated digit.
  """
  rng = np.random.default_rng(seed)

  def split(n):
    pts = rng.uniform(-1.6, 1.6, size=(n, n_points, 2)).astype(np.float32)
    pts = np.take_along_axis(pts, np.argsort(pts[..., 0], axis=1)[..., None], axis=1)
    labels = (np.linalg.norm(pts, axis=-1) < radius).sum(-1).astype(np.int32)
    return Split(pts, labels)

  return Dataset(f"point_sets{n_points}", split(n_train), split(n_test),
                 point_set_classes(n_points))


def point_set_classes(n_points: int) -> int:
  """Classes of :func:`point_sets`: 0 .. n_points points inside the disc."""
  return n_points + 1


def transform_randomly(key: jax.Array, images, action: actions_lib.Action):
  """Each image moved by its own uniformly drawn group element.

  Returns ``(g . images, g)`` with ``g: int32 [N]``.
  """
  images = jnp.asarray(images)
  action.validate(images)
  g = jax.random.randint(key, (images.shape[0],), 0, action.group.order, dtype=jnp.int32)
  moved = jax.vmap(action.apply)(g, images)
  return moved, g
