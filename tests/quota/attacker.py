"""An attacker of released aggregates: given the linear equations a reader
can write from what was released (each: a weighted sum of unknown atoms is
a known number), which groups it can solve for exactly.

Written apart from services/quota/disclosure.py, on purpose with another
method (ranks of the equations with and without the group, by numpy's
SVD-based matrix_rank, rather than projections onto a basis), so that the
two do not share a mistake."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np

Atom = Hashable
Row = Mapping[Atom, float]  # the weight of each atom in a sum


def ones(atoms: Iterable[Atom]) -> Row:
    return dict.fromkeys(atoms, 1.0)


def solvable(equations: Iterable[Row], groups: Mapping[str, Sequence[Row]]) -> list[str]:
    """The names of the groups one of whose sums the equations determine."""
    rows = [e for e in equations if e]
    atoms = sorted(
        {a for e in rows for a in e} | {a for g in groups.values() for r in g for a in r}, key=repr
    )
    column = {a: i for i, a in enumerate(atoms)}

    def vector(row: Row) -> np.ndarray:
        found = np.zeros(len(atoms))
        for atom, weight in row.items():
            found[column[atom]] = weight
        return found

    system = np.array([vector(e) for e in rows]).reshape(len(rows), len(atoms))
    rank = np.linalg.matrix_rank(system) if rows else 0
    found = []
    for name, sums in groups.items():
        for row in sums:
            extended = np.vstack([system, vector(row)]) if rows else vector(row)[None, :]
            if np.linalg.matrix_rank(extended) == rank:
                found.append(name)
                break
    return found
