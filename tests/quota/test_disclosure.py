"""The disclosure rules (services/quota/disclosure.py) against an attacker
who solves the linear system of everything released for a period."""

from __future__ import annotations

import random
from collections.abc import Iterable

from services.quota.disclosure import (
    MIN_CELL_PEOPLE,
    Charge,
    Release,
    banded,
    closed_through,
    release,
)
from tests.quota.attacker import Row, ones, solvable

Atom = tuple[str, str, int, str]


RATES = {"P1": 1200, "P2": 2400, "P3": 2000}  # NT$ an hour: no secret (GetProviderContract)


def county(seed: int, months: int = 3) -> list[Charge]:
    """Agencies of 1 to 12 people, two staff categories, three providers
    at different rates."""
    rng = random.Random(seed)
    charges = []
    for size in range(1, 13):
        agency = f"A{size:02d}"
        for n in range(size):
            employee, category = f"{agency}-E{n}", rng.choice(("official", "teacher"))
            for _ in range(rng.randint(1, 3)):
                minutes, provider = rng.choice((60, 90, 120)), rng.choice(tuple(RATES))
                charges.append(
                    Charge(
                        agency,
                        category,
                        rng.randint(1, months),
                        provider,
                        employee,
                        minutes,
                        minutes * RATES[provider] // 60,
                    )
                )
    return charges


def atom(c: Charge) -> Atom:
    return (c.agency_id, c.staff_category, c.month, c.provider_id)


def groups(
    charges: Iterable[Charge], keys: dict[str, object]
) -> dict[str, tuple[set[Atom], set[str]]]:
    found: dict[str, tuple[set[Atom], set[str]]] = {}
    for c in charges:
        for kind, key in keys.items():
            name = f"{kind} {key(c)}"  # type: ignore[operator]
            atoms, people = found.setdefault(name, (set(), set()))
            atoms.add(atom(c))
            people.add(c.employee_id)
    return found


KEYS = {
    "atom": atom,
    "cell": lambda c: (c.agency_id, c.staff_category, c.month),
    "agency-month": lambda c: (c.agency_id, c.month),
    "provider-month": lambda c: (c.provider_id, c.month),
    "agency": lambda c: c.agency_id,
    "provider": lambda c: c.provider_id,
    "category-month": lambda c: (c.staff_category, c.month),
}


def minutes(atoms: Iterable[Atom]) -> Row:
    return ones(atoms)


def money(atoms: Iterable[Atom], rates: dict[str, int]) -> Row:
    """NT$ as a weighted sum of the atoms' minutes: each at its provider's rate."""
    return {a: rates[a[3]] / 60 for a in atoms}


def small_groups(charges: list[Charge], rates: dict[str, int] = RATES) -> dict[str, list[Row]]:
    """Every group of fewer than five people: its minutes and its NT$."""
    return {
        name: [minutes(atoms), money(atoms, rates)]
        for name, (atoms, people) in groups(charges, KEYS).items()
        if len(people) < MIN_CELL_PEOPLE
    }


def equations(released: Release, charges: list[Charge]) -> list[Row]:
    """What a reader of HR's figures can write down: each shown cell's
    minutes and NT$; for an agency shown exactly its NT$, for a provider its
    minutes, as of each month's close (read month by month, so each month's
    total by subtraction)."""
    found: list[Row] = []
    for r in released.cells:
        if not r.suppressed:
            key = (r.agency_id, r.staff_category, r.month)
            cell = {atom(c) for c in charges if (c.agency_id, c.staff_category, c.month) == key}
            found += [minutes(cell), money(cell, RATES)]
    for through in sorted({c.month for c in charges}):
        upto = [c for c in charges if c.month <= through]
        found += [
            money({atom(c) for c in upto if c.agency_id == a}, RATES)
            for a in released.exact_agencies
        ]
        found += [
            minutes({atom(c) for c in upto if c.provider_id == p}) for p in released.exact_providers
        ]
    return found


def test_no_small_group_can_be_solved_for() -> None:
    for seed in range(12):
        charges = county(seed)
        released = release(charges)
        assert all(r.suppressed or r.people >= MIN_CELL_PEOPLE for r in released.cells)
        assert solvable(equations(released, charges), small_groups(charges)) == [], seed


def test_the_attacker_solves_what_primary_suppression_alone_leaves() -> None:
    """Without complementary suppression (every figure of five or more
    people released) small groups come back: the attacker is not blind."""
    charges = county(0)
    shown: list[Row] = []
    for atoms, people in groups(charges, {"c": KEYS["cell"]}).values():
        if len(people) >= MIN_CELL_PEOPLE:
            shown += [minutes(atoms), money(atoms, RATES)]
    totals = [
        money({atom(c) for c in charges if c.agency_id == a and c.month <= m}, RATES)
        for a in {c.agency_id for c in charges}
        for m in (1, 2, 3)
    ]
    assert solvable(shown + totals, small_groups(charges))


def test_two_rates_in_one_cell_are_two_equations() -> None:
    """A cell's minutes and NT$, where its providers' rates differ, solve
    for each provider's part: one person alone with the cheap provider."""
    lone = [Charge("A", "official", 1, "P1", "A-lone", 100, 2000)]  # 1,200 an hour
    many = [Charge("A", "official", 1, "P2", f"A-{n}", 60, 2400) for n in range(5)]
    other = [
        Charge("B", "official", 1, p, f"B-{p}-{n}", 60, RATES[p]) for p in RATES for n in range(5)
    ]
    charges = lone + many + other
    released = release(charges)
    assert solvable(equations(released, charges), small_groups(charges)) == []
    # The naive release (both measures of the six-person cell) gives it away.
    cell = {atom(c) for c in lone + many}
    assert solvable([minutes(cell), money(cell, RATES)], small_groups(charges))


def test_exact_money_only_where_five_people_stand_behind_it() -> None:
    released = release(county(3))
    small = {f"A{n:02d}" for n in range(1, MIN_CELL_PEOPLE)}
    assert not released.exact_agencies & small
    assert banded(123_456, 2_000_000, 50_000) == (0, 200_000)
    assert banded(123_456, 100_000, 50_000) == (100_000, 50_000)


def test_a_month_is_released_once_it_has_closed() -> None:
    assert closed_through(2027, 3, 7, 2027) == 1  # February closes on 7 March
    assert closed_through(2027, 3, 8, 2027) == 2
    assert closed_through(2027, 1, 20, 2027) == 0
    assert closed_through(2026, 12, 31, 2027) == 0
    assert closed_through(2028, 1, 7, 2027) == 11
    assert closed_through(2028, 1, 8, 2027) == 12


def test_a_months_decision_is_its_own() -> None:
    """Adding a later month changes nothing of an earlier one's cells."""
    charges = county(5, months=2)
    early = [r for r in release([c for c in charges if c.month == 1]).cells]
    assert [r for r in release(charges).cells if r.month == 1] == early
