"""The equivariance report off the pixel grid: C8 and C16, whose input lift resamples.

Part of ``make report`` (:mod:`experiments.equivariance_report` runs it on the same digits
and models' training): each layer's equivariance error for every group element (exact on
the quarter turns, measured elsewhere), the invariant readout's change and the predicted
class's agreement under turns by every multiple of 5 degrees (bicubic, disk-masked), and how
far bilinear and bicubic resampling are from a group action.
"""

from __future__ import annotations

import numpy as np

from experiments.report_models import expected_action, make_features, network_order, train_briefly

OFF_GRID_ANGLES = tuple(range(0, 360, 5))


GCNN_C16 = "C16 G-CNN"


def off_grid_models():
  """C4, C8 and C16 networks of the paper's stacking, and C16 with G-CNN hidden layers (the
  MNIST-rot network's kind: kernels turned by resampling, image-frame maps)."""
  from eqnn import actions, models
  nets = {f"C{n}": models.EquivariantCNN(actions.rotations(n), (16, 32, 32), (2, 2, 1), (128,))
          for n in (4, 8, 16)}
  nets[GCNN_C16] = models.EquivariantCNN(actions.rotations(16), (16, 32, 32), (2, 2, 1), (128,),
                                         hidden="gcnn")
  return nets


def group_order(name: str) -> int:
  """n of a network's name, "C16" or "C16 G-CNN"."""
  return int(name.split()[0][1:])


