"""The lifted layers and the example models as Flax NNX modules, over the same pure
functions as the linen ones (:mod:`eqnn.ops`).

Same layouts, same declared actions (``in_action`` / ``out_action``), so
``eqnn.testing.assert_equivariant(module, x)`` checks any of them in one line. NNX needs
input sizes up front: ``LiftConv(action, in_features, features, rngs=nnx.Rngs(0))``.
:func:`from_linen` builds the NNX model that computes what a linen :class:`eqnn.models.EquivariantCNN`
computes with the given linen parameters (tests check they agree).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from eqnn import actions as actions_lib
from eqnn import lift as lift_lib
from eqnn import ops, spatial
from eqnn.groups import FiniteGroup

_init = nnx.initializers.lecun_normal()


def _bias(features: int, use_bias: bool):
  return nnx.Param(jnp.zeros((features,), jnp.float32)) if use_bias else None


def _value(p):
  return None if p is None else p[...]


class Equivarified(nnx.Module):
  """Any NNX module lifted over ``action``: ``[B, ...] -> [|G|, B, ...]``, slot g holding
  ``inner(g^-1 . x)``; the same rule as :class:`eqnn.layers.Equivarified` (the copies folded
  into one batch of ``|G| * B``, so BatchNorm statistics cover the orbit and update once per
  call; call arguments pass through). ``inner`` is the module itself, its parameters shared,
  not copied.

  ``eqnn.equivarify`` also lifts an NNX module directly, as a function:
  ``eqnn.equivarify(model, action)(x)`` is ``[|G|, B, ...]``, the copies vmapped (or folded
  into its batch where the module is proved to map each example on its own, the same values).
  """

  def __init__(self, inner: nnx.Module, action: actions_lib.Action):
    self.inner, self.action = inner, action

  @property
  def in_action(self):
    return self.action

  @property
  def out_action(self):
    return actions_lib.regular(self.action.group, axis=0)

  def __call__(self, x, *args, **kwargs):
    return lift_lib.lift_in_batch(lambda z: self.inner(z, *args, **kwargs), self.action, x)


class LiftConv(ops.LiftsInput, nnx.Module):
  """The input lift of a conv: ``[B, H, W, C_in] -> [B, H, W, |G|, features]``, slot g =
  ``conv(g^-1 . x)``; ``relu_pool`` >= 1 applies ReLU and max pooling of that window too
  (fused where it pays, :func:`eqnn.ops.lift_conv`)."""

  def __init__(self, action: actions_lib.Action, in_features: int, features: int,
               kernel_size: int = 3, *, padding: str = "SAME", use_bias: bool = True,
               impl: str = "auto", dtype: Any = jnp.float32, relu_pool: int = 0,
               rngs: nnx.Rngs):
    ops.resolve_impl(impl, "lift_conv", action.group)
    self.action, self.padding, self.impl, self.dtype = action, padding, impl, dtype
    self.relu_pool = relu_pool
    k = kernel_size
    self.kernel = nnx.Param(_init(rngs.params(), (k, k, in_features, features), jnp.float32))
    self.bias = _bias(features, use_bias)

  def __call__(self, x):
    return ops.lift_conv(jnp.asarray(x), self.kernel[...], _value(self.bias), self.action,
                         self.padding, self.dtype, self.impl, self.relu_pool)


class GroupConv(ops.ActsOnBlocks, nnx.Module):
  """A conv on the stack lifted over the regular action:
  ``[B, H, W, |G|, in_features] -> [B, H, W, |G|, features]``."""

  def __init__(self, group: FiniteGroup, in_features: int, features: int,
               kernel_size: int = 3, *, padding: str = "SAME", use_bias: bool = True,
               impl: str = "auto", dtype: Any = jnp.float32, rngs: nnx.Rngs):
    ops.resolve_impl(impl, "group_conv", group)
    self.group, self.padding, self.impl, self.dtype = group, padding, impl, dtype
    k, n = kernel_size, group.order
    self.kernel = nnx.Param(_init(rngs.params(), (k, k, n * in_features, features), jnp.float32))
    self.bias = _bias(features, use_bias)

  def __call__(self, y):
    self.in_action.validate(y)
    return ops.group_conv(y, self.kernel[...], _value(self.bias), self.group, self.padding,
                          self.dtype, self.impl)


class GCNNLiftConv(ops.LiftsToTurnedBlocks, nnx.Module):
  """The G-CNN input lift (see :class:`eqnn.layers.GCNNLiftConv`): ``[B, H, W, C_in] ->
  [B, H, W, |G|, features]``, slot g = ``conv(x, g . W)``, every slot in the image's frame;
  ``relu_pool`` >= 1 applies ReLU and max pooling of that window too, fused."""

  def __init__(self, action: actions_lib.Action, in_features: int, features: int,
               kernel_size: int = 3, *, use_bias: bool = True, dtype: Any = jnp.float32,
               relu_pool: int = 0, rngs: nnx.Rngs):
    self.action, self.dtype, self.relu_pool = action, dtype, relu_pool
    k = kernel_size
    self.kernel = nnx.Param(_init(rngs.params(), (k, k, in_features, features), jnp.float32))
    self.bias = _bias(features, use_bias)

  def __call__(self, x):
    return ops.gcnn_lift_conv(jnp.asarray(x), self.kernel[...], _value(self.bias), self.action,
                              "SAME", self.dtype, self.relu_pool)


class GCNNConv(ops.ActsOnTurnedBlocks, nnx.Module):
  """A G-CNN group conv (see :class:`eqnn.layers.GCNNConv`): ``[B, H, W, |G|, in_features]
  -> [B, H, W, |G|, features]``, both in the image's frame, kernels turned."""

  def __init__(self, action: actions_lib.Action, in_features: int, features: int,
               kernel_size: int = 3, *, use_bias: bool = True, dtype: Any = jnp.float32,
               rngs: nnx.Rngs):
    self.action, self.dtype = action, dtype
    k, n = kernel_size, action.group.order
    self.kernel = nnx.Param(_init(rngs.params(), (k, k, n * in_features, features), jnp.float32))
    self.bias = _bias(features, use_bias)

  def __call__(self, y):
    return ops.gcnn_conv(y, self.kernel[...], _value(self.bias), self.action, "SAME",
                         self.dtype)


