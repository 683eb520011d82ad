"""Subgroups H of a finite group G and the left cosets G/H (for the minimal lift).

Part of :mod:`eqnn.groups` (import ``Subgroup`` from there, or make one with
``group.subgroup(elements)``).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from eqnn.groups import FiniteGroup, GroupAxiomError


@dataclasses.dataclass(frozen=True, eq=False)
class Subgroup:
  """A subgroup H of G with its left cosets G/H.

  Attributes:
    group: the ambient group G.
    elements: sorted indices in G of H's elements (0 first).
    name: readable name.
    representatives: ``int32 [|G/H|]``, one element g per left coset gH, the smallest
      index of the coset, so the coset of the identity (H itself) comes first.
    coset_of: ``int32 [|G|]``, ``coset_of[g]`` is the index of the coset gH.
  """

  group: FiniteGroup
  elements: tuple[int, ...]
  name: str
  representatives: np.ndarray
  coset_of: np.ndarray

  @classmethod
  def of(cls, group: FiniteGroup, elements: Sequence[int], name: str | None = None):
    elements = sorted({int(e) for e in elements})
    if not elements or any(e < 0 or e >= group.order for e in elements):
      raise ValueError(f"subgroup elements must be indices in [0, {group.order}), got {elements}")
    es = set(elements)
    if 0 not in es:
      raise GroupAxiomError(f"not a subgroup: {elements} does not contain the identity 0")
    for a in elements:
      if int(group.inverse[a]) not in es:
        raise GroupAxiomError(f"not a subgroup: the inverse of {a} ({group.inverse[a]}) is missing")
      for b in elements:
        if int(group.table[a, b]) not in es:
          raise GroupAxiomError(
              f"not a subgroup: {a}*{b} = {group.table[a, b]} is not in {elements}")
    coset_of = -np.ones(group.order, np.int32)
    reps = []
    for g in range(group.order):
      if coset_of[g] < 0:
        members = group.table[g, elements]
        coset_of[members] = len(reps)
        reps.append(g)
    if name is None:
      name = "{" + ", ".join(group.element_names[e] for e in elements) + "}"
    return cls(group, tuple(elements), name, np.asarray(reps, np.int32), coset_of)

  @property
  def order(self) -> int:
    return len(self.elements)

  @property
  def index(self) -> int:
    """[G : H], the number of left cosets."""
    return len(self.representatives)

  def __hash__(self):
    return hash((self.group, self.elements))

  def __eq__(self, other):
    return isinstance(other, Subgroup) and (self.group, self.elements) == (other.group, other.elements)

  def coset_permutations(self) -> np.ndarray:
    """``int32 [|G|, |G/H|]``: row k is the action of k on maps s: G/H -> Z.

    ``(k.s)(gH) = s(k^-1 g H)``, so ``(k.s)[c] = s[perm[k, c]]`` with
    ``perm[k, c] = coset_of[table[k^-1, rep[c]]]``.
    """
    g = self.group
    return self.coset_of[g.table[g.inverse][:, self.representatives]]
