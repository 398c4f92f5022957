"""ProposeGroupSessions end to end: the calendar asks the matcher for the
open cases accepting a group and for the counselors' free time, and
proposes sessions most can make, keeping each person to one session a
week."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest

from eap.calendar.v1 import calendar_pb2 as cpb
from eap.calendar.v1 import calendar_pb2_grpc
from eap.matcher.v1 import matcher_pb2 as pb
from tests.conftest import MONDAY, Suite
from tests.test_matcher_booking import book, case, local, slots, span, submit
from tests.test_quota_rpcs import refused

NEXT_MONDAY = MONDAY + dt.timedelta(weeks=1)


@pytest.fixture
def three(suite_with_calendar: Suite) -> tuple[Suite, calendar_pb2_grpc.CalendarServiceAsyncStub]:
    assert suite_with_calendar.calendar is not None
    return suite_with_calendar, suite_with_calendar.calendar


def _request(**changes: object) -> cpb.ProposeGroupSessionsRequest:
    fields: dict[str, object] = {
        "category": "psychological",
        "counselor_ids": ["C001"],
        "first_date": MONDAY.isoformat(),
        "last_date": (MONDAY + dt.timedelta(days=13)).isoformat(),
        "duration_minutes": 90,
        "min_size": 3,
    }
    return cpb.ProposeGroupSessionsRequest(**{**fields, **changes})  # type: ignore[arg-type]


async def test_proposals_gather_most_and_keep_the_weekly_rule(
    three: tuple[Suite, calendar_pb2_grpc.CalendarServiceAsyncStub],
) -> None:
    suite, calendar = three
    afternoons = [span(MONDAY, 13, 17), span(NEXT_MONDAY, 13, 17)]
    for n in range(1, 6):
        await submit(suite, case(f"K{n}", f"E{n}", accepts_group=True, availability=afternoons))
    # E1 already has an individual session in the first week.
    await submit(suite, case("I1", "E1", availability=[span(MONDAY, 9, 12)]))
    await book(suite, (await slots(suite, "I1"))[0], "I1")
    # Not in a group: K6 declines groups, K7 is about something else.
    await submit(suite, case("K6", "E6", availability=afternoons))
    await submit(
        suite,
        case("K7", "E7", accepts_group=True, category=pb.CATEGORY_FAMILY, availability=afternoons),
    )
    proposals = (await calendar.ProposeGroupSessions(_request())).proposals
    assert [(local(p.start).date(), local(p.start).time()) for p in proposals] == [
        (MONDAY, dt.time(13, 30)),
        (NEXT_MONDAY, dt.time(13, 30)),
    ]
    first, second = (set(p.case_ids) for p in proposals)
    assert first == {"K2", "K3", "K4", "K5"}  # E1 has that week's session already
    assert second == {"K1", "K2", "K3", "K4", "K5"}
    assert all(p.counselor_id == "C001" for p in proposals)
    assert all(local(p.end) - local(p.start) == dt.timedelta(minutes=90) for p in proposals)


async def test_bad_proposal_requests_are_refused(
    three: tuple[Suite, calendar_pb2_grpc.CalendarServiceAsyncStub],
) -> None:
    _, calendar = three
    for changes in (
        {"category": "astrology"},
        {"duration_minutes": 20},
        {"last_date": "2027-01-01"},
        {"min_size": 8, "max_size": 4},
    ):
        error = await refused(calendar.ProposeGroupSessions(_request(**changes)))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, changes
    unknown = await refused(calendar.ProposeGroupSessions(_request(counselor_ids=["C404"])))
    assert unknown.code() == grpc.StatusCode.NOT_FOUND