class GroupDense(ops.ActsOnBlocks, nnx.Module):
  """A dense layer on the flattened stack lifted over the regular action:
  ``[B, ..., |G|, C] -> [B, |G|, features]``; ``in_size`` is the flattened size per example
  (spatial positions x |G| x C)."""

  def __init__(self, group: FiniteGroup, in_size: int, features: int, *, use_bias: bool = True,
               impl: str = "auto", dtype: Any = jnp.float32, rngs: nnx.Rngs):
    ops.resolve_impl(impl, "group_dense", group)
    self.group, self.impl, self.dtype = group, impl, dtype
    self.kernel = nnx.Param(_init(rngs.params(), (in_size, features), jnp.float32))
    self.bias = _bias(features, use_bias)

  def __call__(self, y):
    self.in_action.validate(y)
    return ops.group_dense(y, self.kernel[...], _value(self.bias), self.group, self.dtype,
                           self.impl)


class EquivariantCNN(ops.LiftsInput, nnx.Module):
  """The paper's Figure 3 network (see :class:`eqnn.models.EquivariantCNN`, also for
  ``conv_form`` and ``kernel_gradient``): ``[B, H, W, C] -> [B, |G|, num_classes]``;
  ``input_shape = (H, W, C)``."""

  def __init__(self, action: actions_lib.Action, input_shape: Sequence[int],
               conv_features: Sequence[int] = (16, 32, 32), pools: Sequence[int] = (2, 2, 1),
               dense_features: Sequence[int] = (128,), num_classes: int = 10,
               kernel_size: int = 3, *, impl: str = "auto", hidden: str = "stacked",
               conv_form: str | None = None, kernel_gradient: str | None = None,
               rngs: nnx.Rngs):
    from eqnn import models   # its checks; models imports no NNX
    if len(pools) != len(conv_features):
      raise ValueError(f"need one pool window per conv: {len(pools)} pools for "
                       f"{len(conv_features)} convs")
    if hidden not in models.HIDDEN:
      raise ValueError(f"hidden {hidden!r}: choose one of {models.HIDDEN}")
    spatial.check_forms(conv_form, kernel_gradient)
    self.action, self.pools, self.hidden = action, tuple(pools), hidden
    self.conv_form, self.kernel_gradient = conv_form, kernel_gradient
    group = action.group
    h, w, c = input_shape
    self.fused = models.first_block_fused(False, hidden, len(conv_features))
    first = pools[0] if self.fused else 0
    if hidden == "gcnn":
      models.check_gcnn((kernel_size,) * len(conv_features), tuple(pools), h)
      self.lift = GCNNLiftConv(action, c, conv_features[0], kernel_size, relu_pool=first,
                               rngs=rngs)
    else:
      self.lift = LiftConv(action, c, conv_features[0], kernel_size, impl=impl,
                           relu_pool=first, rngs=rngs)
    h, w = h // max(pools[0], 1), w // max(pools[0], 1)
    convs = []
    for cin, cout, pool in zip(conv_features, conv_features[1:], pools[1:]):
      convs.append(GCNNConv(action, cin, cout, kernel_size, rngs=rngs) if hidden == "gcnn"
                   else GroupConv(group, cin, cout, kernel_size, impl=impl, rngs=rngs))
      h, w = h // max(pool, 1), w // max(pool, 1)
    self.convs = nnx.List(convs)
    widths = list(dense_features) + [num_classes]
    self.group_dense = GroupDense(group, h * w * group.order * conv_features[-1], widths[0],
                                  impl=impl, rngs=rngs)
    self.dense = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths, widths[1:])])

  def __call__(self, x):
    with spatial.forms(self.conv_form, self.kernel_gradient):
      return self._network(x)

  def _network(self, x):
    y, last = self.lift(x), len(self.pools)
    for i, pool in enumerate(self.pools, 1):
      if i > 1:
        y = self.convs[i - 2](y)
      if self.hidden == "gcnn" and i == last:
        y = ops.to_own_frames(y, self.action)   # the head reads slots in their own frames
      if i > 1 or not self.fused:
        y = ops.max_pool(jax.nn.relu(y), pool)
    h = self.group_dense(y)                                          # [B, G, w0]
    for layer in self.dense:
      h = layer(jax.nn.relu(h))                                      # shared over G
    return h.astype(jnp.float32)


