"""G-CNN layers (Cohen & Welling 2016): every slot's map in the image's frame, kernels turned.

Regular feature fields ``[B, H, W, |G|, C]`` on which G turns every slot's map and moves the
slots (:class:`TurnedBlocks`), so features of all slots at one pixel describe the same place
of the image, and the layers commute with translations too. The paper's stacking
(:mod:`eqnn.ops`) keeps each slot in its own frame instead, where hidden layers see only slot
moves; :func:`to_own_frames` converts, so a network can run G-CNN convs and then the paper's
head. A G-CNN conv turns its kernels (:func:`kernel_turns`: exactly for quarter turns and
mirrors, by resampling for other angles with the quarter turns kept exact) and costs
|G|^2 C_in C_out multiply-adds per pixel, as the expanded form of
:func:`eqnn.ops.group_conv` does. The G-CNN conv is equivarification too: the lift of the
plain conv on the stack under :class:`TurnedBlocks` is the G-CNN conv turned into own frames
(``tests/gcnn_test.py``). Re-exported by :mod:`eqnn.ops` (``ops.gcnn_conv``, ...) and, for
:class:`TurnedBlocks`, by :mod:`eqnn.actions`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from eqnn import image_actions, taps
from eqnn.actions import Action, _gather
from eqnn.groups import FiniteGroup
from eqnn.spatial import add_bias, conv, conv_relu_pool, require_float


def kernel_turns(action, k: int) -> np.ndarray:
  """``float32 [|G|, k * k, k * k]``: how ``action`` turns a ``k x k`` conv kernel,
  ``(g . W).flat[p] = sum_q M[g, p, q] W.flat[q]``, for G-CNN layers (:func:`gcnn_conv`).

  An exact isometry of the pixel grid (quarter turns and mirrors: C2, C4, D4) is a
  permutation matrix (:func:`eqnn.image_actions.kernel_table`); resampled turns (C_n, D_n,
  :class:`eqnn.image_actions.ResampledTurns`) resample the kernel as they do images
  (disk-masked, so a 5 x 5 kernel loses its corners; approximate), with the quarter turns
  built as ``rot90`` of the others, so they stay exact. Translations, which carry pixels
  across the border, raise.
  """
  if isinstance(action, image_actions.ResampledTurns):
    idx, wts = image_actions._turn_tables(action.n, action.reflections, k,
                                          action.interpolation)
    m = np.zeros((idx.shape[0], k * k, k * k), np.float32)
    g, p, _ = np.indices(idx.shape)
    np.add.at(m, (g, p, idx), wts)        # taps off the grid were clipped and weigh 0
    return m
  return np.eye(k * k, dtype=np.float32)[image_actions.kernel_table(action, k)]


@dataclasses.dataclass(frozen=True)
class TurnedBlocks(Action):
  """G on a G-CNN feature map ``[..., H, W, |G|, C]`` (Cohen & Welling's regular feature
  fields), every slot's map in the image's frame: g turns every slot's map by
  ``image_action`` and moves the slots by the regular action, ``(g . y)[h] = g . y[g^-1 h]``.

  The paper's stacking keeps each slot in its own frame instead, where g only moves slots
  (:func:`eqnn.ops.block_action`); :func:`to_own_frames` goes from this layout to
  that one. Approximate where ``image_action`` is (resampled turns).
  """

  image_action: Action

  @property
  def group(self) -> FiniteGroup:
    return self.image_action.group

  @property
  def approximate(self) -> bool:
    return bool(getattr(self.image_action, "approximate", False))

  def validate(self, y):
    n = self.group.order
    if y.ndim < 4 or y.shape[-2] != n:
      raise ValueError(f"a G-CNN feature map of {self.group.name} is [..., H, W, |G| = {n}, C], "
                       f"got shape {y.shape}")
    self.image_action.validate(y.reshape(y.shape[:-2] + (-1,)))

  def example_shape(self):
    h = self.image_action.example_shape()[0]
    return (h, h, self.group.order, 2)

  def apply(self, g, y):
    turned = self.image_action.apply(g, y.reshape(y.shape[:-2] + (-1,))).reshape(y.shape)
    return _gather(turned, self.group.regular_permutations(), g, y.ndim - 2, 1)



class LiftsToTurnedBlocks:
  """Declared actions of a G-CNN input lift: G acts on the input by ``self.action`` and on the
  output ``[B, H, W, |G|, C]`` by :func:`gcnn_action` (turning every slot's map, moving slots)."""

  @property
  def in_action(self) -> Action:
    return self.action

  @property
  def out_action(self) -> Action:
    return gcnn_action(self.action)


class ActsOnTurnedBlocks:
  """Declared actions of a G-CNN layer from one G-CNN map to another: :func:`gcnn_action`
  of ``self.action`` on both sides."""

  @property
  def in_action(self) -> Action:
    return gcnn_action(self.action)

  @property
  def out_action(self) -> Action:
    return gcnn_action(self.action)


def gcnn_action(action: Action) -> Action:
  """G on a G-CNN feature map ``[B, H, W, |G|, C]`` whose input images move by ``action``."""
  return TurnedBlocks(action)


def turn_kernels(kernel: jax.Array, action: Action) -> jax.Array:
  """``[k, k, ...] -> [|G|, k, k, ...]``: slot g is the kernel turned by g
  (:func:`kernel_turns`: exact for quarter turns and mirrors, resampled
  for other angles, bit for bit ``rot90`` of a resampled turn where 4 | n)."""
  k = kernel.shape[0]
  if kernel.ndim < 2 or kernel.shape[1] != k:
    raise ValueError(f"turning kernels needs square 2-D kernels [k, k, ...], got shape "
                     f"{kernel.shape}")
  m = jnp.asarray(kernel_turns(action, k), kernel.dtype)  # [G, k*k, k*k]
  flat = kernel.reshape((k * k, -1))
  out = jnp.einsum("gpq,qc->gpc", m, flat, precision=jax.lax.Precision.HIGHEST)
  return out.reshape((m.shape[0],) + kernel.shape)


def _turns_keep_padding(kernel, padding) -> bool:
  """Whether a turn of the grid keeps the conv's padding: VALID, or SAME with an odd kernel
  (an even one pads one side more)."""
  return padding != "SAME" or kernel.shape[0] % 2 == 1


def _check_gcnn_kernel(kernel, padding, what):
  if kernel.ndim != 4:
    raise ValueError(f"{what} is for 2-D convs on images: kernel [k, k, C_in, F], got shape "
                     f"{kernel.shape}")
  if not _turns_keep_padding(kernel, padding):
    raise ValueError(f"{what} needs an odd kernel with SAME padding (a {kernel.shape[0]} x "
                     f"{kernel.shape[0]} kernel pads one side more, which a turn does not "
                     f"keep); use an odd kernel or VALID padding")


def gcnn_lift_conv(x: jax.Array, kernel: jax.Array, bias: jax.Array | None,
                   action: Action, padding: str = "SAME",
                   dtype: Any = jnp.float32, relu_pool: int = 0) -> jax.Array:
  """The G-CNN input lift: ``x [B, H, W, C_in] -> [B, H, W, |G|, F]``, slot g = ``conv(x, g . W)``
  (one conv with the |G| turned kernels side by side; G acts on the output by
  :func:`gcnn_action`). ``to_own_frames`` of it is :func:`eqnn.ops.lift_conv`'s
  ``conv(g^-1 . x, W)`` wherever ``action`` is exact (quarter turns, mirrors).
  ``relu_pool`` >= 1: ReLU and max pooling of that window applied, the block run fused
  (:func:`eqnn.spatial.conv_relu_pool`); equivariant under :func:`gcnn_action` where the
  window tiles the map."""
  require_float(x, "gcnn_lift_conv")
  _check_gcnn_kernel(kernel, padding, "gcnn_lift_conv")
  x = action.prepare(x)
  k, _, c_in, f = kernel.shape
  n = action.group.order
  turned = turn_kernels(kernel, action)                                 # [G, k, k, C, F]
  stacked = jnp.moveaxis(turned, 0, -2).reshape(k, k, c_in, n * f)
  if relu_pool:
    z = conv_relu_pool(x, stacked, None if bias is None else jnp.tile(bias, n), relu_pool,
                       padding, dtype)
    return z.reshape(z.shape[:-1] + (n, f))
  z = conv(x, stacked, padding, dtype)
  return add_bias(z.reshape(z.shape[:-1] + (n, f)), bias, dtype)


def pools_in_turned_frames(x, kernel, action, padding, window) -> bool:
  """Whether the block ``max_pool . relu . lift`` may pool each slot in the image's frame and
  turn it afterwards: images, every element a turn or mirror of the grid about its centre,
  a kernel whose padding a turn keeps, and a window of at least 2 that tiles the conv's
  output. (With no pooling the turned output is the full-resolution map: the authors' V1,
  its lift 1 -> 80 per element, ran its step 0.95x so; scratch, 2026-12-04.)"""
  if (x.ndim != 4 or window < 2 or not isinstance(action, image_actions.ImageAction)
      or not _turns_keep_padding(kernel, padding)):
    return False
  k = kernel.shape[0]
  h, w = (x.shape[1], x.shape[2]) if padding == "SAME" else (x.shape[1] - k + 1,
                                                             x.shape[2] - k + 1)
  return (h % window == 0 and w % window == 0
          and image_actions._centre_isometries(action.group, action.pixel_map))


def lift_relu_pool_turned(x, kernel, bias, action, padding, dtype, window):
  """:func:`eqnn.ops.lift_conv`'s block ``max_pool . relu . lift`` by turned kernels, where
  :func:`pools_in_turned_frames`: ``[B, H / window, W / window, |G|, F]``, each slot in its
  own frame."""
  # The G-CNN lift's block (one conv of the |G| turned kernels side by side, its ReLU and
  # pooling in one op, eqnn.spatial.conv_relu_pool), each slot's pooled map then turned into
  # its own frame by rot90s and flips (ImageAction.apply of a known element; a loop, since a
  # vmap over the elements would trace them and gather, its gradient a scatter): the same
  # values as turning the image |G| times first, since pooling commutes with a turn whose
  # windows tile the map. Where a window's maximum is tied, its derivative may go to another
  # of the tied entries (each is a subgradient). One block of |G| F channels instead of |G|
  # blocks of F: the paper's stacking 1.05x and over D4 1.07x (`python -m experiments.bench
  # --only=lift_forms`, 2-core Intel Xeon, 2026-12-04; d4.py's network 1.33-1.41x, scratch).
  # The turns kept apart (eqnn.taps._kept, a conditional no fusion crosses), so XLA does not
  # fold the turned reads of the cotangent into the block's backward loops (the block alone
  # 1.5x faster, D4's step 1.04-1.05x more; scratch).
  z = gcnn_lift_conv(x, kernel, bias, action, padding, dtype, window)
  inverse = action.group.inverse
  turn = lambda z: jnp.stack([action.apply(int(inverse[h]), z[..., h, :])
                              for h in range(len(inverse))], -2)
  return taps._kept(turn, kernel, z)


def gcnn_conv(y: jax.Array, kernel: jax.Array, bias: jax.Array | None,
              action: Action, padding: str = "SAME",
              dtype: Any = jnp.float32) -> jax.Array:
  """A G-CNN group conv: ``[B, H, W, |G|, C] -> [B, H, W, |G|, F]``, both in the image's frame.

  ``kernel [k, k, |G| * C, F]`` (block j holds W_j, the weights for input slot j of output
  slot e, shaped like :func:`eqnn.ops.group_conv`'s kernel, so slot e is the plain conv of
  the stack):
  slot h is ``sum_j conv(y[j], h . W_{h^-1 j})``, one conv with the expanded turned weights.
  """
  require_float(y, "gcnn_conv")
  _check_gcnn_kernel(kernel, padding, "gcnn_conv")
  gact = gcnn_action(action)
  gact.validate(y)
  group, n = action.group, action.group.order
  k, _, nc, f = kernel.shape
  if nc != n * y.shape[-1]:
    raise ValueError(f"gcnn_conv: kernel of shape {kernel.shape} needs |G| * C = "
                     f"{n * y.shape[-1]} input channels for a map of shape {y.shape}")
  c = nc // n
  turned = turn_kernels(kernel.reshape(k, k, n, c, f), action)          # [G(h), k, k, G(j), C, F]
  rel = group.table[group.inverse[:, None], np.arange(n)[None, :]]      # [h, i] -> h^-1 i
  blocks = jnp.moveaxis(turned, 3, 1)[np.arange(n)[:, None], rel]       # [h, i, k, k, C, F]
  w = jnp.transpose(blocks, (2, 3, 1, 4, 0, 5)).reshape(k, k, nc, n * f)
  z = conv(y.reshape(y.shape[:-2] + (-1,)), w, padding, dtype)
  return add_bias(z.reshape(z.shape[:-1] + (n, f)), bias, dtype)


def to_own_frames(y: jax.Array, action: Action) -> jax.Array:
  """``[B, H, W, |G|, C]`` from the image's frame (:func:`gcnn_action`) into each slot's own
  frame (:func:`eqnn.ops.block_action`, the paper's stacking): slot h turned by h^-1. Exact where
  ``action`` is; resampled (approximate) for other angles."""
  gcnn_action(action).validate(y)
  inverses = jnp.asarray(action.group.inverse, jnp.int32)
  return jax.vmap(action.apply, in_axes=(0, -2), out_axes=-2)(inverses, y)
