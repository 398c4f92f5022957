"""ListCases (issue 15, item 4): an employee's own cases, newest first, in
pages, with every booking they had; never anyone else's."""

from __future__ import annotations

import grpc

from eap.matcher.v1 import matcher_pb2 as mpb
from tests.access import Secured
from tests.quota.test_rpcs import refused
from tests.runtime.test_access import _book, submit_own


async def test_an_employee_pages_through_their_own_cases(secured_suite: Secured) -> None:
    suite = secured_suite
    e1 = suite.as_("employee", "E1")
    mine = [await submit_own(suite, f"r{n}", "E1", sessions_wanted=n + 1) for n in range(3)]
    theirs = await submit_own(suite, "r0", "E2")
    booked = await _book(suite, mine[0], "E1")
    await suite.matcher.CancelBooking(
        mpb.CancelBookingRequest(booking_id=booked.booking_id), metadata=e1
    )
    first = await suite.matcher.ListCases(mpb.ListCasesRequest(page_size=2), metadata=e1)
    assert first.next_page_token
    second = await suite.matcher.ListCases(
        mpb.ListCasesRequest(page_size=2, page_token=first.next_page_token), metadata=e1
    )
    assert not second.next_page_token
    listed = [c.case.case_id for c in [*first.cases, *second.cases]]
    assert listed == mine[::-1]  # newest first, every one once, none of E2's
    (oldest,) = second.cases
    assert [b.state for b in oldest.bookings] == [mpb.BOOKING_STATE_CANCELLED]  # kept, not hidden
    # Naming someone else is refused; an administrator may.
    other = suite.matcher.ListCases(mpb.ListCasesRequest(employee_id="E2"), metadata=e1)
    assert (await refused(other)).code() == grpc.StatusCode.PERMISSION_DENIED
    admin = suite.as_("admin", "eap-admin")
    theirs_listed = await suite.matcher.ListCases(
        mpb.ListCasesRequest(employee_id="E2"), metadata=admin
    )
    assert [c.case.case_id for c in theirs_listed.cases] == [theirs]
    everyone = await suite.matcher.ListCases(mpb.ListCasesRequest(page_size=100), metadata=admin)
    assert {c.case.case_id for c in everyone.cases} >= {*mine, theirs}
    bad = suite.matcher.ListCases(mpb.ListCasesRequest(page_token="nonsense"), metadata=e1)
    assert (await refused(bad)).code() == grpc.StatusCode.INVALID_ARGUMENT
