"""Flax linen layers: they own the parameters and call :mod:`eqnn.ops` (the mathematics).

Every lifted layer declares how G acts on its input and its output (``in_action``,
``out_action``), so ``eqnn.testing.assert_equivariant(layer.bind(params), x)`` checks it
with no hand-written mapping. Outputs have one layout, ``[B, ..., |G|, F]`` (the group axis
second to last, :mod:`eqnn.ops`); the generic :class:`Equivarified` keeps the lift's own
``[|G|, ...]`` (it knows nothing of batches).

The NNX counterparts, over the same functions, are in :mod:`eqnn.nnx_modules`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from eqnn import actions as actions_lib
from eqnn import lift as lift_lib
from eqnn import ops
from eqnn.groups import FiniteGroup


class Equivarified(nn.Module):
  """Any linen module ``inner`` lifted over ``action``: ``[B, ...] -> [|G|, B, ...]``, slot g
  holding ``inner(g^-1 . x)`` (the lift's own layout, group axis first).

  * **Parameters** are the plain module's, as they are: the wrapper shares ``inner``'s scope
    (``nn.share_scope``), so ``Equivarified(m, a).apply(m_params, x)[0] == m.apply(m_params, x)``.
  * **Call arguments** pass through: ``apply(v, x, train=True, rngs={"dropout": key})``.
  * **The rule for state**: the |G| copies of the batch are folded into one batch of
    ``|G| * B`` and ``inner`` is called once on it. Batch statistics (BatchNorm) are therefore
    taken over the whole orbit of the batch, which G only permutes: they are G-invariant, so
    the lift stays exactly equivariant in training mode too, and running averages update once
    per call, as the plain module's would on that batch. Dropout draws one mask over the
    folded batch: equivariant in distribution; evaluation (no dropout) is exact.
  * ``inner`` must treat axis 0 of its input as a batch (each example on its own, apart from
    batch statistics).
  """

  inner: nn.Module
  action: actions_lib.Action

  @property
  def in_action(self) -> actions_lib.Action:
    return self.action

  @property
  def out_action(self) -> actions_lib.Action:
    return actions_lib.regular(self.action.group, axis=0)

  def setup(self):
    nn.share_scope(self.inner, self)

  def __call__(self, x, *args, **kwargs):
    return lift_lib.lift_in_batch(lambda z: self.inner(z, *args, **kwargs), self.action, x)


def equivarified(module, action: actions_lib.Action):
  """The lift of a linen module (:class:`Equivarified`) or of an NNX module
  (:class:`eqnn.nnx_modules.Equivarified`), whichever ``module`` is."""
  from flax import nnx
  if isinstance(module, nnx.Module):
    from eqnn import nnx_modules
    return nnx_modules.Equivarified(module, action)
  if not isinstance(module, nn.Module):
    raise TypeError(f"equivarified takes a Flax module (linen or NNX), got "
                    f"{type(module).__name__}; lift a function with eqnn.equivarify")
  return Equivarified(module, action)


class _ConvWeights(nn.Module):
  """The weights of one plain conv (the map every lifted conv shares over G)."""

  features: int
  kernel_size: int
  use_bias: bool

  @nn.compact
  def __call__(self, in_features: int, spatial: int = 2):
    k = self.kernel_size
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (k,) * spatial + (in_features, self.features), jnp.float32)
    bias = (self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
            if self.use_bias else None)
    return kernel, bias


class LiftConv(ops.LiftsInput, nn.Module):
  """The input lift of a conv: ``[B, H, W, C_in] -> [B, H, W, |G|, features]``, or for
  sequences ``[B, L, C_in] -> [B, L, |G|, features]``.

  Slot g is ``conv(g^-1 . x)``, ``action`` moving the pixels (rotations need square images)
  or the samples (``actions.shifts``, ``actions.shifts_reflections``). ``relu_pool`` >= 1
  applies ReLU and max pooling of that window too (the block fused where it pays:
  :func:`eqnn.ops.lift_conv`).
  """

  action: actions_lib.Action
  features: int
  kernel_size: int = 3
  padding: str = "SAME"
  use_bias: bool = True
  impl: str = "auto"
  dtype: Any = jnp.float32
  relu_pool: int = 0

  @nn.compact
  def __call__(self, x):
    x = jnp.asarray(x)
    self.action.validate(x)
    kernel, bias = _ConvWeights(self.features, self.kernel_size, self.use_bias,
                                name="conv")(x.shape[-1], x.ndim - 2)
    return ops.lift_conv(x, kernel, bias, self.action, self.padding, self.dtype, self.impl,
                         self.relu_pool)


class GroupConv(ops.ActsOnBlocks, nn.Module):
  """A conv on the stack lifted over the regular action:
  ``[B, H, W, |G|, C] -> [B, H, W, |G|, features]`` (or ``[B, L, |G|, C]`` for sequences),
  slot g = ``conv(g^-1 . y)``."""

  group: FiniteGroup
  features: int
  kernel_size: int = 3
  padding: str = "SAME"
  use_bias: bool = True
  impl: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, y):
    self.in_action.validate(y)
    kernel, bias = _ConvWeights(self.features, self.kernel_size, self.use_bias,
                                name="conv")(self.group.order * y.shape[-1], y.ndim - 3)
    return ops.group_conv(y, kernel, bias, self.group, self.padding, self.dtype, self.impl)


class GroupDense(ops.ActsOnBlocks, nn.Module):
  """A dense layer on the flattened stack lifted over the regular action.

  ``[B, ..., |G|, C] -> [B, |G|, features]``: slot g is ``dense(flatten(g^-1 . y))``.
  """

  group: FiniteGroup
  features: int
  use_bias: bool = True
  impl: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, y):
    self.in_action.validate(y)
    size = 1
    for d in y.shape[1:]:
      size *= d
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (size, self.features),
                        jnp.float32)
    bias = (self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
            if self.use_bias else None)
    return ops.group_dense(y, kernel, bias, self.group, self.dtype, self.impl)


class _GCNNLayer(nn.Module):
  """The fields of a G-CNN conv (kernels turned by ``action``; odd ``kernel_size``)."""

  action: actions_lib.Action
  features: int
  kernel_size: int = 3
  use_bias: bool = True
  dtype: Any = jnp.float32


class GCNNLiftConv(ops.LiftsToTurnedBlocks, _GCNNLayer):
  """The G-CNN input lift (Cohen & Welling): ``[B, H, W, C_in] -> [B, H, W, |G|, features]``,
  slot g = ``conv(x, g . W)``, every slot in the image's frame (:func:`eqnn.ops.gcnn_lift_conv`;
  G acts on the output by :func:`eqnn.ops.gcnn_action`). Odd kernels. ``relu_pool`` >= 1
  applies ReLU and max pooling of that window too, fused."""

  relu_pool: int = 0

  @nn.compact
  def __call__(self, x):
    x = jnp.asarray(x)
    kernel, bias = _ConvWeights(self.features, self.kernel_size, self.use_bias,
                                name="conv")(x.shape[-1])
    return ops.gcnn_lift_conv(x, kernel, bias, self.action, "SAME", self.dtype, self.relu_pool)


class GCNNConv(ops.ActsOnTurnedBlocks, _GCNNLayer):
  """A G-CNN group conv: ``[B, H, W, |G|, C] -> [B, H, W, |G|, features]``, both in the
  image's frame: slot h = ``sum_j conv(y[j], h . W_{h^-1 j})`` with turned kernels
  (:func:`eqnn.ops.gcnn_conv`). The same parameters as :class:`GroupConv`."""

  @nn.compact
  def __call__(self, y):
    kernel, bias = _ConvWeights(self.features, self.kernel_size, self.use_bias,
                                name="conv")(self.action.group.order * y.shape[-1])
    return ops.gcnn_conv(y, kernel, bias, self.action, "SAME", self.dtype)


class ToOwnFrames(nn.Module):
  """A G-CNN map (every slot in the image's frame) into the paper's stacking (each slot in
  its own frame, G moving slots only): slot h turned by h^-1 (:func:`eqnn.ops.to_own_frames`)."""

  action: actions_lib.Action

  @property
  def in_action(self) -> actions_lib.Action:
    return ops.gcnn_action(self.action)

  @property
  def out_action(self) -> actions_lib.Action:
    return ops.block_action(self.action.group)

  def __call__(self, y):
    return ops.to_own_frames(y, self.action)


def relu_pool(module: nn.Module, y: jax.Array, pool: int, i: int) -> jax.Array:
  """ReLU and max pooling, recording ``conv{i}`` and ``pool{i}`` for the equivariance report.

  ``y`` is a plain ``[B, H, W, C]`` or a lifted ``[B, H, W, |G|, C]`` map; a lifted one is
  processed in its channel-stacked view (the same values; the 4-D shape keeps XLA's fusions,
  and so the float summation order of the gradients, what they were before the layout
  change). The records cost nothing unless ``apply(..., mutable=["intermediates"])`` asks.
  """
  lifted, n = y.ndim == 5, y.shape[-2]
  view = (lambda a: ops.from_channels(a, n)) if lifted else (lambda a: a)
  y = nn.relu(ops.to_channels(y) if lifted else y)
  module.sow("intermediates", f"conv{i}", view(y))
  if pool > 1:
    y = ops.max_pool(y, pool)
    module.sow("intermediates", f"pool{i}", view(y))
  return view(y)


# --- layers for deeper networks: all exactly equivariant under the block action ------------

class GroupBatchNorm(ops.ActsOnBlocks, nn.Module):
  """Batch normalisation of a lifted map ``[B, ..., |G|, C]`` with statistics and affine
  parameters per channel C, shared over the |G| slots (escnn's ``InnerBatchNorm``): the
  statistics pool over batch, space and the group axis, which G only permutes, so they are
  G-invariant and the layer is exactly equivariant, in training and evaluation alike.
  (Per-channel normalisation of the stacked ``[..., |G| * C]`` view, one statistic per slot,
  is not: ``tests/layers_test.py`` shows it.)"""

  group: FiniteGroup
  momentum: float = 0.99
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, y, train: bool = False):
    self.in_action.validate(y)
    return nn.BatchNorm(use_running_average=not train, momentum=self.momentum,
                        epsilon=self.epsilon, axis=-1)(y)


class GroupLayerNorm(ops.ActsOnBlocks, nn.Module):
  """Layer normalisation of each example of a lifted map over all its axes (space, group,
  channels), with scale and offset per channel shared over the slots: G-invariant statistics,
  so exactly equivariant."""

  group: FiniteGroup
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, y):
    self.in_action.validate(y)
    return nn.LayerNorm(epsilon=self.epsilon, reduction_axes=tuple(range(1, y.ndim)),
                        feature_axes=-1)(y)


class GroupDropout(ops.ActsOnBlocks, nn.Module):
  """Dropout of whole channels, one mask per example and channel shared over space and the
  |G| slots: g moves slots, not channels, so even training is exactly equivariant for a given
  mask; evaluation is the identity."""

  group: FiniteGroup
  rate: float

  @nn.compact
  def __call__(self, y, deterministic: bool = True):
    self.in_action.validate(y)
    return nn.Dropout(self.rate, broadcast_dims=tuple(range(1, y.ndim - 1)),
                      deterministic=deterministic)(y)


class GroupResidualBlock(ops.ActsOnBlocks, nn.Module):
  """``y + conv(relu(norm(conv(relu(norm(y))))))`` with group convs and shared-statistics
  batch norm: a composition of equivariant maps plus the identity, so equivariant."""

  group: FiniteGroup
  kernel_size: int = 3
  impl: str = "auto"

  @nn.compact
  def __call__(self, y, train: bool = False):
    c = y.shape[-1]
    h = GroupConv(self.group, c, self.kernel_size, impl=self.impl)(
        nn.relu(GroupBatchNorm(self.group)(y, train)))
    h = GroupConv(self.group, c, self.kernel_size, impl=self.impl)(
        nn.relu(GroupBatchNorm(self.group)(h, train)))
    return y + h
