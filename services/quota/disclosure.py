"""Small-cell suppression for the usage summary, free of storage and transport.

Issue 6: reports and usage summaries suppress any cell smaller than five
people, so that no one can be picked out of an aggregate. A cell is one
agency, staff category and month of a fiscal year; its size is the number of
distinct employees with a confirmed or completed session in it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MIN_CELL_PEOPLE = 5
"""A cell describing fewer distinct people than this is never shown."""


@dataclass(frozen=True)
class UsageRow:
    """One cell of the usage summary: an agency, staff category and month."""

    agency_id: str
    staff_category: str
    month: int
    people: int  # distinct employees
    sessions: int  # spent holds: a group session counts once per participant
    minutes: int
    amount_ntd: int
    suppressed: bool = False  # withheld: every count above is zero


def suppress_small_cells(
    rows: Sequence[UsageRow], minimum: int = MIN_CELL_PEOPLE
) -> list[UsageRow]:
    """`rows` in the same order, with every cell that must not be shown
    withheld (`suppressed` set, people, sessions, minutes and NT$ zero).

    Primary suppression: a cell with fewer than `minimum` people is withheld.

    Complementary suppression: withholding a cell is useless if it can be
    recovered by subtraction. An agency's pool balance (GetBalance on the
    agency account: `spent`) is the sum of the NT$ of all its cells in the
    year, so if exactly one of an agency's cells were withheld, `spent` minus
    the shown cells would give it back exactly. Hence the rule: an agency has
    no withheld cell or at least two. When it has exactly one, its smallest
    shown cell (fewest people, then least money, then by staff category and
    month so that the choice is stable) is withheld as well. What can then be
    recovered is only the withheld cells' sum, and it includes a cell of at
    least `minimum` people, so it describes at least that many people
    together. Both kinds of withheld cells look the same, so a reader cannot
    tell which of them is the small one. Each cell belongs to exactly one
    agency, so one pass over the agencies is enough: a complementary
    suppression never leaves another agency with a lone withheld cell.

    Not covered here: an agency whose whole year has fewer than `minimum`
    people (say, a single small cell) is given away by its own balance,
    whatever the report does; ListLedger on the agency account lists each booking's money;
    two reports taken at different times can be subtracted; and provider
    balances (minutes, across agencies and organisations) are a margin this
    rule does not consider. Access to those reads is what protects them.
    """
    withheld = {index for index, row in enumerate(rows) if row.people < minimum}
    by_agency: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        by_agency.setdefault(row.agency_id, []).append(index)
    for cells in by_agency.values():
        if sum(index in withheld for index in cells) != 1:
            continue
        shown = [index for index in cells if index not in withheld]
        if shown:
            withheld.add(
                min(
                    shown,
                    key=lambda i: (
                        rows[i].people,
                        rows[i].amount_ntd,
                        rows[i].staff_category,
                        rows[i].month,
                    ),
                )
            )
    return [
        UsageRow(row.agency_id, row.staff_category, row.month, 0, 0, 0, 0, suppressed=True)
        if index in withheld
        else row
        for index, row in enumerate(rows)
    ]
