"""Statistical disclosure control: every figure the quota releases about
use of the programme is decided here. For HR (the usage summary, agencies'
and providers' balances and contracts) no figure, nor any sum or difference
of figures, gives away a group of fewer than five people; for operators
(the live metrics, behind their token) no series stands for fewer than
five people (`shown_owners`).

The concepts are those of tau-ARGUS and sdcTable (Hundepool et al.,
*Statistical Disclosure Control*, Wiley 2012, ch. 4): a table's cells and
its margins are linked by linear relations, so withholding a small cell
(primary suppression) protects nothing while the released figures still
determine it; more figures must be withheld (secondary, or complementary,
suppression) until no sensitive group can be worked out. sdcTable's
"audit" checks that by solving the linear system; so does this module, over
every figure released for a reporting period:

- the atoms: the minutes of one agency, staff category, month and provider,
  summed over its charged sessions; nobody is shown an atom. Their NT$ is
  the same minutes at the provider's rate, which is no secret, so a figure
  in NT$ is a rate-weighted sum of the same unknowns: a cell shown in both
  minutes and NT$, where its providers' rates differ, is two equations;
- the figures: the usage summary's cells (agency, staff category, month)
  and, per month, each agency's and each provider's total: what a reader of
  HR's balances (the year so far, month by month, as each month closes)
  can take apart by subtracting one month's reading from the next;
- the sensitive groups: every atom, cell and monthly total behind which
  fewer than MIN_CELL_PEOPLE distinct employees stand.

Primary suppression withholds every figure with fewer than five people.
Then, while some sensitive group's indicator lies in the row space of the
released figures (it is a linear combination of them: the attacker solves
for it), the released figure overlapping it with the fewest people (then
the least money) whose withdrawal breaks that is withheld too. Figures of
different months share no atom, so each month is decided on its own, and
a month's decision never changes once the month is over.

Periods are fixed: the months of the fiscal year. HR reads closed months
only (a month closes CLOSING_DAYS after it ends, when late completions are
in): an open month's figures, read on two days, would differ by one day's
sessions. An agency's or provider's money is shown to HR exactly only where
at least five distinct people stand behind it in the period and every one
of its monthly totals is released; otherwise it is banded (rounded down to
a band as wide as a tenth of the pool, and at least BAND_NTD).

What this does not cover: bounds (an attacker who knows that amounts are
not negative can sometimes narrow a withheld cell to an interval; sdcTable
calls that the interval attack); session counts beyond the cells (they are
released nowhere else); figures released by someone else; a month whose
data changes after it closed (a completion or cancellation more than
CLOSING_DAYS late); and the live metrics read twice, whose difference is
what was booked in between: they are operational, for Prometheus alone
behind EAP_METRICS_TOKEN and the network policy. The ledger (ListLedger)
lists bookings one by one and is for administrators and auditors only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass

import numpy as np

from services.rules.attendance import Attendance
from services.rules.disclosure import MIN_CELL_PEOPLE

CLOSING_DAYS = 7
"""A month's figures are released to HR this many days after it ends."""
BAND_NTD = 50_000
"""The narrowest band an agency's banded money is rounded to, NT$."""
BAND_MINUTES = 600
"""The narrowest band a provider's banded minutes are rounded to."""
_EPSILON = 1e-8


@dataclass(frozen=True)
class Charge:
    """One charged session, as only this module sees it: one that took
    place or will, or one missed or cancelled late (`outcome`, a
    rules.attendance.Attendance), with what the tenant charged for it
    (which may be nothing)."""

    agency_id: str
    staff_category: str
    month: int
    provider_id: str
    employee_id: str
    minutes: int
    amount_ntd: int
    outcome: str = ""


@dataclass(frozen=True)
class UsageRow:
    """One cell of the usage summary: an agency, staff category and month."""

    agency_id: str
    staff_category: str
    month: int
    people: int  # distinct employees
    sessions: int  # sessions that took place or will: a group session counts once per participant
    minutes: int
    amount_ntd: int
    suppressed: bool = False  # withheld: every count is zero
    no_shows: int = 0
    late_cancellations: int = 0


@dataclass(frozen=True)
class Release:
    """What may be shown for a period."""

    cells: list[UsageRow]  # every cell, withheld ones zeroed and marked
    exact_agencies: frozenset[str]  # whose money may be shown exactly
    exact_providers: frozenset[str]  # whose minutes may be shown exactly


# A figure or group: (kind, key) naming it, the atoms it sums, its people.
_Atom = tuple[str, str, int, str]  # agency, staff category, month, provider


