"""Finite groups: every axiom exhaustively, the named constructions, subgroups and cosets."""

import itertools

import numpy as np
import pytest

from eqnn import groups
from eqnn.groups import GroupAxiomError

SMALL_GROUPS = [
    groups.cyclic(1), groups.cyclic(2), groups.cyclic(4), groups.cyclic(5),
    groups.dihedral(3), groups.dihedral(4), groups.dihedral(6),
    groups.direct_product(groups.cyclic(2), groups.cyclic(3)),
    groups.direct_product(groups.dihedral(4), groups.cyclic(2)),
    groups.symmetric(3)[0], groups.symmetric(4)[0],
]


@pytest.mark.parametrize("g", SMALL_GROUPS, ids=lambda g: g.name)
def test_group_axioms_exhaustively(g):
  n = g.order
  t = g.table
  assert t.shape == (n, n)
  for a in range(n):
    assert t[0, a] == a and t[a, 0] == a                         # identity is element 0
    assert t[a, g.inverse[a]] == 0 and t[g.inverse[a], a] == 0   # inverses
    assert sorted(t[a]) == list(range(n))                        # Latin square (closure)
  for a, b, c in itertools.product(range(n), repeat=3):
    assert t[t[a, b], c] == t[a, t[b, c]]                        # associativity
  assert len(set(g.element_names)) == n and g.element_names[0] == "e"
  g.check()


def test_orders_and_commutativity():
  assert [groups.cyclic(n).order for n in (1, 2, 4, 7)] == [1, 2, 4, 7]
  assert groups.dihedral(4).order == 8 and not groups.dihedral(4).is_abelian
  assert groups.cyclic(6).is_abelian
  s4, perms = groups.symmetric(4)
  assert s4.order == 24 and perms.shape == (24, 4)
  assert groups.direct_product(groups.cyclic(2), groups.dihedral(3)).order == 12


def test_dihedral_relations_and_names():
  d4 = groups.dihedral(4)
  r, f = d4.index("r"), d4.index("f")
  assert d4.element_names == ("e", "r", "r^2", "r^3", "f", "f r", "f r^2", "f r^3")
  assert d4.element_order(r) == 4 and d4.element_order(f) == 2
  assert d4.mul(r, f) == d4.mul(f, d4.inv(r))      # r f = f r^-1
  assert d4.mul(f, r) == d4.index("f r")
  with pytest.raises(ValueError, match="no element named"):
    d4.index("q")


def test_cyclic_names_and_product():
  c4 = groups.cyclic(4)
  assert c4.element_names == ("e", "r", "r^2", "r^3")
  assert c4.mul(1, 3) == 0 and c4.inv(1) == 3
  p = groups.direct_product(groups.cyclic(2), groups.cyclic(3))
  assert p.element_names[0] == "e" and p.element_names[5] == "(r, r^2)"
  # (i, j) * (k, l) = (i + k, j + l) componentwise.
  assert p.mul(p.index("(r, r)"), p.index("(r, r^2)")) == p.index("e")


def test_from_permutations_composes_as_maps():
  g, perms = groups.from_permutations([[1, 0, 2], [0, 2, 1]], name="S3")
  assert g.order == 6 and np.array_equal(perms[0], [0, 1, 2])
  for a, b in itertools.product(range(6), repeat=2):
    assert np.array_equal(perms[g.table[a, b]], perms[a][perms[b]])


def test_from_permutations_refuses_non_permutations():
  with pytest.raises(ValueError, match="not a permutation"):
    groups.from_permutations([[0, 0, 1]])


def test_equal_groups_hash_equal():
  assert groups.cyclic(4) == groups.cyclic(4)
  assert hash(groups.dihedral(4)) == hash(groups.dihedral(4))
  assert groups.cyclic(4) != groups.dihedral(2)


@pytest.mark.parametrize("table, match", [
    ([[0, 1], [1, 2]], "closure fails: table\\[1, 1\\] = 2"),
    ([[1, 0], [0, 1]], "identity fails: .*element 1 is the identity"),
    ([[0, 1, 2], [1, 1, 1], [2, 1, 0]], "inverses fail: element 1"),
    ([[0, 1], [1, 1]], "inverses fail: element 1"),
    ([[0, 1]], "square"),
    ([[0.0, 1.0], [1.0, 0.0]], "integers"),
])
def test_non_groups_are_refused_naming_the_axiom(table, match):
  with pytest.raises(GroupAxiomError, match=match):
    groups.from_cayley_table(np.asarray(table))


