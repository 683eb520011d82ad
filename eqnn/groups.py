"""Finite groups as static data: a Cayley table, an inverse table and element names.

A group never enters a traced computation as anything but constant index tables, so it
is built and checked once, in numpy, and is hashable so that a jitted function may close
over it. Element 0 is always the identity.

Convention: ``table[a, b]`` is the index of the product ``a b`` (first b, then a when
the elements act on something on the left).

Scale: tables are stored in the narrowest signed integer type that holds the order (int8 up
to 127 elements, int16 up to 32,767), and the axioms are checked in O(n^2 |S|) time and
O(n^2) memory, S a generating set (Light's associativity test), so groups of ten thousand
elements build in seconds.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from typing import Sequence

import numpy as np


class GroupAxiomError(ValueError):
  """A multiplication table that is not a group; the message names the axiom and where."""


@dataclasses.dataclass(frozen=True, eq=False)
class FiniteGroup:
  """A finite group of order n given by its Cayley table.

  Attributes:
    name: a readable name, e.g. ``"C4"`` or ``"D4"``.
    table: ``int32 [n, n]``, ``table[a, b] = a b``; element 0 is the identity.
    inverse: ``int32 [n]``, ``inverse[a] = a^-1``.
    element_names: readable names, e.g. ``("e", "r", "r^2", "f r")``.
  """

  name: str
  table: np.ndarray
  inverse: np.ndarray
  element_names: tuple[str, ...]

  def __post_init__(self):
    self.table.setflags(write=False)
    self.inverse.setflags(write=False)

  @property
  def order(self) -> int:
    return self.table.shape[0]

  def __len__(self) -> int:
    return self.order

  def __repr__(self) -> str:
    return f"FiniteGroup({self.name}, order={self.order})"

  # Hash and equality by what defines the group, its table: two constructions of the same
  # group share jit caches whatever their names. Element names and the group's name are
  # cosmetic and take no part. A digest, so a large table is not copied for every lookup.
  @functools.cached_property
  def _key(self):
    canonical = np.ascontiguousarray(self.table, index_dtype(self.order))
    return (self.table.shape, hashlib.sha256(canonical.tobytes()).hexdigest())

  def __hash__(self):
    return hash(self._key)

  def __eq__(self, other):
    return isinstance(other, FiniteGroup) and self._key == other._key

  def mul(self, a: int, b: int) -> int:
    return int(self.table[a, b])

  def inv(self, a: int) -> int:
    return int(self.inverse[a])

  def index(self, element_name: str) -> int:
    """The index of the element called ``element_name``."""
    try:
      return self.element_names.index(element_name)
    except ValueError:
      raise ValueError(
          f"{self.name} has no element named {element_name!r}; "
          f"its elements are {self.element_names}") from None

  def element_order(self, a: int) -> int:
    k, x = 1, a
    while x != 0:
      x, k = int(self.table[a, x]), k + 1
    return k

  @property
  def is_abelian(self) -> bool:
    return bool(np.array_equal(self.table, self.table.T))

  def regular_permutations(self) -> np.ndarray:
    """``int32 [n, n]``: row h is the permutation of the regular action on maps G -> Z.

    ``(h.s)(g) = s(h^-1 g)``, so ``(h.s)[g] = s[perm[h, g]]`` with
    ``perm[h, g] = table[inverse[h], g]``.
    """
    return self.table[self.inverse]

  def subgroup(self, elements: Sequence[int], name: str | None = None) -> "Subgroup":
    """The subgroup H given by its element indices; refused if they are not a subgroup."""
    return Subgroup.of(self, elements, name)

  def generated_subgroup(self, generators: Sequence[int], name: str | None = None):
    """The smallest subgroup containing ``generators``."""
    elems = {0}
    frontier = [0]
    while frontier:
      a = frontier.pop()
      for s in generators:
        b = int(self.table[a, s])
        if b not in elems:
          elems.add(b)
          frontier.append(b)
    return Subgroup.of(self, sorted(elems), name)

  def check(self) -> "FiniteGroup":
    check_group_axioms(self.table, self.inverse)
    return self


_BLOCK = 1024     # rows per block in the table-wide checks


def index_dtype(n: int):
  """The narrowest signed integer type that holds element indices 0 .. n (n included: one
  past the end marks "none")."""
  return np.int8 if n < 127 else np.int16 if n < 32767 else np.int32


def generators(table: np.ndarray) -> list[int]:
  """A small generating set of the group (greedy): each new generator is the first element
  not yet reached by products of the ones before. ``table`` must satisfy closure."""
  n = table.shape[0]
  reached = np.zeros(n, bool)
  reached[0] = True
  gens = []
  while not reached.all():
    s = int(np.argmin(reached))          # the first element not reached yet
    gens.append(s)
    frontier = np.nonzero(reached)[0]
    while frontier.size:                 # close {reached} under right products by generators
      new = np.unique(table[frontier][:, gens].reshape(-1))
      new = new[~reached[new]]
      reached[new] = True
      frontier = new
  return gens


def check_group_axioms(table: np.ndarray, inverse: np.ndarray | None = None,
                       full: bool = False) -> None:
  """Raises :class:`GroupAxiomError` naming the first axiom that fails, and where.

  Closure, identity and inverses are checked entry by entry. Associativity is checked by
  Light's test: ``(x s) y = x (s y)`` for all x, y and every s of a generating set (which
  implies it for every middle element), in O(n^2 |S|) time and O(n^2) memory. ``full=True``
  checks all n^3 triples instead (row by row, O(n^2) memory).
  """
  table = np.asarray(table)
  if table.ndim != 2 or table.shape[0] != table.shape[1] or table.shape[0] == 0:
    raise GroupAxiomError(f"a Cayley table must be a non-empty square matrix, got shape {table.shape}")
  if not np.issubdtype(table.dtype, np.integer):
    raise GroupAxiomError(f"a Cayley table holds element indices (integers), got dtype {table.dtype}")
  n = table.shape[0]
  for r in range(0, n, _BLOCK):
    block = table[r:r + _BLOCK]
    bad = np.argwhere((block < 0) | (block >= n))
    if bad.size:
      a, b = bad[0]
      raise GroupAxiomError(f"closure fails: table[{a + r}, {b}] = {block[a, b]} is not an "
                            f"element index in [0, {n})")
  e = np.arange(n)
  if not (np.array_equal(table[0], e) and np.array_equal(table[:, 0], e)):
    ids = [i for i in range(n) if np.array_equal(table[i], e) and np.array_equal(table[:, i], e)]
    where = (f"element {ids[0]} is the identity; reorder so that it is element 0" if ids
             else "no element is a two-sided identity")
    raise GroupAxiomError(f"identity fails: element 0 must be the identity ({where})")
  right_inv = np.concatenate([np.argmax(table[r:r + _BLOCK] == 0, axis=1)  # first b: a b = e
                              for r in range(0, n, _BLOCK)])
  has = table[e, right_inv] == 0
  two_sided = has & (table[right_inv, e] == 0)
  if not two_sided.all():
    a = int(np.argmin(two_sided))
    raise GroupAxiomError(f"inverses fail: element {a} has no two-sided inverse")
  if inverse is not None:
    inverse = np.asarray(inverse)
    wrong = np.nonzero(inverse != right_inv)[0]
    if wrong.size:
      a = int(wrong[0])
      raise GroupAxiomError(
          f"inverses fail: inverse[{a}] = {inverse[a]} but {a} * {inverse[a]} = "
          f"{table[a, inverse[a]]}, not the identity")
  middles = range(n) if full else generators(table)
  for s in middles:
    for r in range(0, n, _BLOCK):                     # rows x in blocks: O(block * n) memory
      left = table[table[r:r + _BLOCK, s]]            # [x, y] -> (x s) y
      right = table[r:r + _BLOCK][:, table[s]]        # [x, y] -> x (s y)
      bad = np.argwhere(left != right)
      if bad.size:
        x, y = bad[0]
        raise GroupAxiomError(f"associativity fails: ({x + r}*{s})*{y} = {left[x, y]} but "
                              f"{x + r}*({s}*{y}) = {right[x, y]}")


def from_cayley_table(table, element_names: Sequence[str] | None = None,
                      name: str = "G") -> FiniteGroup:
  """A group from its Cayley table ``table[a, b] = a b``, checked for every axiom."""
  table = np.asarray(table)
  check_group_axioms(table)
  n = table.shape[0]
  table = table.astype(index_dtype(n), copy=False)
  inverse = np.concatenate([np.argmax(table[r:r + _BLOCK] == 0, axis=1)
                            for r in range(0, n, _BLOCK)]).astype(index_dtype(n))
  if element_names is None:
    element_names = ["e"] + [f"g{i}" for i in range(1, n)]
  if len(element_names) != n or len(set(element_names)) != n:
    raise ValueError(f"need {n} distinct element names, got {list(element_names)}")
  return FiniteGroup(name, table, inverse, tuple(element_names))


def _power_name(base: str, k: int) -> str:
  return "" if k == 0 else base if k == 1 else f"{base}^{k}"


def cyclic(n: int) -> FiniteGroup:
  """C_n = <r | r^n>, elements ``r^k`` in order k = 0..n-1 (``e, r, r^2, ...``)."""
  if n < 1:
    raise ValueError(f"cyclic group order must be >= 1, got {n}")
  k = np.arange(n)
  table = (k[:, None] + k[None, :]) % n
  names = ["e"] + [_power_name("r", i) for i in range(1, n)]
  return from_cayley_table(table, names, name=f"C{n}")


def dihedral(n: int) -> FiniteGroup:
  """D_n of order 2n: rotations ``r^k`` then reflections ``f r^k``, index ``m*n + k`` for ``f^m r^k``.

  Relations ``r^n = f^2 = e`` and ``r f = f r^-1``. Acting on the plane, r is the
  counter-clockwise rotation by 2 pi / n and f a reflection.

  >>> d4 = dihedral(4)
  >>> d4.element_names
  ('e', 'r', 'r^2', 'r^3', 'f', 'f r', 'f r^2', 'f r^3')
  >>> d4.element_names[d4.mul(d4.index("r"), d4.index("f"))]     # r f = f r^-1
  'f r^3'
  >>> d4.is_abelian, d4.order
  (False, 8)
  """
  if n < 1:
    raise ValueError(f"dihedral group needs n >= 1, got {n}")
  # f^m1 r^k1 f^m2 r^k2 = f^(m1+m2) r^((-1)^m2 k1 + k2)
  idx = np.arange(2 * n)
  m, k = idx // n, idx % n
  m1, k1, m2, k2 = m[:, None], k[:, None], m[None, :], k[None, :]
  table = ((m1 + m2) % 2) * n + (np.where(m2 == 1, -k1, k1) + k2) % n
  names = ["e"] + [_power_name("r", i) for i in range(1, n)]
  names += ["f" + ("" if i == 0 else " " + _power_name("r", i)) for i in range(n)]
  return from_cayley_table(table, names, name=f"D{n}")


def direct_product(a: FiniteGroup, b: FiniteGroup) -> FiniteGroup:
  """A x B with element ``(i, j)`` at index ``i * |B| + j``; names ``(a_i, b_j)``."""
  na, nb = a.order, b.order
  n = na * nb
  dtype = index_dtype(n)
  idx = np.arange(n)
  i, j = idx // nb, idx % nb
  table = np.empty((n, n), dtype)
  for row in range(0, n, _BLOCK):        # in row blocks: no n x n intermediate in int64
    r = slice(row, row + _BLOCK)
    table[r] = (a.table[i[r, None], i[None, :]].astype(np.int64) * nb
                + b.table[j[r, None], j[None, :]])
  names = [f"({a.element_names[p]}, {b.element_names[q]})" for p, q in zip(i, j)]
  names[0] = "e"
  return from_cayley_table(table, names, name=f"{a.name}x{b.name}")


def from_permutations(generators: Sequence[Sequence[int]], name: str = "G",
                      max_order: int = 10_000) -> tuple[FiniteGroup, np.ndarray]:
  """The group generated by permutations of ``range(m)``.

  Args:
    generators: each a permutation ``p`` of ``range(m)``, acting on points by ``i -> p[i]``.
    name: the group's name.
    max_order: refuse to enumerate larger groups.

  Returns:
    ``(group, perms)`` with ``perms[g]`` the permutation of element g (``perms[0]`` the
    identity). Products compose as maps: ``perms[table[a, b]] = perms[a][perms[b]]``,
    i.e. ``(a b)(i) = a(b(i))``.
  """
  gens = [np.asarray(p, dtype=np.int64) for p in generators]
  if not gens:
    raise ValueError("need at least one generator")
  m = gens[0].size
  for p in gens:
    if p.ndim != 1 or p.size != m or not np.array_equal(np.sort(p), np.arange(m)):
      raise ValueError(f"generator {p.tolist()} is not a permutation of range({m})")
  elems = [np.arange(m)]
  seen = {elems[0].tobytes(): 0}
  frontier = [0]
  while frontier:
    a = frontier.pop(0)
    for p in gens:
      q = elems[a][p]      # compose: first p... any generating product reaches all elements
      key = q.tobytes()
      if key not in seen:
        if len(elems) >= max_order:
          raise ValueError(f"the generated group has more than {max_order} elements")
        seen[key] = len(elems)
        elems.append(q)
        frontier.append(seen[key])
  perms = np.stack(elems)
  n = len(elems)
  # Each permutation as one integer (base m digits), sorted once: products are looked up by
  # binary search, a row of the table at a time.
  weights = (m ** np.arange(m - 1, -1, -1)).astype(np.int64) if m ** m < 2 ** 62 else None
  code = (lambda p: p.astype(np.int64) @ weights) if weights is not None else (
      lambda p: np.array([hash(r.tobytes()) for r in p], np.int64))
  keys = code(perms)
  order = np.argsort(keys)
  sorted_keys = keys[order]
  table = np.empty((n, n), index_dtype(n))
  for a in range(n):
    table[a] = order[np.searchsorted(sorted_keys, code(perms[a][perms]))]
  names = ["e"] + [f"p{i}" for i in range(1, n)]
  return from_cayley_table(table, names, name=name), perms.astype(np.int32)


def symmetric(m: int) -> tuple[FiniteGroup, np.ndarray]:
  """S_m permuting m points, generated by a transposition and an m-cycle."""
  if m < 1:
    raise ValueError(f"S_m needs m >= 1, got {m}")
  if m == 1:
    return from_permutations([[0]], name="S1")
  swap = np.arange(m)
  swap[[0, 1]] = [1, 0]
  cycle = np.roll(np.arange(m), -1)
  return from_permutations([swap, cycle], name=f"S{m}")


# Subgroups and their cosets live in a module of their own; they are part of this namespace.
from eqnn.subgroups import Subgroup  # noqa: E402
