r"""Equivariant or invariant? Measured layer by layer on real MNIST test images.

    python -m experiments.equivariance_report --workdir=runs/report [--train_steps=300]

Four models, each trained briefly on upright digits (``--train_steps``; 0 = random
weights): a plain CNN without pooling, the same CNN with 2x2 max pooling, the
C4-equivarified CNN (the paper's stacking) and the same network with G-CNN hidden layers
(``hidden="gcnn"``: every slot's map in the image's frame, kernels turned). For shifts by
1-4 pixels, quarter and half turns and a left-right flip, every layer's equivariance and
invariance errors (eqnn/report.py). Writes
``report.md``, ``report.json`` and ``report.png`` (error against shift size and layer).

Off the pixel grid (:mod:`experiments.off_grid_report`): the C8 and C16 networks, whose input lift resamples, on
the same digits: each layer's equivariance error for every group element (exact on the
quarter turns, measured elsewhere), the invariant readout's change and the predicted class's
agreement under turns by every multiple of 5 degrees (bicubic, disk-masked), and how far
bilinear and bicubic resampling are from a group action. Writes ``report_off_grid.json`` and
``report_angles.png``; the tables go into ``report.md``.

Expected actions: a spatial feature map of total stride s moves by k/s pixels under a
shift by k (rounded when s does not divide k, which is where pooling stops being exactly
equivariant; in the equivariant network block g moves along the direction turned by g^-1), and
is compared away from a border band (``borders excluded``) where the zero padding and the
shift differ; a quarter turn turns a plain CNN's maps (they do not
follow: neither equivariant nor invariant) and shifts the equivariant network's channel blocks
(exact); flat features and the invariant readout are expected not to move. The G-CNN
network's layers before its last conv keep every slot in the image's frame: a shift moves
every block the same way, and a quarter turn turns every block's map and shifts the blocks
(:class:`eqnn.actions.TurnedBlocks`); its last conv is turned into each slot's own frame
(``ToOwnFrames``), from where on it is read like the stacked network's.
"""

from __future__ import annotations

import json
import math
import os

from absl import app, flags

from experiments import off_grid_report, report_models
from experiments.report_models import make_features, network_order, train_briefly

FLAGS = flags.FLAGS


def _define_flags():
  """The command's flags, defined only when it runs as a program (tests import the module)."""
  flags.DEFINE_string("workdir", None, "Where report.md, report.json and report.png go.")
  flags.DEFINE_string("data_dir", "../shared/data/mnist", "Folder with the MNIST IDX files.")
  flags.DEFINE_integer("train_steps", 300, "Adam steps on upright digits per model (0: untrained).")
  flags.DEFINE_integer("images", 256, "Test images to measure on.")
  flags.DEFINE_integer("seed", 0, "Seed for initialisation and batch order.")
  flags.mark_flags_as_required(["workdir"])


SHIFTS = (1, 2, 3, 4)
# How each model's features move: "plain", "stacked" (the paper's: G moves channel blocks,
# each in its own frame) or "gcnn" (image-frame blocks up to the last conv).
KINDS = ("plain", "stacked", "gcnn")


def shift(x, k, axis):
  """Shift by k pixels along ``axis`` (positive: towards higher indices), zero-filled."""
  import jax.numpy as jnp
  if k == 0:
    return x
  pad = [(0, 0)] * x.ndim
  pad[axis] = (k, 0) if k > 0 else (0, -k)
  y = jnp.pad(x, pad)
  idx = [slice(None)] * x.ndim
  idx[axis] = slice(0, x.shape[axis]) if k > 0 else slice(-k, None)
  return y[tuple(idx)]


def build_models():
  from eqnn import actions, models
  c4 = actions.rotations()
  return {
      "plain CNN": (models.PlainCNN((16, 32, 32), (1, 1, 1), (128,)), "plain"),
      "plain CNN + pooling": (models.PlainCNN((16, 32, 32), (2, 2, 1), (128,)), "plain"),
      "equivarified CNN (C4)": (models.EquivariantCNN(c4, (16, 32, 32), (2, 2, 1), (128,)),
                                "stacked"),
      "G-CNN hidden layers (C4)": (models.EquivariantCNN(c4, (16, 32, 32), (2, 2, 1), (128,),
                                                         hidden="gcnn"), "gcnn"),
  }


