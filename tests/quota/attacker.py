"""An attacker of released aggregates: given the linear equations a reader
can write from what was released (each: the sum of some unknown atoms is a
known number), which groups of atoms it can solve for exactly.

Written apart from services/quota/disclosure.py, on purpose with another
method (ranks of the equations with and without the group, by numpy's
SVD-based matrix_rank, rather than projections onto a basis), so that the
two do not share a mistake."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping

import numpy as np

Atom = Hashable


def solvable(
    equations: Iterable[frozenset[Atom]], groups: Mapping[str, frozenset[Atom]]
) -> list[str]:
    """The names of the groups whose sum the equations determine."""
    rows = [e for e in equations if e]
    atoms = sorted({a for e in rows for a in e} | {a for g in groups.values() for a in g}, key=repr)
    column = {a: i for i, a in enumerate(atoms)}

    def vector(members: frozenset[Atom]) -> np.ndarray:
        row = np.zeros(len(atoms))
        row[[column[a] for a in members]] = 1.0
        return row

    system = np.array([vector(e) for e in rows]).reshape(len(rows), len(atoms))
    rank = np.linalg.matrix_rank(system) if rows else 0
    found = []
    for name, members in groups.items():
        extended = np.vstack([system, vector(members)]) if rows else vector(members)[None, :]
        if np.linalg.matrix_rank(extended) == rank:
            found.append(name)
    return found