@dataclass
class _Group:
    name: tuple[str, ...]
    atoms: frozenset[_Atom]
    people: frozenset[str]
    amount: int


def release(charges: Iterable[Charge], minimum: int = MIN_CELL_PEOPLE) -> Release:
    """The disclosure decision for the charges of one period (a fiscal
    year's months, each decided on its own)."""
    by_month: dict[int, list[Charge]] = {}
    for charge in charges:
        by_month.setdefault(charge.month, []).append(charge)
    cells: list[UsageRow] = []
    held_back: set[tuple[str, ...]] = set()
    agency_people: dict[str, set[str]] = {}
    provider_people: dict[str, set[str]] = {}
    for month in sorted(by_month):
        month_charges = by_month[month]
        figures, sensitive, rate = _groups(month_charges)
        released = _audit(figures, sensitive, rate, minimum)
        held_back |= {f.name for f in figures if f.name not in released}
        for f in figures:
            if f.name[0] == "cell":
                cells.append(_cell(f, month_charges, shown=f.name in released))
        for c in month_charges:
            agency_people.setdefault(c.agency_id, set()).add(c.employee_id)
            provider_people.setdefault(c.provider_id, set()).add(c.employee_id)
    cells.sort(key=lambda r: (r.agency_id, r.staff_category, r.month))
    return Release(
        cells=cells,
        exact_agencies=frozenset(
            a
            for a, who in agency_people.items()
            if len(who) >= minimum and not any(n[:2] == ("agency", a) for n in held_back)
        ),
        exact_providers=frozenset(
            p
            for p, who in provider_people.items()
            if len(who) >= minimum and not any(n[:2] == ("provider", p) for n in held_back)
        ),
    )


