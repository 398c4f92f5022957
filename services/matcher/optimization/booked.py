"""Re-planning around sessions already booked: what a schedule must do with
them, what it costs to move one, and why a move was worth it.

HR re-runs the match every week as cases arrive. A job may take the
horizon's bookings as fixed (they are then not in the instance at all: the
counselors' time, the employees' weeks and the quota they hold are simply
gone) or as movable, when they appear in the instance's `booked` list (our
extension of FORMAT.md, which the shared checker ignores). A movable
booking is a promise to the person who holds it, so:

- the case keeps a session in the booked session's ISO week (rule 8 of
  `verify`, beside FORMAT.md's seven): at the same counselor and start it
  is *kept*; anywhere else in that week (another time, another qualified
  counselor) it is *moved*, and nobody is left without the week's session;
- each move costs `weights.move` score points, so the solver moves a
  session only where that buys more: room for a crisis case within its
  deadline, a session for someone waiting, a counselor the case sees anyway.

The booked sessions count among the case's `sessions`, and the instance
gives back what they hold (their time is in both availabilities, their
hours and cost in the caps, budgets and entitlement), so that keeping every
one of them is always a feasible schedule.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from fractions import Fraction

from services.matcher.optimization.instance import Booked, CaseKind, Instance, Session
from services.rules.office_time import IsoWeek, iso_week
from services.runtime.i18n import N_

KEEP_RULE = 8  # its number among verify's rules, after FORMAT.md's seven


class MoveReason(StrEnum):
    """Why a booked session was moved, from what took its place."""

    ROOM_FOR_CRISIS = "ROOM_FOR_CRISIS"  # a crisis case's session took its time
    ROOM_FOR_CASE = "ROOM_FOR_CASE"  # another case's session took its time
    COUNSELOR_DAY = "COUNSELOR_DAY"  # freed a place under the counselor's daily limit
    CONTINUITY = "CONTINUITY"  # now with the counselor who holds the case's other sessions
    BETTER_FIT = "BETTER_FIT"  # the score gained otherwise (cost, waiting)


# What HR reads beside each proposed move ({case}: the case taking its place).
WORDS: dict[MoveReason, str] = {
    MoveReason.ROOM_FOR_CRISIS: N_("makes room for crisis case {case} within its deadline"),
    MoveReason.ROOM_FOR_CASE: N_("makes room for case {case}"),
    MoveReason.COUNSELOR_DAY: N_("frees a place in the counselor's day for case {case}"),
    MoveReason.CONTINUITY: N_("to the counselor who holds the case's other sessions"),
    MoveReason.BETTER_FIT: N_("a better schedule overall (cost or waiting)"),
}


@dataclass(frozen=True)
class Move:
    booked: Booked
    to: Session | None  # None: the week's session was lost (rule 8 broken)
    reason: MoveReason
    for_case: str = ""  # the case that took the booked session's place, if one did


def _same_place(booked: Booked, session: Session) -> bool:
    return session.counselor == booked.counselor and session.start == booked.start


def _week_sessions(sessions: Iterable[Session]) -> dict[tuple[str, IsoWeek], list[Session]]:
    by_week: dict[tuple[str, IsoWeek], list[Session]] = defaultdict(list)
    for s in sessions:
        by_week[(s.case, iso_week(s.start))].append(s)
    return by_week


def _displaced(inst: Instance, sessions: Sequence[Session]) -> list[tuple[Booked, Session | None]]:
    """Each booked session the schedule does not keep in place, with its
    case's session of that week (None: there is none)."""
    if not inst.booked:
        return []
    by_week = _week_sessions(sessions)
    found = []
    for booked in inst.booked:
        week = by_week.get((booked.case, iso_week(booked.start)), [])
        if not any(_same_place(booked, s) for s in week):
            found.append((booked, min(week, key=lambda s: s.start) if week else None))
    return found


def moves(inst: Instance, sessions: Sequence[Session]) -> list[Move]:
    """Each booked session the schedule does not keep in place, with where
    it went and why."""
    return [_explained(inst, b, to, sessions) for b, to in _displaced(inst, sessions)]


def moved_count(inst: Instance, sessions: Sequence[Session]) -> int:
    """How many booked sessions are not kept in place (lost ones included:
    rule 8 refuses those anyway). The score's term: no reasons worked out."""
    return len(_displaced(inst, sessions))


def lost(inst: Instance, sessions: Sequence[Session]) -> list[Booked]:
    """Booked sessions whose case has no session left in their week."""
    return [b for b, to in _displaced(inst, sessions) if to is None]


