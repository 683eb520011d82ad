"""Readouts of lifted logits, and the joint labels they are trained on: in one place.

A lifted classifier returns ``logits [B, |G|, K]``: slot ``[g, m]`` scores "class m seen at
group element g". For an input ``x' = g . x`` of class m, the lift's slot g holds
``F(g^-1 . x') = F(x)``, the upright view (eqnn/lift.py), so the **joint label** is
``(g, m)``, flattened as ``g * K + m`` over the ``|G| * K`` joint logits.

* :func:`class_logits` forgets the group element by a symmetric reduction over the group
  axis: exactly G-**invariant**.
* :func:`element_logits` forgets the class: G-**equivariant** (G permutes the result by its
  regular action, :func:`eqnn.actions.regular` on axis -1).
* :func:`joint_logits` keeps both, flattened, for a cross entropy with joint labels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from eqnn import lift as lift_lib


def joint_labels(classes, elements, num_classes: int):
  """The joint target ``g * num_classes + m`` for class m shown at group element g.

  >>> import numpy as np
  >>> joint_labels(np.array([7, 7]), np.array([0, 3]), 10).tolist()   # a 7, upright and at r^3
  [7, 37]
  >>> [x.tolist() for x in decode_joint(np.array([7, 37]), 10)]
  [[0, 3], [7, 7]]
  """
  return elements * num_classes + classes


def decode_joint(joint, num_classes: int):
  """``(g, m)`` from a joint index ``g * num_classes + m``."""
  return joint // num_classes, joint % num_classes


def joint_logits(logits: jax.Array) -> jax.Array:
  """``[B, |G|, K] -> [B, |G| * K]``, slot ``g * K + m``."""
  return logits.reshape(logits.shape[:-2] + (-1,))


def class_logits(logits: jax.Array, reduce: str = "logsumexp") -> jax.Array:
  """``[B, |G|, K] -> [B, K]``: class scores that forget the group element (G-invariant).

  >>> import jax.numpy as jnp
  >>> from eqnn import actions, groups
  >>> z = jnp.arange(12.0).reshape(1, 4, 3)
  >>> moved = actions.regular(groups.cyclic(4), axis=-2)(1, z)   # G moves the group axis
  >>> bool(jnp.allclose(class_logits(moved), class_logits(z)))   # the readout does not move
  True
  """
  return lift_lib.invariant(logits, reduce, axis=-2)


def element_logits(logits: jax.Array) -> jax.Array:
  """``[B, |G|, K] -> [B, |G|]``: group-element scores that forget the class (equivariant)."""
  return jax.nn.logsumexp(logits, axis=-1)


def predictions(logits) -> dict[str, np.ndarray]:
  """``{"joint", "class", "element"}`` argmax predictions (host numpy) from ``[B, |G|, K]``."""
  logits = jnp.asarray(logits)
  return {"joint": np.asarray(joint_logits(logits).argmax(-1)),
          "class": np.asarray(class_logits(logits).argmax(-1)),
          "element": np.asarray(element_logits(logits).argmax(-1))}