def banded(value: int, entitled: int, narrowest: int) -> tuple[int, int]:
    """`value` rounded down to its band, and the band's width: a tenth of
    what is entitled, and at least `narrowest`."""
    width = max(narrowest, entitled // 10)
    return value // width * width, width


def closed_through(today_year: int, today_month: int, today_day: int, year: int) -> int:
    """The last month of fiscal `year` closed on the given day (0: none)."""
    if today_year < year:
        return 0
    if today_year > year:
        # December closes in the new year's first CLOSING_DAYS days.
        return 12 if (today_year, today_month, today_day) > (year + 1, 1, CLOSING_DAYS) else 11
    return today_month - 1 if today_day > CLOSING_DAYS else max(today_month - 2, 0)


# What each figure tells, as sums over its atoms' minutes: "minutes" its
# minutes, "money" its NT$, which is each atom's minutes times its
# provider's rate (the rates are no secret: GetProviderContract). A cell
# tells both, so where its providers' rates differ it is two equations.
_TELLS = {"cell": ("minutes", "money"), "agency": ("money",), "provider": ("minutes",)}
_BOTH = ("minutes", "money")


def _groups(charges: Sequence[Charge]) -> tuple[list[_Group], list[_Group], dict[_Atom, float]]:
    """One month's figures (cells, agency totals, provider totals), the
    groups to protect (those and every atom), and each atom's NT$ a minute."""
    atoms: dict[_Atom, tuple[set[str], int, int]] = {}
    for c in charges:
        key = (c.agency_id, c.staff_category, c.month, c.provider_id)
        people, amount, minutes = atoms.setdefault(key, (set(), 0, 0))
        people.add(c.employee_id)
        atoms[key] = (people, amount + c.amount_ntd, minutes + c.minutes)

    def group(name: tuple[str, ...], members: Iterable[_Atom]) -> _Group:
        chosen = frozenset(members)
        people: set[str] = set().union(*(atoms[a][0] for a in chosen))
        return _Group(name, chosen, frozenset(people), sum(atoms[a][1] for a in chosen))

    def by(part: Mapping[str, int]) -> dict[tuple[str, ...], list[_Atom]]:
        grouped: dict[tuple[str, ...], list[_Atom]] = {}
        for atom in atoms:
            grouped.setdefault(tuple(str(atom[i]) for i in part.values()), []).append(atom)
        return grouped

    figures = [
        *(group(("cell", *k), m) for k, m in by({"a": 0, "c": 1, "m": 2}).items()),
        *(group(("agency", *k), m) for k, m in by({"a": 0, "m": 2}).items()),
        *(group(("provider", *k), m) for k, m in by({"p": 3, "m": 2}).items()),
    ]
    sensitive = figures + [group(("atom", *map(str, a)), [a]) for a in atoms]
    rate = {a: amount / max(minutes, 1) for a, (_, amount, minutes) in atoms.items()}
    return figures, sensitive, rate


def _audit(
    figures: list[_Group], sensitive: list[_Group], rate: dict[_Atom, float], minimum: int
) -> set[tuple[str, ...]]:
    """The names of the figures that may be released: primary suppression,
    then complementary until no small group's minutes or money is a
    combination of what they tell."""
    atoms = sorted({a for f in figures for a in f.atoms})
    column = {a: i for i, a in enumerate(atoms)}

    def rows(g: _Group, tells: Sequence[str]) -> list[np.ndarray]:
        found = []
        for measure in tells:
            row = np.zeros(len(atoms))
            for a in g.atoms:
                row[column[a]] = rate[a] if measure == "money" else 1.0
            found.append(row)
        return found

    def system(chosen: Iterable[_Group]) -> np.ndarray:
        lines = [r for f in chosen for r in rows(f, _TELLS[f.name[0]])]
        return np.array(lines).reshape(len(lines), len(atoms))

    small = [g for g in sensitive if len(g.people) < minimum]
    targets = [(g, r) for g in small for r in rows(g, _BOTH)]
    target_rows = np.array([r for _, r in targets]).reshape(len(targets), len(atoms))
    released = [f for f in figures if len(f.people) >= minimum]
    cost = sorted(released, key=lambda f: (len(f.people), f.amount, f.name))
    while released:
        exposed = _in_span(_basis(system(released)), target_rows)
        if not exposed.any():
            break
        target, row = targets[int(np.argmax(exposed))]
        overlapping = [f for f in cost if f in released and f.atoms & target.atoms]
        withheld = next(
            (
                f
                for f in overlapping
                if not _in_span(_basis(system(g for g in released if g is not f)), row[None, :])[0]
            ),
            overlapping[0],
        )
        released.remove(withheld)
    return {f.name for f in released}


def _basis(rows: np.ndarray) -> np.ndarray:
    """An orthonormal basis of the rows' span."""
    if rows.size == 0:
        return np.zeros((0, rows.shape[1] if rows.ndim == 2 else 0))
    _, singular, right = np.linalg.svd(rows, full_matrices=False)
    rank = int((singular > _EPSILON * max(1.0, float(singular[0]))).sum())
    return right[:rank]


def _in_span(basis: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Which of `vectors` are combinations of the basis's rows."""
    if vectors.size == 0 or basis.size == 0:
        return np.zeros(len(vectors), dtype=bool)
    residual = vectors - (vectors @ basis.T) @ basis
    scale = np.maximum(np.abs(vectors).max(axis=1), 1.0)
    return np.asarray(np.abs(residual).max(axis=1) < 1e-6 * scale)


def _cell(figure: _Group, charges: Sequence[Charge], shown: bool) -> UsageRow:
    _, agency, category, month = figure.name
    if not shown:
        return UsageRow(agency, category, int(month), 0, 0, 0, 0, suppressed=True)
    mine = [c for c in charges if (c.agency_id, c.staff_category) == (agency, category)]
    missed = Counter(c.outcome for c in mine if c.outcome)
    return UsageRow(
        agency,
        category,
        int(month),
        people=len(figure.people),
        sessions=len(mine) - sum(missed.values()),
        minutes=sum(c.minutes for c in mine),
        amount_ntd=sum(c.amount_ntd for c in mine),
        no_shows=missed[Attendance.NO_SHOW],
        late_cancellations=missed[Attendance.LATE_CANCELLATION],
    )


def shown_owners(people: Mapping[str, Set[str]], minimum: int = MIN_CELL_PEOPLE) -> set[str]:
    """The agencies (or providers) whose live balance gauges may be
    exported (metrics.py): `people` maps each one with an account to the
    distinct employees behind its charges in the year.

    Primary suppression: fewer than `minimum` people, not shown. Then
    complementary suppression: the gauges of one family add up to something
    known elsewhere (the providers' hours times their contracted rates give
    the agencies' total NT$, and the other way round), so a lone withheld
    owner would come back by subtraction. The withheld ones are therefore
    grown, smallest shown first, until together they stand for at least
    `minimum` distinct people: all that subtraction can give is their sum,
    and it describes a group of that size. Ties go by name, so the choice
    is stable from one refresh to the next.
    """
    withheld = {owner for owner, who in people.items() if len(who) < minimum}
    shown = sorted(set(people) - withheld, key=lambda owner: (len(people[owner]), owner))
    behind: set[str] = set().union(*(people[owner] for owner in withheld))
    while withheld and len(behind) < minimum and shown:
        complement = shown.pop(0)
        withheld.add(complement)
        behind |= people[complement]
    return set(shown)
