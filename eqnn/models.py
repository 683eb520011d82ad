"""Example models (Flax linen): the paper's lifted CNN, its plain twin, and MLPs.

Lifted models declare their actions like the layers (:mod:`eqnn.layers`) and return
``[B, |G|, num_classes]``: slot ``[g, m]`` means "class m seen at group element g"
(:mod:`eqnn.readouts` turns it into joint, class and element predictions).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from eqnn import actions as actions_lib
from eqnn import ops, spatial
from eqnn.layers import (Equivarified, GCNNConv, GCNNLiftConv, GroupBatchNorm, GroupConv,
                         GroupDense, GroupDropout, LiftConv, ToOwnFrames, relu_pool)


HEAD_POOLS = ("none", "max", "mean")
# How the convs see the group: "stacked" (the paper's: the input lift turns the image, each
# slot stays in its own frame and hidden convs mix whole slots) or "gcnn" (Cohen & Welling:
# every slot in the image's frame, kernels turned; converted to own frames before the head).
HIDDEN = ("stacked", "gcnn")
# What EquivariantCNN computes when called (its ``stage``): all of it, its convs up to the
# head's input, or its head on such an input.
STAGES = ("all", "features", "head")


def kernel_sizes(kernel_size: int | Sequence[int], num_convs: int) -> tuple[int, ...]:
  """One spatial kernel size per conv: an int for all, or one per conv (e.g. a larger first
  kernel, as escnn's MNIST-rot networks use)."""
  if isinstance(kernel_size, int):
    return (kernel_size,) * num_convs
  sizes = tuple(kernel_size)
  if len(sizes) != num_convs:
    raise ValueError(f"kernel_size {sizes}: need one size per conv ({num_convs})")
  return sizes


class EquivariantCNN(ops.LiftsInput, nn.Module):
  """The paper's Figure 3 network, for any group acting on square images.

  ``LiftConv`` (conv1 on the |G| transformed copies), then ``GroupConv`` layers on the
  stack, then the equivarified head ``dense . pool . conv``: a :class:`GroupDense` whose |G|
  outputs go through the rest of the MLP with shared weights (the lift of the composite
  head). ``[B, H, W, C] -> [B, |G|, num_classes]``.

  Attributes:
    action: how G acts on input images.
    conv_features: filters per group element of each conv (the first is the input lift).
    pools: max-pool window after each conv (1: none); pooling commutes with the group.
    dense_features: hidden widths of the head (the first is lifted over the stack).
    num_classes: classes per group element.
    kernel_size: spatial size of every conv's kernel, or one per conv.
    norm: batch-normalise each conv's output before its ReLU (:class:`GroupBatchNorm`:
      statistics and affine parameters per channel shared over the |G| slots, so exactly
      equivariant in training and evaluation). Adds a ``batch_stats`` collection.
    dropout: rate of :class:`GroupDropout` (whole hidden units of the head, one mask shared
      over the |G| slots) before the last dense layer when ``train``; evaluation is exact.
    head_pool: "max" or "mean" pools the last conv's map over all its positions before the
      head (per channel and slot, so it commutes with G): the lifted dense layer then reads
      |G| C numbers instead of H W |G| C. "none" (the paper's) keeps the positions.
    hidden: "stacked" (the paper's Figure 3) or "gcnn": the convs as G-CNN layers
      (:class:`GCNNLiftConv`, :class:`GCNNConv`: kernels turned, every slot's map in the
      image's frame, so features of all slots at a pixel describe the same place), the last
      conv's output turned into each slot's own frame (:class:`ToOwnFrames`) before its
      pooling and the head. The same parameters; exactly equivariant under quarter turns and
      mirrors if every kernel is odd and every pooling before the last conv tiles its map
      (checked), approximately under resampled turns. Ignores ``impl`` for the convs.
    conv_form, kernel_gradient: how every 2-D conv computes itself and its kernel's gradient
      (:func:`eqnn.spatial.conv`'s ``form`` and ``weight_grad``; "auto" picks per conv), set
      while the network is traced (:func:`eqnn.spatial.forms`); None (the default) keeps the
      surrounding block's (:func:`eqnn.spatial.conv_forms`), "auto" outside one. The same
      function in every form, to float rounding. "xla" makes the first block XLA's conv too
      (not the fused "taps" form "auto" takes on CPU).
  """

  action: actions_lib.Action
  conv_features: Sequence[int] = (16, 32, 32)
  pools: Sequence[int] = (2, 2, 1)
  dense_features: Sequence[int] = (128,)
  num_classes: int = 10
  kernel_size: int | Sequence[int] = 3
  impl: str = "auto"
  dtype: Any = jnp.float32
  norm: bool = False
  dropout: float = 0.0
  head_pool: str = "none"
  hidden: str = "stacked"
  conv_form: str | None = None
  kernel_gradient: str | None = None

  @nn.compact
  def __call__(self, x, train: bool = False, stage: str = "all"):
    """``stage``: "all" the network, ``[B, H, W, C] -> [B, |G|, num_classes]``; "features"
    its convs alone, up to the head's input (``[B, h, w, |G|, C]``); "head" the head alone on
    such an input. The two stages compose to "all" with the same parameters (the train step
    runs the convs in slices of the batch and the head once on all of it,
    :func:`experiments.steps.update`)."""
    if stage not in STAGES:
      raise ValueError(f"stage {stage!r}: choose one of {STAGES}")
    with spatial.forms(self.conv_form, self.kernel_gradient):
      if stage == "head":
        return self._head(x, train)
      y = self._features(x, train)
      return y if stage == "features" else self._head(y, train)

  def _features(self, x, train):
    if self.head_pool not in HEAD_POOLS:
      raise ValueError(f"head_pool {self.head_pool!r}: choose one of {HEAD_POOLS}")
    if self.hidden not in HIDDEN:
      raise ValueError(f"hidden {self.hidden!r}: choose one of {HIDDEN}")
    if len(self.pools) != len(self.conv_features):
      raise ValueError(f"need one pool window per conv: {len(self.pools)} pools for "
                       f"{len(self.conv_features)} convs")
    group = self.action.group
    ks = kernel_sizes(self.kernel_size, len(self.conv_features))
    normed = lambda y: GroupBatchNorm(group)(y, train) if self.norm else y
    gcnn, last = self.hidden == "gcnn", len(self.conv_features)
    # Unfused too where the equivariance report asks for the records of the first block's
    # full-resolution map.
    fused = (first_block_fused(self.norm, self.hidden, last)
             and not self.is_mutable_collection("intermediates"))
    first = self.pools[0] if fused else 0
    if gcnn:
      check_gcnn(ks, self.pools, x.shape[-3])
      y = GCNNLiftConv(self.action, self.conv_features[0], ks[0], dtype=self.dtype,
                       use_bias=not self.norm, relu_pool=first)(x)
    else:
      y = LiftConv(self.action, self.conv_features[0], ks[0], impl=self.impl,
                   dtype=self.dtype, use_bias=not self.norm, relu_pool=first)(x)
    for i, (feats, pool, k) in enumerate(zip(self.conv_features, self.pools, ks), 1):
      if i > 1 and gcnn:
        y = GCNNConv(self.action, feats, k, dtype=self.dtype, use_bias=not self.norm)(y)
      elif i > 1:
        y = GroupConv(group, feats, k, impl=self.impl, dtype=self.dtype,
                      use_bias=not self.norm)(y)
      if gcnn and i == last:
        y = ToOwnFrames(self.action)(y)      # the paper's head reads slots in their own frames
      if i > 1 or not fused:
        y = relu_pool(self, normed(y), pool, i)
    if self.head_pool != "none":                                         # [B, 1, 1, G, C]
      reduce = jnp.max if self.head_pool == "max" else jnp.mean
      y = reduce(y, axis=(1, 2), keepdims=True)
    return y

  def _head(self, y, train):
    # Its submodules are the first of their kinds either way, so they keep their names
    # (GroupDense_0, Dense_0, ...) whether the head runs alone or after the convs.
    group = self.action.group
    widths = list(self.dense_features) + [self.num_classes]
    h = GroupDense(group, widths[0], impl=self.impl, dtype=self.dtype)(y)   # [B, G, w0]
    for i, w in enumerate(widths[1:], 1):
      h = nn.relu(h)
      self.sow("intermediates", f"dense{i}", h)
      if self.dropout and i == len(widths) - 1:
        h = GroupDropout(group, self.dropout)(h, deterministic=not train)
      h = nn.Dense(w, dtype=self.dtype)(h)                                   # shared over G
    return h.astype(jnp.float32)


def first_block_fused(norm: bool, hidden: str, convs: int) -> bool:
  """Whether :class:`EquivariantCNN` (linen and NNX) runs its first block ``max_pool . relu .
  lift`` as one op (:func:`eqnn.spatial.conv_relu_pool`): not where a batch norm sits inside
  it, nor where a G-CNN network's only conv turns into own frames before its pool."""
  return not (norm or (hidden == "gcnn" and convs == 1))


def check_gcnn(kernel_sizes_, pools=(), size=None):
  """G-CNN layers commute with turns of their maps only if every kernel is odd (SAME) and
  every pooling before the last conv tiles its map (a window left over at one edge moves
  under a turn); the pools are checked where the input ``size`` is known."""
  if any(k % 2 == 0 for k in kernel_sizes_):
    raise ValueError(f"hidden='gcnn' needs odd kernels (a turn moves the extra row of an even "
                     f"SAME kernel), got kernel sizes {tuple(kernel_sizes_)}")
  for i, pool in enumerate(pools[:-1] if size is not None else (), 1):
    if size % pool:
      raise ValueError(f"hidden='gcnn': pooling {pool} x {pool} after conv {i} does not tile "
                       f"its {size} x {size} map, so it would not commute with turns; choose "
                       f"pools that divide the map sizes before the last conv")
    size //= pool


class PlainCNN(nn.Module):
  """The same network before equivarification: ``[B, H, W, C] -> [B, num_classes]``."""

  conv_features: Sequence[int] = (16, 32, 32)
  pools: Sequence[int] = (2, 2, 1)
  dense_features: Sequence[int] = (128,)
  num_classes: int = 10
  kernel_size: int | Sequence[int] = 3   # for every conv, or one per conv
  dtype: Any = jnp.float32
  norm: bool = False              # batch norm before each ReLU, as in EquivariantCNN
  dropout: float = 0.0            # before the last dense layer when training

  @nn.compact
  def __call__(self, x, train: bool = False):
    ops.require_float(x, "PlainCNN")
    y = x.astype(self.dtype)
    ks = kernel_sizes(self.kernel_size, len(self.conv_features))
    for i, (feats, pool, k) in enumerate(zip(self.conv_features, self.pools, ks), 1):
      y = nn.Conv(feats, (k, k), dtype=self.dtype,
                  use_bias=not self.norm)(y)
      if self.norm:
        y = nn.BatchNorm(use_running_average=not train)(y)
      y = relu_pool(self, y, pool, i)
    y = y.reshape(y.shape[0], -1)
    for i, w in enumerate(self.dense_features, 1):
      y = nn.relu(nn.Dense(w, dtype=self.dtype)(y))
      self.sow("intermediates", f"dense{i}", y)
    if self.dropout:
      y = nn.Dropout(self.dropout, deterministic=not train)(y)
    return nn.Dense(self.num_classes, dtype=self.dtype)(y).astype(jnp.float32)


class MLP(nn.Module):
  """A plain MLP on the flattened input: ``[B, ...] -> [B, num_classes]``."""

  features: Sequence[int] = (128, 128)
  num_classes: int = 10

  @nn.compact
  def __call__(self, x):
    ops.require_float(x, "MLP")
    y = x.reshape(x.shape[0], -1)
    for w in self.features:
      y = nn.relu(nn.Dense(w)(y))
    return nn.Dense(self.num_classes)(y)


class EquivariantMLP(ops.LiftsInput, nn.Module):
  """An MLP equivarified over ``action`` (any group, e.g. S_n permuting set elements):
  ``[B, ...] -> [B, |G|, num_classes]``, slot ``[g, m]`` = ``MLP(g^-1 . x)[m]``."""

  action: actions_lib.Action
  features: Sequence[int] = (128, 128)
  num_classes: int = 10

  @nn.compact
  def __call__(self, x):
    out = Equivarified(MLP(self.features, self.num_classes), self.action)(x)   # [G, B, K]
    return jnp.moveaxis(out, 0, 1)