def from_linen(model, params, input_shape: Sequence[int]) -> EquivariantCNN:
  """The NNX :class:`EquivariantCNN` holding the weights of a linen :class:`eqnn.models.EquivariantCNN`.

  ``params`` as returned by ``model.init`` (with or without the ``"params"`` key).
  """
  p = params.get("params", params)
  if model.norm or model.dropout or model.head_pool != "none":
    raise ValueError("from_linen converts EquivariantCNN without norm, dropout and head_pool "
                     "(the NNX model has none of them)")
  out = EquivariantCNN(model.action, input_shape, model.conv_features, model.pools,
                       model.dense_features, model.num_classes, model.kernel_size,
                       impl=model.impl, hidden=model.hidden, conv_form=model.conv_form,
                       kernel_gradient=model.kernel_gradient, rngs=nnx.Rngs(0))
  gcnn = model.hidden == "gcnn"

  def load(dst, src):
    dst.kernel[...] = jnp.asarray(src["kernel"])
    if dst.bias is not None:
      dst.bias[...] = jnp.asarray(src["bias"])

  load(out.lift, p["GCNNLiftConv_0" if gcnn else "LiftConv_0"]["conv"])
  for i, conv in enumerate(out.convs):
    load(conv, p[f"GCNNConv_{i}" if gcnn else f"GroupConv_{i}"]["conv"])
  load(out.group_dense, p["GroupDense_0"])
  for i, layer in enumerate(out.dense):
    load(layer, p[f"Dense_{i}"])
  return out
