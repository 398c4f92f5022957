"""The matcher's figures for a review period, from its bookings and cases,
decided by disclosure.py before anything leaves.

- Appointments: the bookings whose session starts in the period (office
  time) that were kept as booked (booked, moving, completing, completed and
  attended) or came to nothing by the employee (a no-show, a late
  cancellation: rules/attendance.py). A counselor's cancellation and one in
  good time are no appointment; a move counts where it moved to.
- Waiting: a case's first appointment (in any period) minus its
  submission, for the cases whose first appointment starts in the period.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from services.matcher.booking.state import BookingState
from services.matcher.orm import BookingRow, CaseRow, CounselorRow
from services.matcher.review.disclosure import Atom, Figure, Key, Line, withhold
from services.matcher.review.period import Period
from services.rules.attendance import Attendance
from services.rules.disclosure import MIN_CELL_PEOPLE

ALL = ""  # a margin's category or modality: all of them
HELD, NO_SHOW, LATE = "held", Attendance.NO_SHOW.value, Attendance.LATE_CANCELLATION.value
S = BookingState
_KEPT = frozenset({S.BOOKED, S.MOVING, S.COMPLETING})  # a step under way shows as booked
_CANCELLED = frozenset({S.CANCELLING, S.CANCELLED})
DAY_SECONDS = 86_400


@dataclass(frozen=True)
class Appointment:
    employee_id: str
    case_id: str
    category: str
    modality: str
    start: datetime
    outcome: str  # HELD, NO_SHOW or LATE


@dataclass(frozen=True)
class SessionCell:
    category: str
    modality: str
    sessions: int | None  # None when withheld
    people: int | None


@dataclass(frozen=True)
class WaitingRow:
    category: str
    cases: int | None
    median_days: float | None
    p90_days: float | None


@dataclass(frozen=True)
class AttendanceRow:
    category: str
    appointments: int | None
    no_shows: int | None
    late_cancellations: int | None


@dataclass(frozen=True)
class Review:
    sessions: list[SessionCell]
    waiting: list[WaitingRow]
    attendance: list[AttendanceRow]
    provider_ids: list[str]


def outcome_of(state: str, attendance: str) -> str | None:
    """What a booking was for the review, or None: no appointment."""
    if state in _KEPT or (state == S.COMPLETED and attendance in ("", Attendance.ATTENDED)):
        return HELD
    if state == S.COMPLETED and attendance == Attendance.NO_SHOW:
        return NO_SHOW
    if state in (S.COMPLETED, *_CANCELLED) and attendance == Attendance.LATE_CANCELLATION:
        return LATE
    return None


async def review(engine: AsyncEngine, period: Period, minimum: int = MIN_CELL_PEOPLE) -> Review:
    sessions = async_sessionmaker(engine)
    async with sessions() as session:
        rows = await session.execute(
            select(
                BookingRow.employee_id,
                BookingRow.case_id,
                CaseRow.category,
                BookingRow.modality,
                BookingRow.start,
                BookingRow.state,
                BookingRow.attendance,
                CaseRow.submitted_at,
            ).join(CaseRow, CaseRow.case_id == BookingRow.case_id)
        )
        booked = rows.all()
        providers = (await session.scalars(select(CounselorRow.provider_id).distinct())).all()
    every: list[Appointment] = []
    submitted: dict[str, datetime] = {}
    for employee, case_id, category, modality, start, state, attendance, when in booked:
        outcome = outcome_of(state, attendance)
        if outcome is not None:
            every.append(Appointment(employee, case_id, category, modality, start, outcome))
            submitted[case_id] = when
    inside = [a for a in every if period.start <= a.start < period.end]
    cells, missed = sessions_and_attendance(inside, minimum)
    return Review(
        sessions=cells,
        waiting=waiting_table(first_appointments(every, period), submitted, minimum),
        attendance=missed,
        provider_ids=sorted(set(providers)),
    )


def _people(appointments: Iterable[Appointment]) -> frozenset[str]:
    return frozenset(a.employee_id for a in appointments)


def _atoms(appointments: Sequence[Appointment]) -> dict[Atom, list[Appointment]]:
    atoms: dict[Atom, list[Appointment]] = defaultdict(list)
    for a in appointments:
        atoms[(a.category, a.modality)].append(a)
    return atoms


def sessions_and_attendance(
    appointments: Sequence[Appointment], minimum: int
) -> tuple[list[SessionCell], list[AttendanceRow]]:
    """Sessions by category and modality with both margins, and no-shows
    and late cancellations by category: decided together, since they share
    atoms (a category's appointments are its sessions plus its no-shows and
    late cancellations, so its attendance row minus its session cells would
    give a withheld one back)."""
    atoms = _atoms(appointments)
    held = {atom: [a for a in these if a.outcome == HELD] for atom, these in atoms.items()}
    categories = sorted({c for c, _ in atoms})
    modalities = sorted({m for _, m in atoms})
    figures: dict[Key, Figure] = {}
    for category, modality in [
        *(atom for atom in atoms if held[atom]),
        *((c, ALL) for c in categories),
        *((ALL, m) for m in modalities),
        (ALL, ALL),
    ]:
        chosen = [
            atom
            for atom in atoms
            if category in (ALL, atom[0]) and modality in (ALL, atom[1]) and held[atom]
        ]
        if chosen or (category, modality) == (ALL, ALL):
            key: Key = ("sessions", category, modality)
            who = _people(a for atom in chosen for a in held[atom])
            figures[key] = Figure(key, frozenset(chosen), (HELD,), who)
    for category in [*categories, ALL]:
        chosen = [atom for atom in atoms if category in (ALL, atom[0])]
        key = ("attendance", category)
        who = _people(a for atom in chosen for a in atoms[atom])
        figures[key] = Figure(key, frozenset(chosen), (HELD, NO_SHOW, LATE), who)

    def line(total: Key, members: Iterable[Key]) -> Line:
        return Line(total, tuple(k for k in members if k in figures))

    lines = [
        line(("sessions", c, ALL), (("sessions", c, m) for m in modalities)) for c in categories
    ]
    lines += [
        line(("sessions", ALL, m), (("sessions", c, m) for c in categories)) for m in modalities
    ]
    lines.append(line(("sessions", ALL, ALL), (("sessions", c, ALL) for c in categories)))
    lines.append(line(("sessions", ALL, ALL), (("sessions", ALL, m) for m in modalities)))
    lines.append(line(("attendance", ALL), (("attendance", c) for c in categories)))
    people = {atom: _people(these) for atom, these in atoms.items()}
    hidden = withhold(list(figures.values()), [x for x in lines if x.members], people, minimum)

    cells = []
    for key, figure in sorted(figures.items()):
        if key[0] == "sessions":
            shown = key not in hidden
            count = sum(len(held[atom]) for atom in figure.atoms)
            cells.append(
                SessionCell(
                    key[1],
                    key[2],
                    count if shown else None,
                    len(figure.people) if shown else None,
                )
            )
    rows = []
    for category in [ALL, *categories]:
        key = ("attendance", category)
        mine = [a for atom in figures[key].atoms for a in atoms[atom]]
        if key in hidden:
            rows.append(AttendanceRow(category, None, None, None))
        else:
            no_shows = sum(a.outcome == NO_SHOW for a in mine)
            rows.append(
                AttendanceRow(category, len(mine), no_shows, sum(a.outcome == LATE for a in mine))
            )
    return cells, rows


def first_appointments(every: Sequence[Appointment], period: Period) -> list[Appointment]:
    """Each case's first appointment, where it starts in the period."""
    first: dict[str, Appointment] = {}
    for a in every:
        if a.case_id not in first or a.start < first[a.case_id].start:
            first[a.case_id] = a
    return [a for a in first.values() if period.start <= a.start < period.end]


