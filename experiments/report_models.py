"""What both reports share (:mod:`experiments.equivariance_report` and
:mod:`experiments.off_grid_report`): brief training on upright digits, every layer's features,
and the layers' order in a network."""

from __future__ import annotations


def train_briefly(model, equivariant, images, labels, steps, seed):
  import jax
  import optax
  from flax.training import train_state
  from eqnn import readouts
  from experiments import steps as steps_lib
  key = jax.random.key(seed)
  params = jax.jit(model.init)(key, images[:1])     # one program, not one per op
  state = train_state.TrainState.create(apply_fn=model.apply, params=params,
                                        tx=optax.adam(1e-3))
  flat = readouts.joint_logits if equivariant else (lambda logits: logits)
  step = jax.jit(lambda s, x, y: steps_lib.update(s, x, y, flat=flat))
  rng = jax.random.key(seed + 1)
  for i in range(steps):
    idx = jax.random.randint(jax.random.fold_in(rng, i), (128,), 0, images.shape[0])
    y = readouts.joint_labels(labels[idx], 0, 10) if equivariant else labels[idx]
    state, _ = step(state, images[idx], y)
  return state.params


def make_features(model, params, equivariant):
  import jax
  from eqnn import readouts

  @jax.jit
  def features(params, x):      # params an argument: not constants folded into the program
    out, inter = model.apply(params, x, mutable=["intermediates"])
    feats = {k: v[0] for k, v in inter["intermediates"].items()}
    feats["logits"] = out
    if equivariant:
      feats["readout (logsumexp over G)"] = readouts.class_logits(out)
    return feats

  return lambda x: features(params, x)


def image_frame(model, layer: str) -> bool:
  """Whether a layer's slots hold maps in the image's frame: a G-CNN network's
  (``hidden="gcnn"``) convs and pools before its last conv, which is turned into each slot's
  own frame before it is recorded. Elsewhere G only moves slots (the paper's stacking)."""
  return (getattr(model, "hidden", "stacked") == "gcnn" and layer.startswith(("conv", "pool"))
          and int(layer[4:]) < len(model.conv_features))


def expected_action(model, layer: str):
  """How G acts on a layer's features of an equivariant network: turned blocks (every map
  turns, the slots move) in a G-CNN's image frame, the slots alone elsewhere."""
  from eqnn import actions, ops
  if image_frame(model, layer):
    return actions.TurnedBlocks(model.action)
  return ops.block_action(model.action.group)


def network_order(layer: str):
  """conv1, pool1, conv2, ..., dense1, logits, readout (jit returns dicts sorted by key)."""
  if layer.startswith(("conv", "pool")):
    return (0, int(layer[4:]), layer.startswith("pool"))
  return (1 if layer.startswith("dense") else 2 if layer == "logits" else 3, 0, False)