def transforms(kind, model=None):
  import jax.numpy as jnp
  from eqnn import actions, lift, ops, report
  if kind not in KINDS:
    raise ValueError(f"kind {kind!r}: one of {KINDS}")
  equivariant = kind != "plain"
  c4 = actions.rotations()
  if kind == "gcnn" and (model is None or model.hidden != "gcnn"):
    raise ValueError("kind 'gcnn' needs its G-CNN model, to know where its image frame ends")
  image_frame = lambda layer: kind == "gcnn" and report_models.image_frame(model, layer)
  blocks = ops.block_action(c4.group)       # [B, ..., |G|, C]: the group axis shifts
  turned_blocks = actions.TurnedBlocks(c4)  # G-CNN maps: every block turns, blocks shift

  def spatial(f):
    return f.ndim >= 4                      # [B, H, W, C], equivariant [B, H, W, |G|, C]

  def stride(f):
    return 28 // f.shape[1]

  def shift_expected(k):
    def expected(name, f):
      if not spatial(f):
        return f                                # flat features: "does not move" is the question
      d = round(k / stride(f))
      move = lambda b: shift(b, d, axis=2)
      if not equivariant or image_frame(name):
        return move(f)                          # every block moves with the image
      # The lift's slot g holds conv(g^-1 . x): the shift reaches it as g^-1 t g (block g
      # moves along the direction turned by g^-1).
      return lift.conjugated(c4, move, f, axis=-2)
    return expected

  def shift_crop(k):
    def crop(name, f):
      if not spatial(f):
        return f
      # The shift's own band plus the zero padding's reach through three 3x3 convs.
      s = stride(f)
      b = min(math.ceil(k / s) + math.ceil(3 / s), (f.shape[1] - 1) // 2)
      return f[:, b:f.shape[1] - b, b:f.shape[2] - b, :]
    return crop

  def rot_expected(j):
    def expected(name, f):
      if name.startswith("readout"):
        return f
      if image_frame(name):
        return turned_blocks.apply(j, f)        # G-CNN: maps turn, the group axis shifts
      if equivariant:
        return blocks(j, f)                     # the lift: the group axis shifts, pixels stay
      return jnp.rot90(f, j, axes=(1, 2)) if spatial(f) else None
    return expected

  def flip_expected(name, f):
    if name.startswith("readout"):
      return f                                  # invariance is the question
    if equivariant or not spatial(f):
      return None                               # flips are not in C4; flat maps have no flip
    return jnp.flip(f, axis=2)

  ts = [report.Transform("shift", k, (lambda k: lambda x: shift(x, k, axis=2))(k),
                         shift_expected(k), shift_crop(k)) for k in SHIFTS]
  ts += [report.Transform("rotate", j, (lambda j: lambda x: jnp.rot90(x, j, axes=(1, 2)))(j),
                          rot_expected(j)) for j in (1, 2)]
  ts += [report.Transform("flip", 1, lambda x: jnp.flip(x, axis=2), flip_expected)]
  return ts


def plot(path, rows_by_model):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, len(rows_by_model), figsize=(5 * len(rows_by_model), 4),
                           sharey=True, squeeze=False)
  for ax, (model, rows) in zip(axes[0], rows_by_model.items()):
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    for i, layer in enumerate(layers):
      pts = sorted((r["size"], r["equivariance"], r["invariance"]) for r in rows
                   if r["layer"] == layer and r["transform"] == "shift")
      c = plt.cm.viridis(i / max(len(layers) - 1, 1))
      ax.plot([p[0] for p in pts], [max(p[1], 1e-8) for p in pts], "-o", color=c, label=layer)
      ax.plot([p[0] for p in pts], [max(p[2], 1e-8) for p in pts], "--", color=c)
    ax.set_yscale("log")
    ax.set_xlabel("shift (pixels)")
    ax.set_title(model, fontsize=10)
    ax.legend(fontsize=7)
  axes[0, 0].set_ylabel("relative error: equivariance (solid), invariance (dashed)")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def run(workdir, data_dir, train_steps, n_images, seed,
        angles=off_grid_report.OFF_GRID_ANGLES):
  import jax.numpy as jnp
  from eqnn import data, report
  ds = data.load_mnist(data_dir)
  train_x = jnp.asarray(data.to_float(ds.train.inputs))
  train_y = jnp.asarray(ds.train.labels)
  x = jnp.asarray(data.to_float(ds.test.inputs[:n_images]))
  rows_by_model = {}
  for name, (model, kind) in build_models().items():
    equivariant = kind != "plain"
    params = train_briefly(model, equivariant, train_x, train_y, train_steps, seed)
    features = make_features(model, params, equivariant)
    rows = report.layer_errors(features, x, transforms(kind, model))
    rows_by_model[name] = sorted(rows, key=lambda r: network_order(r["layer"]))
  os.makedirs(workdir, exist_ok=True)
  table = report.markdown_table(rows_by_model)
  header = (f"Relative errors `equivariance / invariance` on {n_images} MNIST test images, "
            f"models trained {train_steps} steps on upright digits; shifts compared with "
            f"borders excluded. `python -m experiments.equivariance_report`.\n\n")
  off = off_grid_report.off_grid(x, train_x, train_y, train_steps, seed, angles)
  off_table = off_grid_report.off_grid_tables(off)
  with open(os.path.join(workdir, "report.md"), "w") as f:
    f.write(header + table + "\n\n## Off the pixel grid: C8 and C16\n\n" + off_table + "\n")
  with open(os.path.join(workdir, "report.json"), "w") as f:
    json.dump(rows_by_model, f, indent=1)
  with open(os.path.join(workdir, "report_off_grid.json"), "w") as f:
    json.dump(off, f, indent=1)
  plot(os.path.join(workdir, "report.png"), rows_by_model)
  off_grid_report.plot_angles(os.path.join(workdir, "report_angles.png"), off)
  return rows_by_model, table + "\n\n" + off_table


def main(argv):
  del argv
  from experiments import logs
  logs.quiet()
  _, table = run(FLAGS.workdir, FLAGS.data_dir, FLAGS.train_steps, FLAGS.images, FLAGS.seed)
  print(table)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
