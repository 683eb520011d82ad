"""eqnn: equivariant neural networks by equivarification (lifting a map to functions on a group).

The public API, in one place:

>>> import jax, jax.numpy as jnp
>>> import eqnn
>>> act = eqnn.actions.rotations_reflections()      # D4 on square images [..., H, W, C]
>>> f = lambda x: jnp.stack([x[0, 0, 0], x[0, -1, 0]])   # any map; not equivariant
>>> f_hat = eqnn.equivarify(f, act)                 # f_hat(x)[g] = f(g^-1 . x)
>>> x = jax.random.normal(jax.random.key(0), (4, 4, 1))
>>> f_hat(x).shape                                  # a group axis in front
(8, 2)
>>> bool(jnp.all(eqnn.project(f_hat(x)) == f(x)))   # p . F_hat = F
True
>>> err = eqnn.testing.assert_equivariant(f_hat, act, eqnn.actions.regular(act.group), x)
>>> err.max_abs                                     # exact: a permutation of entries
0.0

Core modules (jax and numpy only): :mod:`eqnn.groups`, :mod:`eqnn.actions`,
:mod:`eqnn.lift`, :mod:`eqnn.ops`, :mod:`eqnn.gcnn`, :mod:`eqnn.fourier`, :mod:`eqnn.readouts`,
:mod:`eqnn.testing`, :mod:`eqnn.data`, :mod:`eqnn.report`, :mod:`eqnn.export`. Flax modules
(the ``layers`` extra): :mod:`eqnn.layers`, :mod:`eqnn.models`, :mod:`eqnn.nnx_modules`.
"""

from eqnn import actions
from eqnn import groups
from eqnn import testing
from eqnn.lift import (equivarify, equivarify_minimal, equivarify_nested, expand_minimal,
                       invariant, lift_inputs, project, symmetrize)

__all__ = [
    "actions", "groups", "testing",
    "equivarify", "equivarify_minimal", "equivarify_nested", "expand_minimal", "invariant",
    "lift_inputs", "project", "symmetrize",
]
__version__ = "0.1.0"
