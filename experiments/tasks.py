"""The task registry: which group acts on the data, which model, and the sizes they imply.

A :class:`Task` is everything static about a run. The input shape and the number of classes
come from the dataset's entry here (or from tfds' metadata), never from the model code.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from eqnn import actions, data, groups, models, readouts

# Rotation groups by name, "C<n>" and "D<n>" for any n >= 1: turns by 360/n degrees (and
# mirrors for D_n), exact pixel permutations for C1, C2, C4 and D4, resampled with the
# config's ``interpolation`` (approximate; quarter turns exact where 4 divides n) otherwise.
_TURNS = re.compile(r"([CD])([1-9][0-9]*)$")
# The other groups, by name.
GROUP_ACTIONS: dict[str, Callable[[], actions.Action]] = {
    # Cyclic shifts of 28 x 28 images by multiples of 7 pixels: C4 x C4 on the torus.
    "T4x4": lambda: actions.translations(28, 28, 7),
    # The 24 permutations of the 4 points of a set [4, 2].
    "S4": lambda: actions.permute_points(*groups.symmetric(4), axis=-2),
}
# "equivariant": the config's network lifted over the group (EquivariantCNN / EquivariantMLP);
# "plain": the same network, not lifted (PlainCNN / MLP).
MODELS = ("equivariant", "plain")
ARCHITECTURES = ("cnn", "mlp")
POINTS_PER_SET = 4


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """What a dataset's examples look like, known without loading it."""

  input_shape: tuple[int, ...]
  num_classes: int


def data_spec(c: ml_collections.ConfigDict) -> DataSpec:
  """The input shape and class count of ``config.dataset``."""
  if c.dataset in ("mnist", "rotated_mnist"):
    return DataSpec((28, 28, 1), 10)
  if c.dataset == "point_sets":
    return DataSpec((POINTS_PER_SET, 2), data.point_set_classes(POINTS_PER_SET))
  info = data.tfds_info(c.dataset, c.tfds_data_dir or None)
  return DataSpec(info.input_shape, info.num_classes)


@dataclasses.dataclass(frozen=True)
class Task:
  """The model, the group action on its inputs, and what the labels mean.

  An equivariant model returns ``[B, |G|, K]`` and trains on joint labels (:mod:`eqnn.readouts`);
  a plain one returns ``[B, K]`` and trains on class labels.
  """

  model: nn.Module
  action: actions.Action
  equivariant: bool
  num_classes: int
  input_shape: tuple[int, ...]
  labels: str = "joint"         # "joint": (element, class) labels; "class": class labels only

  @property
  def group_order(self) -> int:
    return self.action.group.order if self.equivariant else 1

  @property
  def joint(self) -> bool:
    """Whether training compares the joint logits with joint labels (else class logits and
    class labels: the invariant readout for an equivariant model)."""
    return self.equivariant and self.labels == "joint"

  def targets(self, classes, elements):
    """What the loss compares the flat logits with: joint labels, or class labels."""
    return readouts.joint_labels(classes, elements, self.num_classes) if self.joint else classes

  def flat_logits(self, logits):
    """What the loss reads: ``[B, |G| * K]`` joint logits, or ``[B, K]`` class logits (the
    invariant readout of an equivariant model trained on class labels, or a plain model's)."""
    if not self.equivariant:
      return logits
    return readouts.joint_logits(logits) if self.joint else readouts.class_logits(logits)

  def nearest_elements(self, angles):
    """The rotation group element nearest each angle (radians): ``round(n angle / 2 pi) mod n``
    for C_n and D_n (their rotation part); joint labels for continuously rotated inputs."""
    name = self.action.group.name
    n = self.action.group.order // (2 if name.startswith("D") else 1)
    return (jnp.round(angles * n / (2 * jnp.pi)).astype(jnp.int32)) % n


def known_group(name: str) -> bool:
  """Whether ``name`` is ``C<n>``, ``D<n>`` or a group of :data:`GROUP_ACTIONS`."""
  return isinstance(name, str) and (name in GROUP_ACTIONS or bool(_TURNS.match(name)))


def action_by_name(name: str, interpolation: str = "bilinear") -> actions.Action:
  """The action of the group called ``name`` (see :data:`GROUP_ACTIONS` and ``C<n>``/``D<n>``)."""
  if name in GROUP_ACTIONS:
    return GROUP_ACTIONS[name]()
  turns = _TURNS.match(name) if isinstance(name, str) else None
  if not turns:
    raise ValueError(f"unknown group {name!r}: choose C<n>, D<n> or one of "
                     f"{sorted(GROUP_ACTIONS)}")
  n = int(turns.group(2))
  if turns.group(1) == "C":
    return actions.rotations(n, interpolation)
  return actions.rotations_reflections(n, interpolation)


def group_action(c: ml_collections.ConfigDict) -> actions.Action:
  """The config's group action (resampled turns with ``c.interpolation``)."""
  return action_by_name(c.group, c.get("interpolation", "bilinear"))


def fixed_conv_forms(conv_form: str, kernel_gradient: str) -> tuple[str, str]:
  """The ``(conv_form, kernel_gradient)`` a config's convs run in where nothing is measured:
  its own, or for ``conv_form = "measured"`` the library's ``("auto", "auto")`` (the same
  function, to float rounding; the runner measures micro-batches in it)."""
  return ("auto", "auto") if conv_form == "measured" else (conv_form, kernel_gradient)


def build_task(c: ml_collections.ConfigDict, conv_forms: tuple[str, str] | None = None) -> Task:
  """The config's task. ``conv_forms``: the convs' ``(conv_form, kernel_gradient)`` where the
  run decided them (``conv_form = "measured"``, :func:`experiments.budget.conv_forms`); None:
  :func:`fixed_conv_forms` of the config's (what evaluating, reporting or exporting a saved
  run needs)."""
  if conv_forms is None:
    conv_forms = fixed_conv_forms(c.get("conv_form", "auto"), c.get("kernel_gradient", "auto"))
  spec = data_spec(c)
  action = group_action(c)
  equivariant = c.model == "equivariant"
  k = spec.num_classes
  if c.architecture == "mlp":
    kw = dict(features=tuple(c.mlp_features), num_classes=k)
    model = models.EquivariantMLP(action, **kw) if equivariant else models.MLP(**kw)
  else:
    kw = dict(conv_features=tuple(c.conv_features), pools=tuple(c.pools),
              dense_features=tuple(c.dense_features), num_classes=k,
              kernel_size=tuple(c.get("kernel_sizes", ())) or c.kernel_size,
              norm=c.get("norm", False), dropout=c.get("dropout", 0.0))
    model = (models.EquivariantCNN(action, impl=c.impl, head_pool=c.get("head_pool", "none"),
                                   hidden=c.get("hidden", "stacked"),
                                   conv_form=conv_forms[0], kernel_gradient=conv_forms[1],
                                   **kw)
             if equivariant else models.PlainCNN(**kw))
  return Task(model, action, equivariant, k, spec.input_shape, c.get("labels", "joint"))
