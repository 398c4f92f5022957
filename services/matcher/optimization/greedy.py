"""First-come-first-served booking: the baseline an optimizer has to beat.

    eapctl match baseline INSTANCE.json [--order crisis-first|submitted|value]

FORMAT.md calls the baseline "the first-come-first-served booking that most
appointment systems do today", and gives crisis cases a deadline (rule 7)
after which a session is worth nothing. The suite's programmes take crisis
cases first, so the default order is: crisis cases first, by when they came
in, then every other case by submission time (ties by case id).
`--order submitted` is the strict queue, crisis cases included.
`--order value` is no queue at all but where the optimizer starts from:
crisis cases, then the shortest sessions, then the most sessions wanted.

Each case in turn books what a person clicking "earliest available" would
get, and never looks back: one session a week (the counselling cadence),
each in the earliest ISO week that still has a slot. Within that week the
case's anchor counselor (the preferred one, else whoever held its first
session) is tried first, then the earliest slot with anyone qualified
(ties: the counselor listed first; `cheapest_first`: the cheaper provider,
then counselor id). A crisis case's first session
must start within the deadline or the case is left unserved. Nothing is
booked before the case was submitted. Sessions already booked (a re-plan's
`booked`, booked.py) stay where they are, and their cases book only after
them. Every hard rule of FORMAT.md is kept
as it books, so the schedule is feasible by construction; the output
depends on the instance alone (no clock, no randomness).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from fractions import Fraction

from services.matcher.optimization import reasons
from services.matcher.optimization.instance import (
    Case,
    CaseKind,
    Counselor,
    FormatError,
    Instance,
    Interval,
    Schedule,
    Session,
    dump_schedule,
    load_instance,
)
from services.rules.office_time import iso_week

ORDERS = ("crisis-first", "submitted", "value")
ONE_MINUTE = timedelta(minutes=1)


def booking_order(inst: Instance, order: str = "crisis-first") -> list[Case]:
    def queue_key(c: Case) -> tuple[datetime, str]:
        return (c.submitted, c.id)

    if order == "submitted":
        return sorted(inst.cases, key=queue_key)
    if order == "value":
        # Each session scores the same whatever its length, and where the
        # providers' hours run out, short sessions stretch them furthest;
        # a case wanting several sessions also gains continuity from them.
        return sorted(
            inst.cases,
            key=lambda c: (c.kind is not CaseKind.CRISIS, c.minutes, -c.sessions, *queue_key(c)),
        )
    if order != "crisis-first":
        raise ValueError(f"order must be one of {ORDERS}, not {order!r}")
    return sorted(inst.cases, key=lambda c: (c.kind is not CaseKind.CRISIS, *queue_key(c)))


def _days(interval: Interval) -> Iterator[date]:
    day, last = interval.start.date(), (interval.end - ONE_MINUTE).date()
    while day <= last:
        yield day
        day += timedelta(days=1)


def _align_up(moment: datetime, slot: int) -> datetime:
    """The first slot boundary at or after `moment` (the format's times are
    whole minutes, so seconds never need rounding)."""
    past_midnight = moment.hour * 60 + moment.minute
    return moment + timedelta(minutes=-past_midnight % slot)


@dataclass(frozen=True)
class _Offer:
    start: datetime
    counselor: Counselor
    rate: Fraction

    def key(self) -> tuple[datetime, Fraction, str]:
        return (self.start, self.rate, self.counselor.id)


@dataclass
class _Ledger:
    """What has been booked so far, and what is left to book with."""

    inst: Instance
    provider_minutes_left: dict[str, Fraction]
    agency_left: dict[str, Fraction]
    counselor_busy: dict[tuple[str, date], list[tuple[datetime, datetime]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    employee_busy: dict[str, list[tuple[datetime, datetime]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    employee_week: Counter[tuple[str, int, int]] = field(default_factory=Counter)
    employee_minutes: Counter[str] = field(default_factory=Counter)
    sessions: list[Session] = field(default_factory=list)
    costs: dict[tuple[str, int], int] = field(default_factory=dict)  # by provider, length

    @classmethod
    def fresh(cls, inst: Instance) -> _Ledger:
        return cls(
            inst,
            provider_minutes_left={p.id: p.hours_cap * 60 for p in inst.providers},
            agency_left={a.id: a.budget_ntd for a in inst.agencies},
        )

    def week_full(self, case: Case, week_start: datetime) -> bool:
        taken = self.employee_week[(case.employee, *iso_week(week_start))]
        return taken >= self.inst.rules.max_sessions_per_week

    def entitled(self, case: Case) -> bool:
        used = self.employee_minutes[case.employee] + case.minutes
        return used <= case.employee_remaining_hours * 60

    def cost(self, case: Case, counselor: Counselor) -> int:
        key = (counselor.provider, case.minutes)
        cost = self.costs.get(key)
        if cost is None:
            cost = self.costs[key] = self.inst.session_cost(counselor, case.minutes)
        return cost

    def affordable(self, case: Case, counselor: Counselor) -> bool:
        cost = self.cost(case, counselor)
        return (
            self.provider_minutes_left[counselor.provider] >= case.minutes
            and self.agency_left[case.agency] >= cost
        )

    def free(self, case: Case, counselor: Counselor, start: datetime, end: datetime) -> bool:
        if len(self.counselor_busy[(counselor.id, start.date())]) >= counselor.max_sessions_per_day:
            return False
        # Sessions are filed by the day they start, so one that began the
        # day before (and ran past midnight) has to be looked up there too.
        earliest = (start - timedelta(minutes=self.inst.rules.max_session_minutes)).date()
        day = earliest
        while day <= end.date():
            if any(a < end and start < b for a, b in self.counselor_busy[(counselor.id, day)]):
                return False
            day += timedelta(days=1)
        # Not a hard rule, but one person cannot sit in two sessions at once.
        return not any(a < end and start < b for a, b in self.employee_busy[case.employee])

    def book(
        self, case: Case, counselor: Counselor, start: datetime, modality: str | None = None
    ) -> Session:
        end = start + timedelta(minutes=case.minutes)
        modality = modality or next(m for m in case.modalities if m in counselor.modalities)
        session = Session(case.id, counselor.id, start, case.minutes, modality)
        self.counselor_busy[(counselor.id, start.date())].append((start, end))
        self.employee_busy[case.employee].append((start, end))
        self.employee_week[(case.employee, *iso_week(start))] += 1
        self.employee_minutes[case.employee] += case.minutes
        self.provider_minutes_left[counselor.provider] -= case.minutes
        self.agency_left[case.agency] -= self.cost(case, counselor)
        self.sessions.append(session)
        return session


class _Booker:
    def __init__(self, inst: Instance, cheapest_first: bool = False) -> None:
        self.inst = inst
        self.ledger = _Ledger.fresh(inst)
        self.cheapest_first = cheapest_first
        # Re-planning: the booked sessions stay where they are (booked.py),
        # and their cases book around them.
        self.held: dict[str, list[Session]] = defaultdict(list)
        for b in inst.booked:
            booked_case = inst.case_by_id[b.case]
            counselor = inst.counselor_by_id[b.counselor]
            self.held[b.case].append(self.ledger.book(booked_case, counselor, b.start, b.modality))
        self.listed = {k.id: n for n, k in enumerate(inst.counselors)}
        # Each counselor's intervals by every day they touch, so a candidate
        # start meets only that counselor's intervals of that day.
        self.on_day: dict[tuple[str, date], list[Interval]] = defaultdict(list)
        for k in inst.counselors:
            for iv in k.availability:
                for d in _days(iv):
                    self.on_day[(k.id, d)].append(iv)

    def _grid_starts(
        self, case: Case, lo: datetime, hi: datetime, last_start: datetime
    ) -> list[datetime]:
        """Slot starts in [lo, hi), up to `last_start`, where the session fits
        inside one interval of the case's availability (rule 2)."""
        length = timedelta(minutes=case.minutes)
        starts: set[datetime] = set()
        for iv in case.availability:
            t, end = _align_up(max(iv.start, lo), self.inst.slot_minutes), min(iv.end, hi)
            while t + length <= end and t <= last_start:
                starts.add(t)
                t = _align_up(t + ONE_MINUTE, self.inst.slot_minutes)
        return sorted(starts)

    def _earliest(
        self, case: Case, counselors: Sequence[Counselor], starts: Sequence[datetime]
    ) -> _Offer | None:
        """The earliest start some counselor can take; ties to the cheaper
        (or to the one listed first, as a front desk's list would have it)."""
        length = timedelta(minutes=case.minutes)
        for t in starts:
            end, day = t + length, t.date()
            offers = [
                _Offer(t, k, self.inst.rate_of(k))
                for k in counselors
                if any(iv.holds(t, end) for iv in self.on_day.get((k.id, day), ()))
                and self.ledger.free(case, k, t, end)
            ]
            if offers:
                if self.cheapest_first:
                    return min(offers, key=_Offer.key)
                return min(offers, key=lambda o: self.listed[o.counselor.id])
        return None

    def _in_week(
        self,
        case: Case,
        counselors: Sequence[Counselor],
        anchor: str | None,
        lo: datetime,
        hi: datetime,
        last_start: datetime,
    ) -> _Offer | None:
        starts = self._grid_starts(case, lo, hi, last_start)
        if not starts:
            return None
        usable = [k for k in counselors if self.ledger.affordable(case, k)]
        mine = [k for k in usable if k.id == anchor]
        return self._earliest(case, mine, starts) or self._earliest(case, usable, starts)

    def next_session(
        self,
        case: Case,
        counselors: Sequence[Counselor],
        anchor: str | None,
        not_before: datetime,
        last_start: datetime,
    ) -> _Offer | None:
        """The earliest week from `not_before` with a slot, anchor first."""
        h = self.inst.horizon
        week = h.start + timedelta(weeks=max(0, (not_before - h.start) // timedelta(weeks=1)))
        while week < h.end and week <= last_start:
            next_week = week + timedelta(weeks=1)
            if not self.ledger.week_full(case, week):
                offer = self._in_week(
                    case, counselors, anchor, max(week, not_before), next_week, last_start
                )
                if offer is not None:
                    return offer
            week = next_week
        return None

    def serve(self, case: Case) -> None:
        inst = self.inst
        counselors = inst.qualified(case)
        if not inst.rules.min_session_minutes <= case.minutes <= inst.rules.max_session_minutes:
            return  # a length the rules forbid: never bookable
        ref = inst.reference_time(case)
        held = sorted(self.held.get(case.id, []), key=lambda s: s.start)
        anchor = case.preferred_counselor or (held[0].counselor if held else None)
        not_before = ref
        if held:  # after the last booked week, so a crisis case's first stays first
            monday = held[-1].start.date() - timedelta(days=held[-1].start.weekday())
            not_before = datetime.combine(
                monday + timedelta(weeks=1), datetime.min.time(), tzinfo=held[-1].start.tzinfo
            )
        got = len(held)
        while got < case.sessions and self.ledger.entitled(case):
            last_start = inst.horizon.end
            if case.kind is CaseKind.CRISIS and got == 0:
                last_start = ref + inst.rules.crisis_deadline
            offer = self.next_session(case, counselors, anchor, not_before, last_start)
            if offer is None:
                break
            session = self.ledger.book(case, offer.counselor, offer.start)
            anchor = anchor or offer.counselor.id
            got += 1
            # one session a week: the next one no earlier than next Monday
            monday = session.start.date() - timedelta(days=session.start.weekday())
            not_before = datetime.combine(
                monday + timedelta(weeks=1), datetime.min.time(), tzinfo=session.start.tzinfo
            )


def solve(
    inst: Instance, order: str = "crisis-first", explain: bool = True, cheapest_first: bool = False
) -> Schedule:
    """The first-come-first-served schedule; `explain` adds why each case
    left short is (the optimizer, which only starts from it, skips that);
    `cheapest_first` breaks ties between counselors by rate, else by the
    order the instance lists them in."""
    booker = _Booker(inst, cheapest_first)
    for case in booking_order(inst, order):
        booker.serve(case)
    sessions = tuple(sorted(booker.ledger.sessions, key=lambda s: (s.start, s.counselor)))
    return Schedule(
        instance=inst.name,
        sessions=sessions,
        unserved=reasons.unserved(inst, sessions) if explain else (),
        solver={"name": "fcfs-greedy", "order": order, "status": "heuristic"},
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.matcher.optimization.greedy",
        description="First-come-first-served booking of an instance; the schedule on stdout.",
    )
    parser.add_argument("instance")
    parser.add_argument("--order", choices=ORDERS, default="crisis-first")
    args = parser.parse_args(argv)
    try:
        inst = load_instance(args.instance)
    except (OSError, FormatError) as e:
        print(f"greedy: cannot read input: {e}", file=sys.stderr)
        return 2
    json.dump(dump_schedule(solve(inst, args.order)), sys.stdout, ensure_ascii=False, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
