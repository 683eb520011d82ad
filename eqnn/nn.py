"""Flax modules that own parameters and call eqnn's pure functions.

Layouts follow the paper's stacking: a hidden feature map is ``[B, H, W, |G| * C]`` with
group-major channel blocks, G acting by :class:`eqnn.actions.ChannelBlocks` (for C4 a cyclic
shift of the blocks, pixels untouched). So:

* :class:`LiftConv` equivarifies a conv over the *input* action (e.g. rotations):
  block g of the output is ``conv(g^-1 . x)``.
* :class:`GroupConv` equivarifies a standard conv on the stack over the block action:
  block g is ``conv(g^-1 . y)``.
* :class:`GroupDense` equivarifies a dense layer on the flattened stack: ``[B, |G|, out]``.

Each has two implementations that compute the same function (tests check it):
``"vmap"`` lifts the plain layer with ``nn.vmap`` over the group (the copies in the batch
axis, one shared parameter set); ``"expanded"`` does one conv or matmul with |G|-fold
output channels whose weights are the block-permuted filters (as group-conv libraries
do), which is faster on CPU. Any per-channel op (ReLU, pooling of any size) commutes with
the block action, so it may sit anywhere between these layers.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from eqnn import actions as actions_lib
from eqnn import fourier
from eqnn import lift as lift_lib
from eqnn.groups import FiniteGroup

IMPLS = ("auto", "expanded", "vmap", "fourier")
# What "auto" picks, per layer, from `make bench` on 2 CPU cores: the input lift has one
# or few input channels, where XLA's grouped conv is slow (about 6x slower than the copies
# in the batch axis); on the stack, a cyclic group's convs run in the Fourier basis of the
# group axis (2-3x faster than the block-circulant conv, eqnn/fourier.py), other groups'
# as one conv with block-circulant weights (about 2x faster than the copies in the batch).
AUTO = {"LiftConv": "vmap", "GroupConv": "fourier", "GroupDense": "expanded"}


def _resolve_impl(impl, layer, group=None):
  if impl not in IMPLS:
    raise ValueError(f"unknown implementation {impl!r}; choose one of {IMPLS}")
  if impl == "auto":
    impl = AUTO[layer]
    if impl == "fourier" and not fourier.is_cyclic_in_order(group):
      impl = "expanded"
  if impl == "fourier" and (layer != "GroupConv" or not fourier.is_cyclic_in_order(group)):
    raise ValueError(f"the 'fourier' implementation is for GroupConv over a cyclic group "
                     f"C_n in eqnn's element order, not {layer} over {getattr(group, 'name', group)}")
  return impl


def _inverse_orbit(action, x):
  """``[|G|, ...]``: ``g^-1 . x`` for every g in group order, the inputs of the lift."""
  return jax.vmap(lambda g: action._apply(g, x))(  # pylint: disable=protected-access
      jnp.asarray(action.group.inverse))


def _shared(module, copies):
  """``module`` on every copy (leading axis) with one shared parameter set."""
  return nn.vmap(lambda m, y: m(y), variable_axes={"params": None},
                 split_rngs={"params": False}, in_axes=0, out_axes=0)(module, copies)


class Equivarified(nn.Module):
  """Any Flax module ``inner`` lifted over ``action``: output ``[|G|, ...]``, ``F(g^-1 . x)``.

  One set of parameters is shared by all group elements (``nn.vmap`` with
  ``variable_axes={'params': None}``), so ``project(out) == inner(x)`` with the same params.
  """

  inner: nn.Module
  action: actions_lib.Action

  @nn.compact
  def __call__(self, x):
    x = jnp.asarray(x)
    self.action.validate(x)
    return _shared(self.inner, _inverse_orbit(self.action, x))


def block_circulant(kernel: jax.Array, group: FiniteGroup, in_axis: int, out_axis: int):
  """Expanded weights of a layer lifted over the block action.

  ``kernel`` has ``|G| * C_in`` entries on ``in_axis`` (the stacked input) and ``C_out`` on
  ``out_axis``. Returns the kernel with ``|G| * C_out`` on ``out_axis`` whose block
  ``(i, g)`` is the kernel's input block ``table[g^-1, i]``: output block g then equals the
  plain layer applied to ``g^-1 . y``, because ``(g^-1 . y)`` block j is y block ``g j``.
  """
  n = group.order
  in_axis %= kernel.ndim
  out_axis %= kernel.ndim
  k = jnp.moveaxis(kernel, (in_axis, out_axis), (-2, -1))
  cin = k.shape[-2] // n
  blocks = k.reshape(k.shape[:-2] + (n, cin, k.shape[-1]))           # [..., j, c, o]
  idx = jnp.asarray(group.table[group.inverse].T)                     # [i, g] -> g^-1 i
  e = jnp.take(blocks, idx, axis=-3)                                  # [..., i, g, c, o]
  e = jnp.moveaxis(e, -3, -2)                                         # [..., i, c, g, o]
  e = e.reshape(k.shape[:-2] + (n * cin, n * k.shape[-1]))
  return jnp.moveaxis(e, (-2, -1), (in_axis, out_axis))


def _stack_blocks(copies):
  """``[|G|, B, ..., C]`` -> ``[B, ..., |G| * C]`` (group-major channel blocks)."""
  moved = jnp.moveaxis(copies, 0, -2)
  return moved.reshape(moved.shape[:-2] + (-1,))


def _unstack_blocks(y, n):
  """``[B, ..., |G| * C]`` -> ``[|G|, B, ..., C]``."""
  blocks = y.reshape(y.shape[:-1] + (n, y.shape[-1] // n))
  return jnp.moveaxis(blocks, -2, 0)


class _Conv(nn.Module):
  """A plain 2-D conv; the shared layer inside the lifted ones."""

  features: int
  kernel_size: int
  padding: str
  use_bias: bool
  dtype: Any

  @nn.compact
  def __call__(self, x, expand: Callable | None = None, groups: int = 1,
               blockwise: Callable | None = None):
    k = self.kernel_size
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (k, k, x.shape[-1] // groups, self.features), jnp.float32)
    if expand is not None:
      kernel = expand(kernel)
    conv_fn = lambda a, w: jax.lax.conv_general_dilated(
        a.astype(self.dtype), w.astype(self.dtype), (1, 1), self.padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)
    if blockwise is not None:     # the layer computes with the kernel itself
      y = blockwise(x, kernel, conv_fn)
    else:
      y = conv_fn(x, kernel)
    if self.use_bias:
      bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
      y = y + jnp.tile(bias, y.shape[-1] // self.features).astype(self.dtype)
    return y


class LiftConv(nn.Module):
  """The input lift of a conv: ``[B, H, W, C_in] -> [B, H, W, |G| * features]``.

  Block g is ``conv(g^-1 . x)`` where ``action`` moves the pixels (rotations need square
  images). Both implementations build the |G| transformed copies of the input; "expanded"
  stacks them on the channel axis and runs one grouped conv, "vmap" runs the conv on each.
  """

  action: actions_lib.ImageAction
  features: int
  kernel_size: int = 3
  padding: str = "SAME"
  use_bias: bool = True
  impl: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    impl = _resolve_impl(self.impl, "LiftConv", self.action.group)
    x = jnp.asarray(x)
    self.action.validate(x)
    n = self.action.group.order
    copies = _inverse_orbit(self.action, x)                  # [G, B, H, W, C]
    conv = _Conv(self.features, self.kernel_size, self.padding, self.use_bias, self.dtype,
                 name="conv")
    if impl == "vmap":
      return _stack_blocks(_shared(conv, copies))
    # One grouped conv: input block g only feeds output block g, with the same kernel.
    return conv(_stack_blocks(copies), expand=lambda k: jnp.tile(k, (1, 1, 1, n)), groups=n)


class GroupConv(nn.Module):
  """A standard conv on the stack, lifted over the block action:
  ``[B, H, W, |G| * C_in] -> [B, H, W, |G| * features]``, block g = ``conv(g^-1 . y)``."""

  group: FiniteGroup
  features: int
  kernel_size: int = 3
  padding: str = "SAME"
  use_bias: bool = True
  impl: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, y):
    impl = _resolve_impl(self.impl, "GroupConv", self.group)
    action = actions_lib.ChannelBlocks(self.group)
    action.validate(y)
    conv = _Conv(self.features, self.kernel_size, self.padding, self.use_bias, self.dtype,
                 name="conv")
    if impl == "vmap":
      return _stack_blocks(_shared(conv, _inverse_orbit(action, y)))
    if impl == "fourier":
      return conv(y, blockwise=self._fourier)
    return conv(y, expand=lambda k: block_circulant(k, self.group, 2, 3))

  def _fourier(self, y, kernel, conv_fn):
    n = self.group.order
    kb = jnp.moveaxis(kernel.reshape(kernel.shape[:2] + (n, -1, kernel.shape[-1])), 2, 0)
    out = fourier.circulant_apply(_unstack_blocks(y, n), kb, n, conv_fn)
    return _stack_blocks(out)


class GroupDense(nn.Module):
  """A dense layer on the flattened stack, lifted over the block action.

  ``[B, ..., |G| * C] -> [B, |G|, features]``: slot g is ``dense(flatten(g^-1 . y))``.
  """

  group: FiniteGroup
  features: int
  use_bias: bool = True
  impl: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, y):
    impl = _resolve_impl(self.impl, "GroupDense", self.group)
    n = self.group.order
    actions_lib.ChannelBlocks(self.group).validate(y)
    b = y.shape[0]
    spatial = int(np.prod(y.shape[1:-1]))
    c = y.shape[-1] // n
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (spatial * n * c, self.features), jnp.float32)
    # [B, S, G*C]: the flattening keeps the block axis, so the action stays a block permutation.
    y = y.reshape(b, spatial, n * c).astype(self.dtype)
    k4 = kernel.reshape(spatial, n * c, self.features)
    if impl == "vmap":
      copies = _inverse_orbit(actions_lib.ChannelBlocks(self.group), y)   # [G, B, S, G*C]
      out = jnp.einsum("gbsc,sco->bgo", copies, k4.astype(self.dtype))
    else:
      e = block_circulant(k4, self.group, 1, 2)                           # [S, G*C, G*F]
      out = (y.reshape(b, -1) @ e.reshape(-1, n * self.features).astype(self.dtype))
      out = out.reshape(b, n, self.features)
    if self.use_bias:
      out = out + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    return out


def max_pool(x, window: int):
  """Per-channel max pooling ``[B, H, W, C]``, window = stride, 'VALID' (a ragged edge is
  dropped); commutes with the block action.

  Written as a reshape and a max rather than ``lax.reduce_window``, whose backward pass on
  CPU is a slow select-and-scatter.
  """
  if window <= 1:
    return x
  b, h, w, c = x.shape
  hh, ww = h // window, w // window
  if hh == 0 or ww == 0:
    raise ValueError(f"max pool window {window} is larger than the {h} x {w} feature map")
  x = x[:, :hh * window, :ww * window, :]
  return x.reshape(b, hh, window, ww, window, c).max(axis=(2, 4))


def _relu_pool(module, y, pool, i):
  """Records ``conv{i}`` (after ReLU) and ``pool{i}`` for the equivariance report; the
  records cost nothing unless ``apply(..., mutable=["intermediates"])`` asks for them."""
  module.sow("intermediates", f"conv{i}", y)
  if pool > 1:
    y = max_pool(y, pool)
    module.sow("intermediates", f"pool{i}", y)
  return y


class LiftedCNN(nn.Module):
  """The paper's Figure 3 network, for any group acting on square images.

  ``LiftConv`` (conv1 on the |G| transformed copies, stacked on channels), then
  ``GroupConv`` layers on the stack, then the equivarified head ``dense . pool . conv``:
  a :class:`GroupDense` whose |G| outputs go through the rest of the MLP with shared
  weights (the lift of the composite head), giving ``[B, |G| * num_classes]`` logits,
  slot ``g * num_classes + m`` meaning "digit m seen at group element g".

  Attributes:
    action: how G acts on input images.
    conv_features: filters per group element of each conv (the first is the input lift).
    pools: max-pool window after each conv (1: none); pooling commutes with the group.
    dense_features: hidden widths of the head (the first is lifted over the stack).
    num_classes: classes per group element.
  """

  action: actions_lib.ImageAction
  conv_features: Sequence[int] = (16, 32, 32)
  pools: Sequence[int] = (2, 2, 1)
  dense_features: Sequence[int] = (128,)
  num_classes: int = 10
  kernel_size: int = 3
  impl: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    if len(self.pools) != len(self.conv_features):
      raise ValueError(f"need one pool window per conv: {len(self.pools)} pools for "
                       f"{len(self.conv_features)} convs")
    group = self.action.group
    y = LiftConv(self.action, self.conv_features[0], self.kernel_size, impl=self.impl,
                 dtype=self.dtype)(x)
    y = _relu_pool(self, nn.relu(y), self.pools[0], 1)
    for i, (feats, pool) in enumerate(zip(self.conv_features[1:], self.pools[1:]), 2):
      y = GroupConv(group, feats, self.kernel_size, impl=self.impl, dtype=self.dtype)(y)
      y = _relu_pool(self, nn.relu(y), pool, i)
    widths = list(self.dense_features) + [self.num_classes]
    h = GroupDense(group, widths[0], impl=self.impl, dtype=self.dtype)(y)   # [B, G, w0]
    for i, w in enumerate(widths[1:], 1):
      h = nn.relu(h)
      self.sow("intermediates", f"dense{i}", h)
      h = nn.Dense(w, dtype=self.dtype)(h)                                   # shared over G
    return h.reshape(h.shape[0], -1).astype(jnp.float32)


class PlainCNN(nn.Module):
  """The same network before equivarification: ``[B, H, W, C] -> [B, num_classes]``."""

  conv_features: Sequence[int] = (16, 32, 32)
  pools: Sequence[int] = (2, 2, 1)
  dense_features: Sequence[int] = (128,)
  num_classes: int = 10
  kernel_size: int = 3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = x.astype(self.dtype)
    for i, (feats, pool) in enumerate(zip(self.conv_features, self.pools), 1):
      y = nn.Conv(feats, (self.kernel_size, self.kernel_size), dtype=self.dtype)(y)
      y = _relu_pool(self, nn.relu(y), pool, i)
    y = y.reshape(y.shape[0], -1)
    for i, w in enumerate(self.dense_features, 1):
      y = nn.relu(nn.Dense(w, dtype=self.dtype)(y))
      self.sow("intermediates", f"dense{i}", y)
    return nn.Dense(self.num_classes, dtype=self.dtype)(y).astype(jnp.float32)


class MLP(nn.Module):
  """A plain MLP on the flattened input: ``[B, ...] -> [B, num_classes]``."""

  features: Sequence[int] = (128, 128)
  num_classes: int = 10

  @nn.compact
  def __call__(self, x):
    y = x.reshape(x.shape[0], -1)
    for w in self.features:
      y = nn.relu(nn.Dense(w)(y))
    return nn.Dense(self.num_classes)(y)


class LiftedMLP(nn.Module):
  """An MLP equivarified over ``action`` (any group, e.g. S_n permuting set elements):
  ``[B, ...] -> [B, |G| * num_classes]``, slot ``g * K + m`` = ``MLP(g^-1 . x)[m]``."""

  action: actions_lib.Action
  features: Sequence[int] = (128, 128)
  num_classes: int = 10

  @nn.compact
  def __call__(self, x):
    out = Equivarified(MLP(self.features, self.num_classes), self.action)(x)   # [G, B, K]
    return jnp.moveaxis(out, 0, 1).reshape(x.shape[0], -1)


def group_logits(logits: jax.Array, group_order: int) -> jax.Array:
  """``[B, |G| * K] -> [B, |G|, K]``: the joint logits with the group axis explicit."""
  return logits.reshape(logits.shape[0], group_order, -1)


def invariant_logits(logits: jax.Array, group_order: int, reduce: str = "logsumexp"):
  """``[B, K]`` class scores that forget the group element (exactly G-invariant)."""
  return lift_lib.invariant(group_logits(logits, group_order), reduce, axis=1)
