"""What the programme's review may show: every decision to withhold one of
its figures is made here, by the programme's threshold (MIN_CELL_PEOPLE,
services/rules/disclosure.py).

A review table is a set of figures, each a sum over atoms: the sessions
of one category and modality (its appointments held, missed and cancelled
late being three measures of it), or the cases of one category that had
their first session. A figure tells some measures of its atoms: a cell of
"sessions by category and modality" tells one atom's sessions held; its
margins the same measure summed over a row, a column, or everything; a
row of "no-shows and late cancellations" all three measures of a category
(its appointments are their sum). Figures are linked by those sums, so a
withheld small cell protects nothing while the figures shown beside it
still give it back: withholding more (complementary suppression, as in
tau-ARGUS and sdcTable: Hundepool et al., *Statistical Disclosure Control*,
Wiley 2012, ch. 4) until none can be worked out.

The decision:

1. primary suppression: every figure behind which fewer than
   MIN_CELL_PEOPLE distinct employees stand is withheld;
2. then the audit, as sdcTable's, repeated until it passes: for every
   sensitive group (a figure or an atom of fewer than MIN_CELL_PEOPLE
   people, and the withheld members of one line, a total and the figures
   it adds up, that together stand for fewer) and every measure, is the
   group's measure a linear combination of what the shown figures tell
   (a rank test)? If so, a shown figure overlapping the group is withheld
   too: the one with the fewest people whose withdrawal alone breaks that,
   else the one with the fewest people, and the audit runs again.

Solving the whole system, not line by line, catches what checking each
row and column misses: a withheld cell that is a bridge between two sets
of withheld cells of a two-way table, and the links between tables (a
category's row of no-shows minus its session cells). And a withheld
figure that is not small may be worked out, if that gives no small group
away: it is withheld only to protect one, so fewer figures go dark than a
rule of "two withheld per line" would darken.

What it covers: every figure of one call (the tables of one review), their
sums and differences, across the tables of a period. What it does not:
bounds (that counts are not negative can narrow a withheld figure to an
interval: sdcTable's interval attack); medians and percentiles, which are
not sums (a category's waiting times are shown only where its count is);
two reviews of overlapping periods read together (a year minus three of
its quarters is the fourth: the quarters are the periods, and a year's
review is their sum only where each quarter's own figures are shown);
figures released by another service (the quota's usage summary counts
sessions per agency, staff category and month, under its own suppression);
and the satisfaction survey, which counts responses, not people, and is
decided by survey/results.py under the same threshold.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from services.rules.disclosure import MIN_CELL_PEOPLE

Atom = tuple[str, ...]
Key = tuple[str, ...]


@dataclass
class Figure:
    """One figure a table shows: the measures it tells of its atoms' sums,
    and the distinct people behind it."""

    key: Key
    atoms: frozenset[Atom]
    tells: tuple[str, ...]
    people: frozenset[str]
    hidden: bool = field(default=False, compare=False)


@dataclass(frozen=True)
class Line:
    """A total and the figures that add up to it."""

    total: Key
    members: tuple[Key, ...]


@dataclass(frozen=True)
class _Group:
    atoms: frozenset[Atom]
    people: frozenset[str]


def withhold(
    figures: Sequence[Figure],
    lines: Iterable[Line],
    atom_people: Mapping[Atom, frozenset[str]],
    minimum: int = MIN_CELL_PEOPLE,
) -> set[Key]:
    """The keys of the figures to withhold (the module's docstring says the
    rule); marks them `hidden` too."""
    table = {f.key: f for f in figures}
    rules = list(lines)
    for figure in figures:
        figure.hidden = len(figure.people) < minimum
    while _audit_once(table, rules, atom_people, minimum):
        pass
    return {k for k, f in table.items() if f.hidden}


def _audit_once(
    table: Mapping[Key, Figure],
    lines: Sequence[Line],
    atom_people: Mapping[Atom, frozenset[str]],
    minimum: int,
) -> bool:
    """Withholds one shown figure if some small group can be solved for
    from the shown ones; whether it did."""
    measures = sorted({m for f in table.values() for m in f.tells})
    atoms = sorted(atom_people)
    column = {(a, m): i for i, (a, m) in enumerate((a, m) for m in measures for a in atoms)}

    def rows(atoms_of: Iterable[Atom], tells: Iterable[str]) -> list[np.ndarray]:
        chosen = list(atoms_of)
        found = []
        for measure in tells:
            row = np.zeros(len(column))
            for atom in chosen:
                row[column[(atom, measure)]] = 1.0
            found.append(row)
        return found

    def spans(shown: Sequence[Figure], target: np.ndarray) -> bool:
        lines_ = [r for f in shown for r in rows(f.atoms, f.tells)]
        return _in_span(np.array(lines_).reshape(len(lines_), len(column)), target)

    shown = sorted(
        (f for f in table.values() if not f.hidden), key=lambda f: (len(f.people), f.key)
    )
    for group in _sensitive(table, lines, atom_people, minimum):
        for measure in measures:
            target = rows(group.atoms, [measure])[0]
            if not spans(shown, target):
                continue
            overlapping = [f for f in shown if measure in f.tells and f.atoms & group.atoms]
            withdrawn = next(
                (f for f in overlapping if not spans([g for g in shown if g is not f], target)),
                overlapping[0],
            )
            withdrawn.hidden = True
            return True
    return False


def _sensitive(
    table: Mapping[Key, Figure],
    lines: Sequence[Line],
    atom_people: Mapping[Atom, frozenset[str]],
    minimum: int,
) -> list[_Group]:
    """Every group that must not be worked out: small figures, small atoms,
    and the withheld members of a line that together are few."""
    groups = [_Group(f.atoms, f.people) for f in table.values() if len(f.people) < minimum]
    groups += [_Group(frozenset([a]), p) for a, p in atom_people.items() if len(p) < minimum]
    for line in lines:
        hidden = [table[k] for k in line.members if table[k].hidden]
        if len(hidden) >= 2:
            people = frozenset().union(*(f.people for f in hidden))
            if len(people) < minimum:
                groups.append(_Group(frozenset().union(*(f.atoms for f in hidden)), people))
    return groups


def _in_span(rows: np.ndarray, target: np.ndarray) -> bool:
    """Whether `target` is a linear combination of `rows`."""
    if rows.size == 0 or not target.any():
        return False
    coefficients, *_ = np.linalg.lstsq(rows.T, target, rcond=None)
    residual = rows.T @ coefficients - target
    return bool(np.abs(residual).max() < 1e-6)
