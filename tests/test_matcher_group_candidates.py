"""Cases that accept a group session, listed for group proposals with what
each must respect: sessions still wanted, weeks already taken, entitlement
left."""

from __future__ import annotations

import datetime as dt

import grpc

from eap.matcher.v1 import matcher_pb2 as pb
from tests.conftest import MONDAY, Suite, at
from tests.test_matcher_booking import book, case, local, slots, submit
from tests.test_quota_rpcs import refused


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
