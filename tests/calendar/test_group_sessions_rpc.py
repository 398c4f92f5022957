"""Group sessions end to end: the calendar asks the matcher for the open
cases accepting a group and for the counselors' free time, proposes
sessions most can make, keeping each person to one session a week, and
books them through the matcher, which pays them from the quota."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest

from eap.calendar.v1 import calendar_pb2 as cpb
from eap.calendar.v1 import calendar_pb2_grpc
from eap.matcher.v1 import matcher_pb2 as pb
from eap.quota.v1 import quota_pb2 as qpb
from tests.conftest import MONDAY, Suite, at
from tests.county import RATE, account
from tests.matcher.test_booking import book, case, local, slots, span, submit
from tests.quota.test_rpcs import refused

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


async def test_proposals_are_booked_through_the_matcher_and_paid_once(
    three: tuple[Suite, calendar_pb2_grpc.CalendarServiceAsyncStub],
) -> None:
    suite, calendar = three
    afternoons = [span(MONDAY, 13, 17), span(NEXT_MONDAY, 13, 17)]
    for n in range(1, 5):
        await submit(suite, case(f"K{n}", f"E{n}", accepts_group=True, availability=afternoons))
    # K5 meets only in person; the others only by video.
    await submit(
        suite,
        case(
            "K5",
            "E5",
            accepts_group=True,
            availability=afternoons,
            modalities=[pb.MODALITY_IN_PERSON],
        ),
    )
    proposals = (
        await calendar.ProposeGroupSessions(_request(modality="video", duration_minutes=60))
    ).proposals
    assert [set(p.case_ids) for p in proposals] == [{"K1", "K2", "K3", "K4"}] * 2
    # Meanwhile E4 books an individual session in the first week.
    await submit(suite, case("I4", "E4", availability=[span(MONDAY, 9, 12)]))
    await book(suite, (await slots(suite, "I4"))[0], "I4")

    request = cpb.BookGroupSessionsRequest(sessions=proposals, modality="video")
    answer = await calendar.BookGroupSessions(request)
    first, second = answer.sessions
    assert set(first.booked_case_ids) == {"K1", "K2", "K3"}
    assert [(r.case_id, r.rule) for r in first.refused] == [("K4", "WEEKLY_LIMIT")]
    assert set(second.booked_case_ids) == {"K1", "K2", "K3", "K4"}
    assert first.group_id and first.group_id != second.group_id
    # The matcher holds them as bookings of each case, in one group.
    got = await suite.matcher.GetCase(pb.GetCaseRequest(case_id="K1"))
    assert {b.group_id for b in got.bookings} == {first.group_id, second.group_id}
    # Paid once per session: one hour of the provider's cap each, and the
    # cost of two one-hour sessions, plus E4's individual hour.
    quota = suite.quota
    provider = await quota.GetBalance(
        qpb.GetBalanceRequest(account=account(qpb.ACCOUNT_KIND_PROVIDER, "P1"))
    )
    assert provider.balance.spent == 60 + 60 + 60
    agency = await quota.GetBalance(
        qpb.GetBalanceRequest(account=account(qpb.ACCOUNT_KIND_AGENCY, "PT-HR"))
    )
    assert agency.balance.spent == 3 * RATE
    # Booking the same sessions again books nothing twice.
    again = await calendar.BookGroupSessions(request)
    assert [s.group_id for s in again.sessions] == [first.group_id, second.group_id]
    repeat = await quota.GetBalance(
        qpb.GetBalanceRequest(account=account(qpb.ACCOUNT_KIND_PROVIDER, "P1"))
    )
    assert repeat.balance.spent == provider.balance.spent


async def test_a_session_the_matcher_refuses_whole_is_reported_not_failed(
    three: tuple[Suite, calendar_pb2_grpc.CalendarServiceAsyncStub],
) -> None:
    suite, calendar = three
    afternoons = [span(MONDAY, 13, 17)]
    for n in range(1, 4):
        await submit(suite, case(f"K{n}", f"E{n}", accepts_group=True, availability=afternoons))
    (proposal,) = (
        await calendar.ProposeGroupSessions(_request(modality="video", duration_minutes=60))
    ).proposals
    outside = cpb.GroupSessionProposal()
    outside.CopyFrom(proposal)
    outside.start.seconds -= 4 * 3600  # 09:30, when none of them is free
    outside.end.seconds -= 4 * 3600
    request = cpb.BookGroupSessionsRequest(
        sessions=[outside, proposal], modality="video", min_size=3
    )
    refused_whole, booked = (await calendar.BookGroupSessions(request)).sessions
    assert (refused_whole.rule, refused_whole.group_id) == ("GROUP_TOO_SMALL", "")
    assert not refused_whole.booked_case_ids
    assert {r.rule for r in refused_whole.refused} <= {"NOT_BOOKABLE"}
    assert set(booked.booked_case_ids) == {"K1", "K2", "K3"}


async def test_bad_booking_requests_are_refused(
    three: tuple[Suite, calendar_pb2_grpc.CalendarServiceAsyncStub],
) -> None:
    _, calendar = three
    good = cpb.GroupSessionProposal(
        counselor_id="C001", start=at(MONDAY, 13), end=at(MONDAY, 14), case_ids=["K1", "K2"]
    )
    long = cpb.GroupSessionProposal(
        counselor_id="C001", start=at(MONDAY, 13), end=at(MONDAY, 16), case_ids=["K1", "K2"]
    )
    for request, field in (
        (cpb.BookGroupSessionsRequest(sessions=[good]), "modality"),
        (cpb.BookGroupSessionsRequest(sessions=[long], modality="video"), "sessions[0].end"),
        (cpb.BookGroupSessionsRequest(modality="video"), "sessions"),
        (
            cpb.BookGroupSessionsRequest(
                sessions=[cpb.GroupSessionProposal(counselor_id="C001")], modality="video"
            ),
            "sessions[0].start",
        ),
    ):
        error = await refused(calendar.BookGroupSessions(request))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert field in (error.details() or ""), (field, error.details())