def test_non_associative_latin_square_is_refused():
  # A loop of order 5 with identity and two-sided inverses that is not associative.
  t = np.array([[0, 1, 2, 3, 4],
                [1, 0, 3, 4, 2],
                [2, 4, 0, 1, 3],
                [3, 2, 4, 0, 1],
                [4, 3, 1, 2, 0]])
  with pytest.raises(GroupAxiomError, match=r"associativity fails: \(\d\*\d\)\*\d"):
    groups.from_cayley_table(t)


def test_table_round_trip():
  d3 = groups.dihedral(3)
  again = groups.from_cayley_table(d3.table, d3.element_names, name="D3")
  assert again == d3


@pytest.mark.parametrize("g", SMALL_GROUPS, ids=lambda g: g.name)
def test_cosets_partition_the_group(g):
  for gens in ([], [1 % g.order], [g.order - 1]):
    h = g.generated_subgroup(gens)
    assert g.order == h.order * h.index                          # Lagrange
    assert h.coset_of[0] == 0 and h.representatives[0] == 0
    for c, rep in enumerate(h.representatives):
      members = {int(g.table[rep, e]) for e in h.elements}       # rep H
      assert {i for i in range(g.order) if h.coset_of[i] == c} == members
      assert rep == min(members)


def test_subgroup_refusals():
  d4 = groups.dihedral(4)
  with pytest.raises(GroupAxiomError, match="identity"):
    d4.subgroup([1, 2, 3])
  with pytest.raises(GroupAxiomError, match="inverse of 1"):
    d4.subgroup([0, 1])
  with pytest.raises(GroupAxiomError, match="is not in"):
    d4.subgroup([0, 2, 4])   # r^2 f = f r^2, missing
  with pytest.raises(ValueError, match="indices"):
    d4.subgroup([0, 9])
  assert d4.subgroup([0, 2, 4, 6]).index == 2
  assert d4.generated_subgroup([d4.index("r")]).elements == (0, 1, 2, 3)


def test_coset_permutations_are_a_left_action():
  d4 = groups.dihedral(4)
  h = d4.subgroup([0, 4])          # {e, f}: not normal, so left cosets matter
  perm = h.coset_permutations()
  for a, b in itertools.product(range(8), repeat=2):
    # (ab).s = a.(b.s)  <=>  perm[ab] = perm[b][perm[a]] for gathers s[perm[.]].
    assert np.array_equal(perm[d4.table[a, b]], perm[b][perm[a]])


def test_groups_are_equal_by_their_table_not_their_names():
  """Groups are jit static arguments and cache keys: equal means the same table."""
  a = groups.cyclic(4)
  renamed = groups.from_cayley_table(a.table, ["e", "a", "b", "c"], name="Z4")
  assert a == renamed and hash(a) == hash(renamed)
  klein = groups.direct_product(groups.cyclic(2), groups.cyclic(2))
  assert a != klein and a != groups.dihedral(2)
  # Same order, other table: not equal (D3 and C6).
  assert groups.dihedral(3) != groups.cyclic(6)


def test_lights_test_catches_a_loop_that_is_not_a_group():
  """The smallest non-associative loop: a Latin square with identity and inverses."""
  loop = [[0, 1, 2, 3, 4], [1, 0, 3, 4, 2], [2, 4, 0, 1, 3], [3, 2, 4, 0, 1], [4, 3, 1, 2, 0]]
  with pytest.raises(GroupAxiomError, match="associativity fails"):
    groups.from_cayley_table(loop)
  with pytest.raises(GroupAxiomError, match="associativity fails"):
    groups.check_group_axioms(np.asarray(loop), full=True)


@pytest.mark.parametrize("make", [lambda: groups.dihedral(6), lambda: groups.symmetric(4)[0],
                                  lambda: groups.direct_product(groups.cyclic(3),
                                                                groups.dihedral(3))])
def test_lights_test_agrees_with_the_full_check(make):
  g = make()
  groups.check_group_axioms(g.table, g.inverse, full=True)
  gens = groups.generators(g.table)
  assert g.generated_subgroup(gens).order == g.order and len(gens) <= 3


def test_groups_of_thousands_build_with_narrow_tables():
  s7 = groups.symmetric(7)[0]
  assert s7.order == 5040 and s7.table.dtype == np.int16 and not s7.is_abelian
  c4s6 = groups.direct_product(groups.cyclic(4), groups.symmetric(6)[0])
  assert c4s6.order == 2880 and c4s6.table.dtype == np.int16
  assert groups.cyclic(4).table.dtype == np.int8
  # Inverses and the table agree everywhere (checked row by row, no n^3 array).
  assert np.all(s7.table[np.arange(5040), s7.inverse] == 0)
