"""Cases that accept a group session, listed for group proposals with what
each must respect: sessions still wanted, weeks already taken, entitlement
left."""

from __future__ import annotations

import datetime as dt

import grpc

from eap.matcher.v1 import matcher_pb2 as pb
from tests.conftest import MONDAY, Suite, at
from tests.county import counselor
from tests.matcher.test_booking import book, case, local, slots, submit
from tests.quota.test_rpcs import refused


def _request(**changes: object) -> pb.ListGroupCandidatesRequest:
    request = pb.ListGroupCandidatesRequest(
        category=pb.CATEGORY_PSYCHOLOGICAL,
        window_start=at(MONDAY, 0),
        window_end=at(MONDAY + dt.timedelta(weeks=2), 0),
    )
    for name, value in changes.items():
        if isinstance(value, int):
            setattr(request, name, value)
        else:
            getattr(request, name).CopyFrom(value)
    return request


async def test_open_cases_accepting_a_group_with_their_limits(suite: Suite) -> None:
    await submit(suite, case("K1", "E1", accepts_group=True))
    await submit(suite, case("K2", "E2", accepts_group=True))
    await submit(suite, case("K3", "E3"))  # prefers individual sessions only
    await submit(suite, case("K4", "E4", accepts_group=True, category=pb.CATEGORY_LEGAL))
    await submit(suite, case("K5", "E5", accepts_group=True, sessions_wanted=1))
    booked = await book(suite, (await slots(suite, "K2"))[0], "K2")
    await book(suite, (await slots(suite, "K5"))[0], "K5")  # K5 now has all it wants
    found = (await suite.matcher.ListGroupCandidates(_request())).candidates
    by_case = {c.case_id: c for c in found}
    assert list(by_case) == ["K1", "K2"]
    first, second = by_case["K1"], by_case["K2"]
    assert (first.sessions_left, list(first.booked_weeks)) == (2, [])
    assert first.entitlement_minutes_left == -1  # no account opened yet: the full policy applies
    year, week, _ = local(booked.start).isocalendar()
    assert (second.sessions_left, list(second.booked_weeks)) == (1, [f"{year}-W{week:02d}"])
    assert second.entitlement_minutes_left == 360 - 60
    assert second.employee_id == "E2" and second.agency_id == "PT-HR" and second.minutes == 60
    # Availability comes cut to the window.
    window = (MONDAY, MONDAY + dt.timedelta(weeks=2))
    assert all(window[0] <= local(r.start).date() < window[1] for r in first.availability)
    stored = await suite.matcher.GetCase(pb.GetCaseRequest(case_id="K1"))
    assert stored.case.accepts_group


async def test_bad_requests_are_refused(suite: Suite) -> None:
    too_long = _request(window_end=at(MONDAY + dt.timedelta(days=100), 0))
    for request in (too_long, _request(category=pb.CATEGORY_UNSPECIFIED)):
        error = await refused(suite.matcher.ListGroupCandidates(request))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def _free_request(*ids: str, days: int = 7) -> pb.ListCounselorFreeTimeRequest:
    request = pb.ListCounselorFreeTimeRequest(counselor_ids=list(ids))
    request.window_start.CopyFrom(at(MONDAY, 0))
    request.window_end.CopyFrom(at(MONDAY + dt.timedelta(days=days), 0))
    return request


def _ranges(free: pb.CounselorFreeTime) -> list[tuple[str, str]]:
    return [(f"{local(r.start):%a %H:%M}", f"{local(r.end):%a %H:%M}") for r in free.free]


async def test_counselors_free_time_leaves_out_bookings_and_full_days(suite: Suite) -> None:
    answer = await suite.matcher.ListCounselorFreeTime(_free_request("C001", "C002"))
    first, second = answer.counselors
    assert first.counselor_id == "C001" and second.counselor_id == "C002"
    # Monday 09-12 and 13:30-17, Wednesday 18-21.
    week = [("Mon 09:00", "Mon 12:00"), ("Mon 13:30", "Mon 17:00"), ("Wed 18:00", "Wed 21:00")]
    assert _ranges(first) == week
    await submit(suite, case())
    offer = next(s for s in await slots(suite) if s.counselor_id == "C001")
    await book(suite, offer)
    answer = await suite.matcher.ListCounselorFreeTime(_free_request("C001"))
    (after,) = answer.counselors
    assert _ranges(after) == [("Mon 10:00", "Mon 12:00"), *week[1:]]
    # A counselor at their daily maximum has no free time left that day.
    await suite.matcher.UpsertCounselor(
        pb.UpsertCounselorRequest(counselor=counselor(max_sessions_per_day=1))
    )
    (full,) = (await suite.matcher.ListCounselorFreeTime(_free_request("C001"))).counselors
    assert _ranges(full) == [("Wed 18:00", "Wed 21:00")]


async def test_free_time_refuses_unknown_counselors_and_long_windows(suite: Suite) -> None:
    unknown = await refused(suite.matcher.ListCounselorFreeTime(_free_request("C404")))
    assert unknown.code() == grpc.StatusCode.NOT_FOUND
    long = await refused(suite.matcher.ListCounselorFreeTime(_free_request("C001", days=100)))
    assert long.code() == grpc.StatusCode.INVALID_ARGUMENT