def turn_degrees(x, degrees):
  """Digits ``[B, H, W, 1]`` turned by ``degrees`` counter-clockwise: exactly (rot90) at
  multiples of 90, else bicubic resampling masked to the inscribed disk."""
  import jax.numpy as jnp
  from eqnn import actions
  if degrees % 90 == 0:
    return jnp.rot90(x, degrees // 90, axes=(1, 2))
  angles = np.full(x.shape[0], np.deg2rad(degrees))
  return jnp.asarray(actions.turn_images(np.asarray(x), angles, "bicubic"))


def resampling_errors(x) -> list[dict]:
  """How far each resampled C_n is from a group action on real digits: the mean over pairs
  (g, h) of ``||(gh).x - g.(h.x)|| / ||x||``, its worst pair, and turning by g then g^-1."""
  import jax
  from eqnn import actions
  rows = []
  for n in (8, 16):
    for interp in actions.INTERPOLATIONS:
      act = actions.rotations(n, interp)
      orbit = jax.jit(act.orbit)(x)                                # [g, B, ...]
      both = jax.jit(jax.vmap(act.orbit))(orbit)                   # [h, g, ...] = g.(h.x)
      scale = float(np.linalg.norm(np.asarray(x)))
      table = act.group.table
      norm = lambda d: np.sqrt(np.sum(np.square(np.asarray(d, np.float64)), axis=(2, 3, 4, 5)))
      # pair[h, g] = ||g.(h.x) - (gh).x||: every pair in one gather, not one op per pair.
      pair = norm(both - orbit[table.T]) / scale
      inv = np.asarray(act.group.inverse)
      back = list(norm((both[np.arange(n), inv] - orbit[0])[None])[0] / scale)
      rows.append({"group": f"C{n}", "interpolation": interp, "mean_pair": float(pair.mean()),
                   "worst_pair": float(pair.max()), "round_trip": float(np.mean(back))})
  return rows


def off_grid(x, train_x, train_y, train_steps, seed, angles=OFF_GRID_ANGLES) -> dict:
  """Per-element, per-layer equivariance of the C8 and C16 networks (and C16 with G-CNN
  layers), and their readouts' invariance under turns by each of ``angles`` (degrees; every
  5 by default; C4 alongside, for the exact case)."""
  import jax
  import jax.numpy as jnp
  out = {"per_element": {}, "angles": {}, "resampling": resampling_errors(x)}
  for name, model in off_grid_models().items():
    params = train_briefly(model, True, train_x, train_y, train_steps, seed)
    features = make_features(model, params, True)
    orbit = jax.jit(model.action.orbit)(x)
    # The digits as the group sees them, e . x (masked to the disk by a resampled action):
    # the stacked lift masks its input itself, a G-CNN lift turns kernels and does not.
    base = features(orbit[0])
    # Slots move (own frames), or maps turn and slots move (a G-CNN's image frame; off the
    # quarter turns that expected turn of a feature map is itself resampled, and a resampled
    # action masks maps to their inscribed disk, its identity too: both sides are compared
    # on the disk there, e . f, which is f for the slot-moving actions).
    acts = {layer: expected_action(model, layer) for layer in base}

    @jax.jit
    def element_errors(g, moved, base):      # g traced: one program for every element
      errs = {}
      for layer, f in base.items():
        if layer.startswith("readout"):
          errs[layer] = jnp.linalg.norm(moved[layer] - f) / jnp.linalg.norm(f)
        else:
          on_disk = lambda v, a=acts[layer]: a.apply(0, v)
          errs[layer] = (jnp.linalg.norm(on_disk(moved[layer]) - acts[layer].apply(g, f))
                         / jnp.linalg.norm(on_disk(f)))
      return errs
    rows = []
    # One element at a time, not one vmap over the orbit: that would hold every layer's
    # features of all the digits for |G| - 1 elements at once (15x the memory for C16).
    for g in range(1, model.action.group.order):
      errs = element_errors(jnp.int32(g), features(orbit[g]), base)
      for layer in base:
        rows.append({"element": g, "degrees": 360 * g / model.action.group.order,
                     "layer": layer, "error": float(errs[layer])})
    out["per_element"][name] = sorted(rows, key=lambda r: (network_order(r["layer"]), r["element"]))
    readout = base["readout (logsumexp over G)"]
    pred = np.asarray(readout.argmax(-1))
    angle_rows = []
    for deg in angles:                         # turns of e . x, so that 0 degrees is the base
      r = features(turn_degrees(orbit[0], deg))["readout (logsumexp over G)"]
      angle_rows.append({"degrees": deg,
                         "invariance": float(jnp.linalg.norm(r - readout) / jnp.linalg.norm(readout)),
                         "agreement": float(np.mean(np.asarray(r.argmax(-1)) == pred))})
    out["angles"][name] = angle_rows
  return out


def off_grid_tables(res: dict) -> str:
  """Markdown: the resampling errors, the per-element table of each network, the angle sweep."""
  fmt = lambda v: f"{v:.2g}" if v >= 1e-3 else f"{v:.0e}"
  lines = ["| group | interpolation | mean over (g, h): \\|(gh).x - g.(h.x)\\| / \\|x\\| | worst pair "
           "| turn by g, then g^-1 |", "| --- | --- | --- | --- | --- |"]
  for r in res["resampling"]:
    lines.append(f"| {r['group']} | {r['interpolation']} | {fmt(r['mean_pair'])} | "
                 f"{fmt(r['worst_pair'])} | {fmt(r['round_trip'])} |")
  for name, rows in res["per_element"].items():
    if name == "C4":
      continue
    elements = sorted({r["element"] for r in rows})
    degs = {r["element"]: r["degrees"] for r in rows}
    lines += ["", f"Equivariance error of each layer of the {name} network under each element "
              f"(degrees):", "",
              "| layer | " + " | ".join(f"{degs[g]:g}" for g in elements) + " |",
              "|" + " --- |" * (len(elements) + 1)]
    for layer in dict.fromkeys(r["layer"] for r in rows):
      cells = [fmt(next(r["error"] for r in rows if r["layer"] == layer and r["element"] == g))
               for g in elements]
      lines.append(f"| {layer} | " + " | ".join(cells) + " |")
  degrees = [r["degrees"] for r in next(iter(res["angles"].values()))]
  n_angles = len(degrees)
  lines += ["", f"Invariant readout under turns by {', '.join(map(str, degrees[:3]))}, ... "
            f"{degrees[-1]} degrees ({n_angles} angles): relative change of the class logits, and the share of digits "
            "whose predicted class stays the same:", "",
            "| network | at 90, 180, 270 (max) | at multiples of 360/n (max) | other angles (mean) "
            f"| other angles (max) | class kept (mean over all {n_angles}) | class kept (worst angle) |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
  for name, rows in res["angles"].items():
    n = group_order(name)
    quarter = [r["invariance"] for r in rows if r["degrees"] % 90 == 0 and r["degrees"]]
    grid = [r["invariance"] for r in rows if (r["degrees"] * n) % 360 == 0 and r["degrees"]]
    other = [r["invariance"] for r in rows if (r["degrees"] * n) % 360 != 0]
    kept = [r["agreement"] for r in rows]
    lines.append(f"| {name} | {fmt(max(quarter))} | {fmt(max(grid))} | {fmt(np.mean(other))} | "
                 f"{fmt(max(other))} | {100 * np.mean(kept):.1f}% | {100 * min(kept):.1f}% |")
  return "\n".join(lines)


def plot_angles(path, res):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
  for name, rows in res["angles"].items():
    d = [r["degrees"] for r in rows]
    axes[0].plot(d, [max(r["invariance"], 1e-8) for r in rows], "-o", ms=3, label=name)
    axes[1].plot(d, [100 * r["agreement"] for r in rows], "-o", ms=3, label=name)
  axes[0].set_yscale("log")
  axes[0].set_ylabel("readout change (relative)")
  axes[1].set_ylabel("predicted class kept (%)")
  for ax in axes:
    ax.set_xlabel("turn (degrees)")
    ax.set_xticks(range(0, 361, 45))
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