def waiting_table(
    firsts: Sequence[Appointment], submitted: dict[str, datetime], minimum: int
) -> list[WaitingRow]:
    """Waiting times by category and over all, one line (the total and the
    categories' counts)."""
    by_category: dict[str, list[Appointment]] = defaultdict(list)
    for a in firsts:
        by_category[a.category].append(a)
    figures = [
        Figure(("waiting", c), frozenset([(c,)]), ("cases",), _people(these))
        for c, these in by_category.items()
    ]
    total = Figure(
        ("waiting", ALL), frozenset((c,) for c in by_category), ("cases",), _people(firsts)
    )
    line = Line(total.key, tuple(f.key for f in figures))
    people: dict[Atom, frozenset[str]] = {(c,): _people(t) for c, t in by_category.items()}
    hidden = withhold([total, *figures], [line] if figures else [], people, minimum)
    rows = []
    for category in [ALL, *sorted(by_category)]:
        mine = list(firsts) if category == ALL else by_category[category]
        if ("waiting", category) in hidden:
            rows.append(WaitingRow(category, None, None, None))
            continue
        days = sorted((a.start - submitted[a.case_id]).total_seconds() / DAY_SECONDS for a in mine)
        rows.append(WaitingRow(category, len(mine), *_median_and_p90(days)))
    return rows


def _median_and_p90(days: Sequence[float]) -> tuple[float | None, float | None]:
    if not days:
        return None, None
    if len(days) == 1:
        return round(days[0], 1), round(days[0], 1)
    p90 = statistics.quantiles(days, n=10, method="inclusive")[8]
    return round(statistics.median(days), 1), round(p90, 1)
