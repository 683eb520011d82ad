"""The lifted layers' mathematics as pure functions of arrays and weights (no Flax here).

**Layout.** A lifted feature map is ``[B, ..., |G|, C]``: the group axis second to last, C
features per group element, G acting by :func:`eqnn.actions.regular` on axis -2 (for C4, a
cyclic shift of the group axis; pixels and features stay put). Its channel-stacked view
``[B, ..., |G| * C]`` (group-major blocks, the paper's stacking, what a conv consumes) is a
free reshape: :func:`to_channels` and :func:`from_channels`.

* :func:`lift_conv` equivarifies a conv over the *input* action (rotations of images):
  slot g is ``conv(g^-1 . x)``.
* :func:`group_conv` equivarifies a conv on the stack over the regular action: slot g is
  ``conv(g^-1 . y)``.
* :func:`group_dense` equivarifies a dense layer on the flattened stack: ``[B, |G|, F]``.
* :func:`gcnn_lift_conv`, :func:`gcnn_conv` and :func:`to_own_frames` (:mod:`eqnn.gcnn`,
  re-exported here): G-CNN layers, every slot's map in the image's frame (G turns maps and
  moves slots), and the conversion into the stacking above.

Each has interchangeable implementations that compute the same function (tests check it):
``"vmap"`` runs the plain layer on the |G| inputs of the lift (:func:`eqnn.lift.lift_inputs`,
the copies in the batch axis); ``"expanded"`` does one conv or matmul with |G|-fold output
channels whose weights are the block-circulant expansion of the kernel
(:func:`block_circulant`); ``"fourier"`` (:mod:`eqnn.fourier`) does a group conv or dense
layer in the basis of the group's irreducible representations (C_n's Fourier basis, D_n's
real irreps); ``"patches"`` (the input lift) multiplies the copies' conv windows
(:func:`patches`) by the kernel in one matmul; ``"kernels"`` (the input lift over quarter
turns and mirrors) turns the kernel instead of the image, one conv with |G|-fold output
channels, and turns each slot's output back. ``"auto"`` picks per layer (:data:`AUTO`;
`make bench` measures the choice). Any per-channel op (ReLU, pooling of any window)
commutes with the regular action on the group axis, so it may sit between these layers.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from eqnn import actions as actions_lib
from eqnn import fourier
from eqnn import image_actions
from eqnn import lift as lift_lib
from eqnn.groups import FiniteGroup
# The plain operations, re-exported: ops.conv, ops.max_pool, ... as before the split.
from eqnn.spatial import (blur_pool, conv, conv_relu_pool, max_pool, patches,  # noqa: F401
                           require_float, rotate)
from eqnn.spatial import add_bias as _add_bias
# The G-CNN layers (eqnn/gcnn.py), re-exported: ops.gcnn_conv, ops.to_own_frames, ...
from eqnn.gcnn import (ActsOnTurnedBlocks, LiftsToTurnedBlocks, gcnn_action,  # noqa: F401
                       gcnn_conv, gcnn_lift_conv, lift_relu_pool_turned,
                       pools_in_turned_frames, to_own_frames, turn_kernels)

IMPLS = ("auto", "expanded", "vmap", "fourier", "patches", "kernels")
# What "auto" picks per layer kind on CPU (measured in whole train steps; `make bench`
# re-measures each choice, docs/performance.md): group convs and lifted dense layers in the
# basis of the group's irreducible representations (C_n's Fourier basis, D_n's irreps) where
# eqnn has one, else one conv or matmul with block-circulant weights; the input lift as |G|
# copies in the batch axis through XLA's conv ("patches" and "kernels" measured no faster in
# whole steps, within 0.87-1.31x of it from run to run; the grouped conv of "expanded" slower;
# docs/performance.md, `python -m experiments.bench --only=lift_forms`); its fused first block
# (``relu_pool``) by the turned kernels where that is exact (:func:`lift_conv`).
AUTO = {"lift_conv": "vmap", "group_conv": "fourier", "group_dense": "fourier"}
VALID = {"lift_conv": ("vmap", "expanded", "patches", "kernels"), "group_conv": ("vmap", "expanded", "fourier"),
         "group_dense": ("vmap", "expanded", "fourier")}


def resolve_impl(impl: str, layer: str, group: FiniteGroup | None = None) -> str:
  """The implementation that ``impl`` means for ``layer`` (a key of :data:`AUTO`) over ``group``.

  ``impl`` is one name for every layer kind, or one per kind as ``"kind=name,..."`` (kinds
  not named: "auto"), e.g. ``"lift_conv=kernels"`` or ``"lift_conv=vmap,group_conv=expanded"``.
  """
  impl = _named(impl, layer)
  if impl not in IMPLS:
    raise ValueError(f"unknown implementation {impl!r}; choose one of {IMPLS}")
  has_fourier = group is not None and (fourier.is_cyclic_in_order(group)
                                       or fourier.is_dihedral_in_order(group))
  if impl == "auto":
    impl = AUTO[layer]
    if impl == "fourier" and not has_fourier:
      impl = "expanded"
  if impl not in VALID[layer] or (impl == "fourier" and not has_fourier):
    raise ValueError(f"the {impl!r} implementation is not available for {layer} over "
                     f"{getattr(group, 'name', group)}: 'fourier' is for group convs and "
                     f"group dense layers over a cyclic group C_n or a dihedral group D_n in "
                     f"eqnn's element order, 'patches' and 'kernels' for the input lift; "
                     f"{layer} takes {('auto',) + VALID[layer]}")
  return impl


def _named(impl: str, layer: str) -> str:
  """What ``impl`` names for ``layer`` before "auto" is resolved (a per-kind spec read)."""
  return _per_kind(impl).get(layer, "auto") if "=" in impl else impl


def _per_kind(spec: str) -> dict[str, str]:
  out = {}
  for part in spec.split(","):
    kind, _, name = part.strip().partition("=")
    if kind not in AUTO or name not in IMPLS:
      raise ValueError(f"implementation {spec!r}: each part is kind=name with kind one of "
                       f"{tuple(AUTO)} and name one of {IMPLS}; {part.strip()!r} is not")
    out[kind] = name
  return out


# --- layout -----------------------------------------------------------------------------

def to_channels(y: jax.Array) -> jax.Array:
  """``[..., |G|, C] -> [..., |G| * C]`` (group-major channel blocks).

  >>> to_channels(jnp.zeros((2, 5, 5, 4, 3))).shape
  (2, 5, 5, 12)
  """
  return y.reshape(y.shape[:-2] + (-1,))


def from_channels(y: jax.Array, group_order: int) -> jax.Array:
  """``[..., |G| * C] -> [..., |G|, C]``."""
  if y.shape[-1] % group_order:
    raise ValueError(f"the channel axis of shape {y.shape} is not a multiple of |G| = {group_order}")
  return y.reshape(y.shape[:-1] + (group_order, y.shape[-1] // group_order))


def _slots_last(copies: jax.Array) -> jax.Array:
  """``[|G|, B, ..., C]`` (the lift's own layout) -> ``[B, ..., |G|, C]``."""
  return jnp.moveaxis(copies, 0, -2)


def _on_copies(fn: Callable, action: actions_lib.Action, x: jax.Array) -> jax.Array:
  """``fn`` (a map of a batch) on the |G| moved copies of ``x`` folded into its batch as the
  lift's fold does (:func:`eqnn.lift.lift_in_batch`: example first, so that a batch sharded
  over devices stays so; a vmap over G would fold them group first), ``[B, ..., |G|, F]``."""
  return _slots_last(lift_lib.lift_in_batch(fn, action, x))


def block_action(group: FiniteGroup) -> actions_lib.TableAction:
  """G on a lifted feature map ``[B, ..., |G|, C]``: the regular action on axis -2."""
  return actions_lib.regular(group, axis=-2)


class LiftsInput:
  """Declared actions of a layer or model that lifts its input over ``self.action``:
  G acts on the input by ``action`` and on the output ``[B, ..., |G|, C]`` by
  :func:`block_action`. (A mixin for Flax linen and NNX modules alike.)"""

  @property
  def in_action(self) -> actions_lib.Action:
    return self.action

  @property
  def out_action(self) -> actions_lib.Action:
    return block_action(self.action.group)


class ActsOnBlocks:
  """Declared actions of a layer from one lifted feature map to another, over ``self.group``:
  :func:`block_action` on both sides."""

  @property
  def in_action(self) -> actions_lib.Action:
    return block_action(self.group)

  @property
  def out_action(self) -> actions_lib.Action:
    return block_action(self.group)


def block_circulant(kernel: jax.Array, group: FiniteGroup, in_axis: int, out_axis: int):
  """The expanded weights of a linear layer lifted over the regular action on its input blocks.

  ``kernel`` has ``|G| * C_in`` entries on ``in_axis`` (group-major input blocks) and
  ``C_out`` on ``out_axis``; the result has ``|G| * C_out`` on ``out_axis``. Derived from
  the lift: output slot g is ``<W, g^-1 . y>``, and since the regular action permutes
  blocks, ``<W, g^-1 . y> = <g . W, y>``: slot g's weights are ``g . W``, the orbit of W
  under the regular action on its input blocks (block i of slot g is W's block
  ``table[g^-1, i]``).
  """
  n = group.order
  in_axis %= kernel.ndim
  out_axis %= kernel.ndim
  k = jnp.moveaxis(kernel, (in_axis, out_axis), (-2, -1))
  cin, cout = k.shape[-2] // n, k.shape[-1]
  blocks = k.reshape(k.shape[:-2] + (n, cin, cout))                   # [..., j, c, o]
  # The regular action's table: (g . W)[i] = W[perm[g, i]]; one static gather builds every slot.
  perm = actions_lib.regular(group).perm                              # [g, i]
  e = jnp.take(blocks, jnp.asarray(perm.T), axis=-3)                  # [..., i, g, c, o]
  e = jnp.moveaxis(e, -3, -2)                                         # [..., i, c, g, o]
  e = e.reshape(k.shape[:-2] + (n * cin, n * cout))
  return jnp.moveaxis(e, (-2, -1), (in_axis, out_axis))


def group_pool(y: jax.Array, reduce: str = "max") -> jax.Array:
  """``[B, ..., |G|, C] -> [B, ..., C]``: a symmetric reduction over the group axis, exactly
  G-invariant at any layer (the regular action only permutes that axis)."""
  return lift_lib.invariant(y, reduce, axis=-2)


def _add_bias_stacked(y, bias, n, dtype):
  """``y [..., |G| * F]`` plus the bias of each slot: the same values as :func:`_add_bias` on
  ``[..., |G|, F]``, added on the stacked view (a tile), the form the convs' gradients
  have always been summed in."""
  return y if bias is None else _add_bias(y, jnp.tile(bias, n), dtype)


def _fourier_apply(x, kernel, group, linear, axis: int = 0):
  """``out[g] = sum_i linear(x[i], kernel[g^-1 i])`` (x's group axis at ``axis``, the
  kernel's first) in the basis of the group's irreducible representations:
  :func:`eqnn.fourier.circulant_apply` for C_n (the group axis where it is),
  :func:`eqnn.fourier.irrep_apply` for D_n (group axis first)."""
  if fourier.is_cyclic_in_order(group):
    return fourier.circulant_apply(x, kernel, group.order, linear, axis)
  return jnp.moveaxis(fourier.irrep_apply(
      jnp.moveaxis(x, axis, 0), kernel, fourier.dihedral_irreps(group.order // 2), linear), 0, axis)


# --- lifted layers ----------------------------------------------------------------------

def lift_conv(x: jax.Array, kernel: jax.Array, bias: jax.Array | None,
              action: actions_lib.Action, padding: str = "SAME", dtype: Any = jnp.float32,
              impl: str = "auto", relu_pool: int = 0) -> jax.Array:
  """The input lift of a conv: ``x [B, H, W, C_in] -> [B, H, W, |G|, F]``, slot g = ``conv(g^-1 . x)``.

  ``kernel [k, k, C_in, F]``, ``bias [F] or None``; ``action`` moves the pixels of x. The
  same for sequences: ``x [B, L, C_in]``, ``kernel [k, C_in, F]`` -> ``[B, L, |G|, F]``.
  ``relu_pool`` >= 1: ReLU and max pooling of that window applied to each slot (per channel,
  so still the lift of a map, the block ``max_pool . relu . conv``), run fused
  (:func:`eqnn.spatial.conv_relu_pool`): by "auto" and ``"kernels"`` once with the turned
  kernels, each pooled slot then turned into its own frame, where the elements are turns and
  mirrors of the grid and the window tiles the map; in the ``"vmap"`` form (and by "auto"
  otherwise) over the |G| turned copies of the image.
  """
  turned = lift_pools_turned(impl, x, kernel, action, padding, relu_pool)
  impl = resolve_impl(impl, "lift_conv", action.group)
  require_float(x, "lift_conv")
  n = action.group.order
  if relu_pool:
    if turned:
      return lift_relu_pool_turned(x, kernel, bias, action, padding, dtype, relu_pool)
    if impl == "vmap" and x.ndim == 4:
      return _on_copies(lambda c: conv_relu_pool(c, kernel, bias, relu_pool, padding, dtype),
                        action, x)
    return max_pool(jax.nn.relu(lift_conv(x, kernel, bias, action, padding, dtype, impl)),
                    relu_pool)
  if impl == "kernels":
    return _lift_conv_kernels(x, kernel, bias, action, padding, dtype)
  if impl == "vmap":
    return _on_copies(lambda c: _add_bias(conv(c, kernel, padding, dtype), bias, dtype),
                      action, x)
  copies = lift_lib.lift_inputs(action, x)                            # [G, B, H, W, C]
  if impl == "patches":
    # Windows of the copies laid out [B, ..., |G|, k^d, C_in]: one matmul then writes the
    # output in its own layout [B, ..., |G|, F], with no transpose of the (large) output.
    w = patches(_slots_last(copies), kernel.shape[0], kernel.ndim - 2, padding)
    y = w.reshape(w.shape[:-2] + (-1,)).astype(dtype) @ kernel.reshape(
        -1, kernel.shape[-1]).astype(dtype)
    return _add_bias(y, bias, dtype)
  # One grouped conv: input block g feeds only output block g, with the same kernel.
  y = conv(to_channels(_slots_last(copies)), jnp.tile(kernel, (1,) * (kernel.ndim - 1) + (n,)),
           padding, dtype, feature_groups=n)
  return from_channels(_add_bias_stacked(y, bias, n, dtype), n)


def lift_pools_turned(impl, x, kernel, action, padding="SAME", relu_pool=0) -> bool:
  """Whether :func:`lift_conv` with these arguments runs its block by the turned kernels
  (``impl`` "auto" or "kernels", :func:`eqnn.gcnn.pools_in_turned_frames`)."""
  return (bool(relu_pool) and _named(impl, "lift_conv") in ("auto", "kernels")
          and pools_in_turned_frames(x, kernel, action, padding, relu_pool))


def _lift_conv_kernels(x, kernel, bias, action, padding, dtype):
  # Slot g is conv(g^-1 . x, W) = g^-1 . conv(x, g . W) for a grid isometry g: the G-CNN
  # lift (one conv with the |G| turned kernels side by side), each slot then turned into
  # its own frame. Exact actions only: a resampled turn of the output is not the lift.
  image_actions.kernel_table(action, kernel.shape[0])         # raises for anything else
  return _add_bias(to_own_frames(gcnn_lift_conv(x, kernel, None, action, padding, dtype),
                                 action), bias, dtype)


def group_conv(y: jax.Array, kernel: jax.Array, bias: jax.Array | None, group: FiniteGroup,
               padding: str = "SAME", dtype: Any = jnp.float32, impl: str = "auto") -> jax.Array:
  """A conv on the stack lifted over the regular action: ``[B, H, W, |G|, C] -> [B, H, W, |G|, F]``.

  ``kernel [k, k, |G| * C, F]`` (the plain conv on the channel-stacked input), slot g is
  ``conv(to_channels(g^-1 . y))``. Sequences likewise: ``y [B, L, |G|, C]``,
  ``kernel [k, |G| * C, F]``.

  >>> import jax
  >>> from eqnn import groups, testing
  >>> d4 = groups.dihedral(4)
  >>> y = jax.random.normal(jax.random.key(0), (2, 6, 6, 8, 3))      # [B, H, W, |G|, C]
  >>> k = jax.random.normal(jax.random.key(1), (3, 3, 8 * 3, 5))
  >>> group_conv(y, k, None, d4).shape
  (2, 6, 6, 8, 5)
  >>> _ = testing.assert_equivariant(lambda y: group_conv(y, k, None, d4),
  ...                                block_action(d4), block_action(d4), y)
  """
  impl = resolve_impl(impl, "group_conv", group)
  n = group.order
  one = lambda a, w: conv(a, w, padding, dtype)
  if impl == "vmap":
    return _on_copies(lambda c: _add_bias(one(to_channels(c), kernel), bias, dtype),
                      block_action(group), y)
  if impl == "fourier":
    spatial = kernel.shape[:-2]
    kb = jnp.moveaxis(kernel.reshape(spatial + (n, -1, kernel.shape[-1])), len(spatial), 0)
    out = to_channels(_fourier_apply(y, kb, group, one, axis=-2))
  else:
    out = one(to_channels(y), block_circulant(kernel, group, -2, -1))
  return from_channels(_add_bias_stacked(out, bias, n, dtype), n)


def group_dense(y: jax.Array, kernel: jax.Array, bias: jax.Array | None, group: FiniteGroup,
                dtype: Any = jnp.float32, impl: str = "auto") -> jax.Array:
  """A dense layer on the flattened stack lifted over the regular action.

  ``y [B, ..., |G|, C] -> [B, |G|, F]``; ``kernel [S * |G| * C, F]`` with S the product of
  the spatial axes (the plain dense layer on ``to_channels(y)`` flattened); slot g is
  ``dense(flatten(g^-1 . y))``.
  """
  impl = resolve_impl(impl, "group_dense", group)
  n = group.order
  b, c, f = y.shape[0], y.shape[-1], kernel.shape[-1]
  spatial = int(np.prod(y.shape[1:-2]))
  y = y.reshape(b, spatial, n, c).astype(dtype)
  k3 = kernel.reshape(spatial, n * c, f).astype(dtype)
  if impl == "vmap":
    copies = lift_lib.lift_inputs(block_action(group), y)             # [G, B, S, G, C]
    out = jnp.einsum("gbsc,sco->bgo", copies.reshape(n, b, spatial, n * c), k3)
  elif impl == "fourier":
    # Group axis first, each input block's weights apart: x [G, B, S C], kb [G, S C, F].
    x = jnp.moveaxis(y, 2, 0).reshape(n, b, spatial * c)
    kb = jnp.moveaxis(k3.reshape(spatial, n, c, f), 1, 0).reshape(n, spatial * c, f)
    out = jnp.moveaxis(_fourier_apply(x, kb, group, lambda a, w: a @ w), 0, 1)
  else:
    e = block_circulant(k3, group, 1, 2)                               # [S, G*C, G*F]
    out = (y.reshape(b, -1) @ e.reshape(-1, n * f)).reshape(b, n, f)
  return _add_bias(out, bias, dtype)