def _explained(
    inst: Instance, booked: Booked, to: Session | None, sessions: Sequence[Session]
) -> Move:
    if to is None:
        return Move(booked, None, MoveReason.BETTER_FIT)
    case = inst.case_by_id[booked.case]
    minutes = case.minutes
    end = booked.start + timedelta(minutes=minutes)
    taking = sorted(
        (
            s
            for s in sessions
            if s.counselor == booked.counselor
            and s.case != booked.case
            and s.start < end
            and booked.start < s.end
        ),
        key=lambda s: (inst.case_by_id[s.case].kind is not CaseKind.CRISIS, s.start),
    )
    if taking:
        other = inst.case_by_id[taking[0].case]
        crisis = other.kind is CaseKind.CRISIS
        reason = MoveReason.ROOM_FOR_CRISIS if crisis else MoveReason.ROOM_FOR_CASE
        return Move(booked, to, reason, other.id)
    same_day = [
        s
        for s in sessions
        if s.counselor == booked.counselor
        and s.case != booked.case
        and s.start.date() == booked.start.date()
    ]
    counselor = inst.counselor_by_id[booked.counselor]
    if to.counselor != booked.counselor and len(same_day) >= counselor.max_sessions_per_day:
        return Move(booked, to, MoveReason.COUNSELOR_DAY, same_day[0].case)
    others = [s for s in sessions if s.case == booked.case and s is not to]
    if to.counselor != booked.counselor and any(s.counselor == to.counselor for s in others):
        return Move(booked, to, MoveReason.CONTINUITY)
    return Move(booked, to, MoveReason.BETTER_FIT)


def kept_in_place(inst: Instance) -> list[Session]:
    """Every booked session where it is: the schedule that moves nothing."""
    return [
        Session(b.case, b.counselor, b.start, inst.case_by_id[b.case].minutes, b.modality)
        for b in inst.booked
    ]


def booked_weeks(inst: Instance) -> dict[str, set[IsoWeek]]:
    """By case, the ISO weeks in which it must keep a session."""
    weeks: dict[str, set[IsoWeek]] = defaultdict(set)
    for b in inst.booked:
        weeks[b.case].add(iso_week(b.start))
    return weeks


def undo_needless(
    inst: Instance,
    sessions: Sequence[Session],
    score: Callable[[Sequence[Session]], Fraction | None],
) -> list[Session]:
    """`sessions` with each move put back where the schedule scores better
    without it (`score`: None where a rule breaks), and every cycle of moves
    put back where that keeps the rules. A search that moves a session to
    make room and later gives the room to nobody leaves such moves behind,
    each costing a person their appointment for nothing; and moves that
    wait on each other's places in a ring (A into B's, B into A's) cannot
    be made one at a time, as applying them must."""
    current = list(sessions)
    best = score(current)
    changed = True
    while changed and best is not None:
        changed = False
        planned = [m for m in moves(inst, current) if m.to is not None]
        groups = [[m] for m in planned] + [ring for ring in _rings(inst, planned) if len(ring) > 1]
        for group in groups:
            trial = _put_back(inst, current, group)
            if trial is None:
                continue  # undone already by an earlier group of this pass
            found = score(trial)
            ring = len(group) > 1
            if found is not None and (found > best or ring):
                current, best, changed = trial, found, True
                break  # the moves have changed: look again
    return current


def _put_back(
    inst: Instance, sessions: list[Session], group: Sequence[Move]
) -> list[Session] | None:
    targets = {id(m.to): m.booked for m in group}
    if not all(any(s is m.to for s in sessions) for m in group):
        return None
    minutes = {b.case: inst.case_by_id[b.case].minutes for b in targets.values()}
    return [
        Session(b.case, b.counselor, b.start, minutes[b.case], b.modality)
        if (b := targets.get(id(s))) is not None
        else s
        for s in sessions
    ]


def _rings(inst: Instance, planned: Sequence[Move]) -> list[list[Move]]:
    """The moves in groups that wait on each other in a ring: a move waits
    on another whose booked place its new place overlaps (Tarjan's strongly
    connected components)."""

    def overlaps(a: Move, b: Move) -> bool:
        assert a.to is not None
        end = b.booked.start + timedelta(minutes=inst.case_by_id[b.booked.case].minutes)
        return (
            a.to.counselor == b.booked.counselor and a.to.start < end and b.booked.start < a.to.end
        )

    waits = {
        i: [j for j, b in enumerate(planned) if j != i and overlaps(a, b)]
        for i, a in enumerate(planned)
    }
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    stack: list[int] = []
    on_stack: set[int] = set()
    found: list[list[Move]] = []

    def visit(v: int) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in waits[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            ring = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                ring.append(planned[w])
                if w == v:
                    break
            found.append(ring)

    for v in range(len(planned)):
        if v not in index:
            visit(v)
    return found
