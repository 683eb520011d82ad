"""eqnn: equivariant neural networks by equivarification (lifting a map to functions on a group).

The public API, in one place::

    import eqnn
    G = eqnn.groups.dihedral(4)
    act = eqnn.actions.rotations_reflections()          # D4 on square images [..., H, W, C]
    f_hat = eqnn.equivarify(f, act)                     # f_hat(x)[g] = f(g^-1 . x)
    eqnn.project(f_hat(x))                              # == f(x)
    eqnn.testing.assert_equivariant(f_hat, act, eqnn.actions.regular(G), x)
"""

from eqnn import actions
from eqnn import groups
from eqnn import testing
from eqnn.lift import equivarify, equivarify_minimal, expand_minimal, invariant, project

__all__ = [
    "actions", "groups", "testing",
    "equivarify", "equivarify_minimal", "expand_minimal", "invariant", "project",
]
__version__ = "0.1.0"
