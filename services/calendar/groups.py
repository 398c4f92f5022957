"""Group counseling sessions: proposed here, booked through the matcher.

The calendar knows when people and rooms are free; the matcher knows the
cases, and with the quota service it keeps the rules a session must keep
(one session per person per week, entitlement, provider hours, budget).
So proposals are made from what the matcher lists (`group_sessions.py`),
and booking hands each session back to the matcher, which checks every
rule again at that moment: a proposal may be stale by the time HR books it.

Booked sessions are not written into a programme plan: a plan's calendar
is shared with whole offices, and who attends counseling is confidential.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from eap.matcher.v1 import matcher_pb2 as mpb
from services.calendar.group_sessions import GroupProposal, propose_group_sessions
from services.calendar.matcher_port import GroupBooking, MatcherPort
from services.calendar.office_days import OfficeDays
from services.calendar.program_file import DEFAULT_OFFICE_HOURS
from services.rules.sessions import SESSION_LENGTH_TEXT, session_length_ok
from services.runtime.errors import FailedPrecondition, InvalidArgument
from services.runtime.fields import FieldChecker

MAX_GROUP = 30  # the quota service's largest group share
MAX_SESSIONS = 50  # one request books at most this many sessions


@dataclass(frozen=True)
class GroupOutcome:
    """What became of one session HR asked to book."""

    session: GroupProposal
    group_id: str
    booked: tuple[str, ...]
    refused: tuple[tuple[str, str], ...]  # (case id, rule)
    rule: str = ""  # the rule that refused the whole session
    message: str = ""


def _enum_value(enum: object, prefix: str, text: str) -> int | None:
    name = f"{prefix}_{text.upper()}"
    values = dict(enum.items())  # type: ignore[attr-defined]
    return values.get(name) if text else None


def group_id_of(session: GroupProposal) -> str:
    """The same session always gets the same id, so a retried booking
    finds the group it booked instead of booking it twice."""
    key = "|".join([session.counselor_id, session.start.isoformat(), *sorted(session.case_ids)])
    return "grp-" + hashlib.sha256(key.encode()).hexdigest()[:32]


class GroupSessions:
    def __init__(self, matcher: MatcherPort, office_days: OfficeDays) -> None:
        self._matcher = matcher
        self._office_days = office_days

    async def propose(
        self,
        category: str,
        counselor_ids: list[str],
        first_text: str,
        last_text: str,
        minutes: int,
        min_size: int,
        max_size: int,
        modality: str = "",
    ) -> list[GroupProposal]:
        checker = FieldChecker()
        category_value = _enum_value(mpb.Category, "CATEGORY", category)
        checker.require(category_value is not None, "category", "a matcher category, e.g. family")
        checker.require(
            not modality or _enum_value(mpb.Modality, "MODALITY", modality) is not None,
            "modality",
            "empty (any), in_person, video or phone",
        )
        checker.require(1 <= len(counselor_ids) <= 50, "counselor_ids", "1 to 50 counselors")
        checker.require(session_length_ok(minutes), "duration_minutes", SESSION_LENGTH_TEXT)
        for field, size in (("min_size", min_size), ("max_size", max_size)):
            checker.require(size == 0 or 2 <= size <= MAX_GROUP, field, f"0 or 2 to {MAX_GROUP}")
        first = checker.date(first_text, "first_date")
        last = checker.date(last_text, "last_date")
        if first and last:
            checker.require(
                first <= last and (last - first).days < 92,
                "last_date",
                "within 92 days, on or after first_date",
            )
        checker.raise_if_any()
        assert first is not None and last is not None and category_value is not None
        smallest, largest = min_size or 4, max_size or 10
        if smallest > largest:
            raise InvalidArgument.single("min_size", "at most max_size")
        start = datetime.combine(first, datetime.min.time())
        end = datetime.combine(last + timedelta(days=1), datetime.min.time())
        candidates = await self._matcher.group_candidates(category_value, start, end)
        if modality:
            candidates = [c for c in candidates if modality.lower() in c.modalities]
        leaders = await self._matcher.free_time(counselor_ids, start, end)
        calendar = await self._office_days.calendar(first, last)
        return propose_group_sessions(
            candidates,
            leaders,
            minutes,
            first,
            last,
            calendar,
            DEFAULT_OFFICE_HOURS,
            min_size=smallest,
            max_size=largest,
        )

    async def book(
        self, sessions: Sequence[GroupProposal], modality: str, min_size: int
    ) -> list[GroupOutcome]:
        """Books each session on its own; one refused session does not stop
        the others."""
        checker = FieldChecker()
        checker.require(
            1 <= len(sessions) <= MAX_SESSIONS, "sessions", f"1 to {MAX_SESSIONS} sessions"
        )
        modality_value = _enum_value(mpb.Modality, "MODALITY", modality)
        checker.require(modality_value is not None, "modality", "in_person, video or phone")
        checker.require(
            min_size == 0 or 2 <= min_size <= MAX_GROUP, "min_size", f"0 (2) or 2 to {MAX_GROUP}"
        )
        for n, session in enumerate(sessions):
            field = f"sessions[{n}]"
            checker.identifier(session.counselor_id, f"{field}.counselor_id")
            minutes = (session.end - session.start) / timedelta(minutes=1)
            checker.require(
                session_length_ok(int(minutes)) and minutes == int(minutes),
                f"{field}.end",
                f"{SESSION_LENGTH_TEXT}, ending after its start",
            )
            checker.require(
                2 <= len(session.case_ids) <= MAX_GROUP,
                f"{field}.case_ids",
                f"2 to {MAX_GROUP} cases",
            )
            for m, case_id in enumerate(session.case_ids):
                checker.identifier(case_id, f"{field}.case_ids[{m}]")
        checker.raise_if_any()
        assert modality_value is not None
        outcomes = []
        for session in sessions:
            group_id = group_id_of(session)
            try:
                booked: GroupBooking = await self._matcher.book_group(
                    group_id, session, modality_value, min_size
                )
            except FailedPrecondition as refusal:
                outcomes.append(GroupOutcome(session, "", (), (), refusal.rule, refusal.message))
                continue
            outcomes.append(GroupOutcome(session, group_id, booked.case_ids, booked.refused))
        return outcomes
