"""The access policy, walked over the running suite in `jwt` mode: every
RPC against every role, and against tokens that must not get in
(policy.py is the table; these tests hold the servers to it). Then an
employee trying every way to reach another employee's case."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from grpc_reflection.v1alpha import reflection_pb2

from eap.audit.v1 import audit_pb2
from eap.calendar.v1 import calendar_pb2
from eap.matcher.v1 import matcher_pb2 as mpb
from eap.notifier.v1 import notifier_pb2
from eap.quota.v1 import quota_pb2 as qpb
from services.runtime import policy
from services.runtime.auth import Role
from tests.access import Keys, Metadata, Secured, bearer
from tests.conftest import MONDAY, at, during
from tests.county import account, case_id
from tests.matcher.test_booking import case
from tests.quota.test_rpcs import refused

REFLECTION = "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


def our_methods() -> dict[str, MethodDescriptor]:
    """Every RPC of our services, from their descriptors."""
    found = {}
    for module in (qpb, mpb, calendar_pb2, audit_pb2, notifier_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                found[f"{service.full_name}/{method.name}"] = method
    return found


METHODS = our_methods()
# Called by a link's holder, signed in or not: the token in the request
# decides (test_link_methods_take_the_links_token_and_no_sign_in).
SIGNED_IN = [m for m in METHODS if m not in policy.LINK_METHODS]


@dataclass(frozen=True)
class Caller:
    role: Role
    subject: str

    def token(self, made: Keys) -> str:
        kid = f"service-{self.subject}" if self.role is Role.SERVICE else None
        return made.token(self.role.value, self.subject, **({"kid": kid} if kid else {}))

    def allowed(self, method: str) -> bool:
        access = policy.POLICY[method]
        if self.role is Role.SERVICE:
            return self.subject in access.services
        return self.role in access.scopes


CALLERS = [
    Caller(Role.EMPLOYEE, "E1"),
    Caller(Role.COUNSELOR, "C001"),
    Caller(Role.SUPERVISOR, "S1"),
    Caller(Role.ADMIN, "eap-admin"),
    Caller(Role.HR, "hr-1"),
    Caller(Role.AUDITOR, "audit-1"),
    Caller(Role.OPERATOR, "ops-1"),
    Caller(Role.SERVICE, "matcher"),
    Caller(Role.SERVICE, "calendar"),
]


async def _call(channel: grpc.aio.Channel, method: str, metadata: Metadata) -> grpc.StatusCode:
    """Calls `method` with an empty request; the status it ends with."""
    path = f"/{method}"
    try:
        if method == REFLECTION:
            return await _reflect(channel, metadata)
        descriptor = METHODS[method]
        request = message_factory.GetMessageClass(descriptor.input_type)().SerializeToString()
        if descriptor.server_streaming:
            async for _ in channel.unary_stream(path)(request, metadata=metadata, timeout=5):
                break
        else:
            await channel.unary_unary(path)(request, metadata=metadata, timeout=5)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def _reflect(channel: grpc.aio.Channel, metadata: Metadata) -> grpc.StatusCode:
    """Lists the services by reflection. On a loaded machine the client's
    first write now and then fails inside gRPC's core, which the client
    reports as INTERNAL "Internal error from Core": no status the server
    sent, so that call is made again (at most twice)."""
    for attempt in (1, 2, 3):
        stream = channel.stream_stream(f"/{REFLECTION}")(metadata=metadata, timeout=5)
        ask = reflection_pb2.ServerReflectionRequest(list_services="")
        try:
            await stream.write(ask.SerializeToString())
            await stream.done_writing()
            await stream.read()
            stream.cancel()
            return grpc.StatusCode.OK
        except asyncio.InvalidStateError:  # refused before the request went out
            return await stream.code()
        except grpc.aio.AioRpcError as error:
            in_core = error.details() == "Internal error from Core"
            if not in_core or attempt == 3:
                return error.code()
    raise AssertionError("unreachable")


def test_every_rpc_is_in_the_policy_table() -> None:
    assert set(METHODS) - set(policy.POLICY) == set()  # an RPC missing would be refused
    assert set(policy.POLICY) - set(METHODS) == {REFLECTION}  # no row for a gone RPC


async def test_every_rpc_allows_exactly_the_roles_in_the_table(secured_suite: Secured) -> None:
    suite = secured_suite
    mismatches = []
    for method in [*SIGNED_IN, REFLECTION]:
        for caller in CALLERS:
            code = await _call(suite.channel, method, bearer(caller.token(suite.made)))
            refused_at_the_door = code in (
                grpc.StatusCode.PERMISSION_DENIED,
                grpc.StatusCode.UNAUTHENTICATED,
            )
            if caller.allowed(method) == refused_at_the_door:
                mismatches.append(f"{method} as {caller.role}/{caller.subject}: {code.name}")
    assert mismatches == []


async def test_no_rpc_lets_in_a_missing_or_bad_token(secured_suite: Secured) -> None:
    suite = secured_suite
    made = suite.made
    bad = {
        "no token": (),
        "expired": bearer(made.token("admin", "a", exp=1_700_000_000)),
        "wrong audience": bearer(made.token("admin", "a", aud="another-suite")),
        "unknown key": bearer(made.token("admin", "a", kid="stranger")),
        "forged signature": bearer(made.token("admin", "a", signer="stranger")),
    }
    let_in = [
        f"{method} with {name}: {code.name}"
        for method in [*SIGNED_IN, REFLECTION]
        for name, metadata in bad.items()
        if (code := await _call(suite.channel, method, metadata))
        is not grpc.StatusCode.UNAUTHENTICATED
    ]
    assert let_in == []


async def test_link_methods_take_the_links_token_and_no_sign_in(secured_suite: Secured) -> None:
    """Whoever calls, signed in or not, with a token or a bad one: a link
    that is none of ours is NOT_FOUND, never let in as the caller's role."""
    suite = secured_suite
    admin = bearer(suite.made.token("admin", "eap-admin"))
    codes = {
        (method, signed): await _call(suite.channel, method, metadata)
        for method in sorted(policy.LINK_METHODS)
        for signed, metadata in (("no token", ()), ("admin", admin))
    }
    assert set(codes.values()) == {grpc.StatusCode.NOT_FOUND}, codes
    assert set(METHODS) >= policy.LINK_METHODS


# -- one employee, another's records ---------------------------------------------------


async def submit_own(suite: Secured, request_id: str, employee: str, **changes: object) -> str:
    """The employee submits their own case; the server's id for it."""
    answer = await suite.matcher.SubmitCase(
        mpb.SubmitCaseRequest(case=case("", employee, **changes), request_id=request_id),
        metadata=suite.as_("employee", employee),
    )
    return answer.case.case_id


async def _book(suite: Secured, case_id: str, employee: str) -> mpb.Booking:
    """The employee books their case's first slot, as a frontend does for them."""
    me = suite.as_("employee", employee)
    found = await suite.matcher.FindSlots(
        mpb.FindSlotsRequest(
            case_id=case_id,
            window_start=at(MONDAY, 0),
            window_end=at(MONDAY + dt.timedelta(days=14), 0),
        ),
        metadata=me,
    )
    slot = found.slots[0]
    held = await suite.matcher.HoldSlot(
        mpb.HoldSlotRequest(case_id=case_id, counselor_id=slot.counselor_id, start=slot.start),
        metadata=me,
    )
    confirmed = await suite.matcher.ConfirmBooking(
        mpb.ConfirmBookingRequest(booking_id=held.booking.booking_id), metadata=me
    )
    return confirmed.booking


async def test_an_employee_cannot_reach_anothers_case_by_any_rpc(secured_suite: Secured) -> None:
    suite = secured_suite
    matcher, quota = suite.matcher, suite.quota
    e1, e2 = suite.as_("employee", "E1"), suite.as_("employee", "E2")
    # Employees submit and book their own cases.
    k1, k2 = await submit_own(suite, "K1", "E1"), await submit_own(suite, "K2", "E2")
    mine = await _book(suite, k1, "E1")
    theirs = await _book(suite, k2, "E2")
    theirs_held = await matcher.HoldSlot(
        mpb.HoldSlotRequest(
            case_id=k2,
            counselor_id=theirs.counselor_id,
            start=at(MONDAY + dt.timedelta(weeks=1), 9),
        ),
        metadata=e2,
    )
    assert (await matcher.GetCase(mpb.GetCaseRequest(case_id=k1), metadata=e1)).bookings

    def same_as_missing(error: grpc.aio.AioRpcError, missing: grpc.aio.AioRpcError) -> bool:
        return (error.code(), error.details()) == (missing.code(), missing.details())

    # Reading: another's case looks exactly like a case that does not exist.
    for unseen in (k2, "K404"):
        error = await refused(matcher.GetCase(mpb.GetCaseRequest(case_id=unseen), metadata=e1))
        assert error.code() == grpc.StatusCode.NOT_FOUND
    gone = await refused(matcher.GetCase(mpb.GetCaseRequest(case_id="K404"), metadata=e1))
    window = {"window_start": at(MONDAY, 0), "window_end": at(MONDAY + dt.timedelta(days=7), 0)}
    attempts = {
        "GetCase": matcher.GetCase(mpb.GetCaseRequest(case_id=k2), metadata=e1),
        "FindSlots": matcher.FindSlots(mpb.FindSlotsRequest(case_id=k2, **window), metadata=e1),
        "HoldSlot": matcher.HoldSlot(
            mpb.HoldSlotRequest(case_id=k2, counselor_id="C001", start=at(MONDAY, 14)),
            metadata=e1,
        ),
    }
    for name, call in attempts.items():
        assert same_as_missing(await refused(call), gone), name
    missing_booking = await refused(
        matcher.CancelBooking(mpb.CancelBookingRequest(booking_id="b404"), metadata=e1)
    )
    for name, call in {
        "ConfirmBooking": matcher.ConfirmBooking(
            mpb.ConfirmBookingRequest(booking_id=theirs_held.booking.booking_id), metadata=e1
        ),
        "CancelBooking": matcher.CancelBooking(
            mpb.CancelBookingRequest(booking_id=theirs.booking_id), metadata=e1
        ),
        "RescheduleBooking (theirs)": matcher.RescheduleBooking(
            mpb.RescheduleBookingRequest(
                booking_id=theirs.booking_id, new_booking_id=theirs_held.booking.booking_id
            ),
            metadata=e1,
        ),
        "HoldSlot replacing theirs": matcher.HoldSlot(
            mpb.HoldSlotRequest(
                case_id=k1,
                counselor_id="C001",
                start=at(MONDAY + dt.timedelta(weeks=1), 14),
                replaces_booking_id=theirs.booking_id,
            ),
            metadata=e1,
        ),
        "RescheduleBooking (mine onto theirs)": matcher.RescheduleBooking(
            mpb.RescheduleBookingRequest(
                booking_id=mine.booking_id, new_booking_id=theirs_held.booking.booking_id
            ),
            metadata=e1,
        ),
    }.items():
        assert same_as_missing(await refused(call), missing_booking), name

    # Submitting for someone else, completing, matching, listing: refused.
    for name, call in {
        "SubmitCase": matcher.SubmitCase(
            mpb.SubmitCaseRequest(case=case("", "E2"), request_id="K3"), metadata=e1
        ),
        "CompleteSession": matcher.CompleteSession(
            mpb.CompleteSessionRequest(booking_id=theirs.booking_id, minutes=60), metadata=e1
        ),
        "ListGroupCandidates": matcher.ListGroupCandidates(
            mpb.ListGroupCandidatesRequest(category=mpb.CATEGORY_PSYCHOLOGICAL, **window),
            metadata=e1,
        ),
        "GetMatchResult": matcher.GetMatchResult(
            mpb.GetMatchResultRequest(job_id="j"), metadata=e1
        ),
        "GetUsageSummary": quota.GetUsageSummary(
            qpb.GetUsageSummaryRequest(fiscal_year=2027), metadata=e1
        ),
    }.items():
        assert (await refused(call)).code() == grpc.StatusCode.PERMISSION_DENIED, name
    # Nor may an employee name a case: a chosen id could run into another's.
    named = matcher.SubmitCase(mpb.SubmitCaseRequest(case=case(k2, "E1")), metadata=e1)
    assert (await refused(named)).code() == grpc.StatusCode.INVALID_ARGUMENT

    # The quota: one's own entitlement, never another's, nor the whole ledger.
    own = qpb.GetBalanceRequest(account=account(qpb.ACCOUNT_KIND_EMPLOYEE, "E1"))
    assert (await quota.GetBalance(own, metadata=e1)).balance.spent == 60
    other = qpb.GetBalanceRequest(account=account(qpb.ACCOUNT_KIND_EMPLOYEE, "E2"))
    nobody = qpb.GetBalanceRequest(account=account(qpb.ACCOUNT_KIND_EMPLOYEE, "E404"))
    assert same_as_missing(
        await refused(quota.GetBalance(other, metadata=e1)),
        await refused(quota.GetBalance(nobody, metadata=e1)),
    )
    for request in (
        qpb.ListLedgerRequest(account=account(qpb.ACCOUNT_KIND_EMPLOYEE, "E2")),
        qpb.ListLedgerRequest(account=account(qpb.ACCOUNT_KIND_AGENCY, "PT-HR")),
        qpb.ListLedgerRequest(),
    ):
        error = await refused(quota.ListLedger(request, metadata=e1))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    ledger = await quota.ListLedger(
        qpb.ListLedgerRequest(account=account(qpb.ACCOUNT_KIND_EMPLOYEE, "E1")), metadata=e1
    )
    assert ledger.entries

    # Nothing of E2's changed.
    admin = suite.as_("admin", "eap-admin")
    after = await matcher.GetCase(mpb.GetCaseRequest(case_id=k2), metadata=admin)
    assert [b.state for b in after.bookings] == [mpb.BOOKING_STATE_BOOKED, mpb.BOOKING_STATE_HELD]
    assert (await quota.GetBalance(other, metadata=admin)).balance.spent == 60


async def test_counselors_see_their_own_sessions_only(secured_suite: Secured) -> None:
    suite = secured_suite
    k1 = await submit_own(suite, "K1", "E1")
    booking = await _book(suite, k1, "E1")
    lead = booking.counselor_id
    other = "C002" if lead == "C001" else "C001"
    request = mpb.GetCaseRequest(case_id=k1)
    seen = await suite.matcher.GetCase(request, metadata=suite.as_("counselor", lead))
    assert seen.case.case_id == k1
    error = await refused(suite.matcher.GetCase(request, metadata=suite.as_("counselor", other)))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    complete = mpb.CompleteSessionRequest(booking_id=booking.booking_id, minutes=60)
    error = await refused(
        suite.matcher.CompleteSession(complete, metadata=suite.as_("counselor", other))
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    with during(booking.start):
        done = await suite.matcher.CompleteSession(complete, metadata=suite.as_("counselor", lead))
    assert done.booking.state == mpb.BOOKING_STATE_COMPLETED
    # Their schedule: their own, never a colleague's.
    window = {"window_start": at(MONDAY, 0), "window_end": at(MONDAY + dt.timedelta(days=14), 0)}
    mine = await suite.matcher.ListSessions(
        mpb.ListSessionsRequest(counselor_id=lead, **window), metadata=suite.as_("counselor", lead)
    )
    assert [b.booking_id for b in mine.bookings] == [booking.booking_id]
    theirs = await refused(
        suite.matcher.ListSessions(
            mpb.ListSessionsRequest(counselor_id=lead, **window),
            metadata=suite.as_("counselor", other),
        )
    )
    assert theirs.code() == grpc.StatusCode.NOT_FOUND


async def test_a_referral_tells_the_supervisor_nothing_but_received(secured_suite: Secured) -> None:
    suite = secured_suite
    supervisor = suite.as_("supervisor", "S1")
    referral = case(
        "",
        "E9",
        kind=mpb.CASE_KIND_INVOLUNTARY,
        referral_reference="REF-2027-1",
        agency_id="",
        staff_category="",
    )
    answer = await suite.matcher.SubmitCase(
        mpb.SubmitCaseRequest(case=referral, request_id="R1"), metadata=supervisor
    )
    k9 = case_id("R1", "S1", Role.SUPERVISOR)
    assert answer.case == mpb.Case(case_id=k9) and answer.created
    voluntary = await refused(
        suite.matcher.SubmitCase(
            mpb.SubmitCaseRequest(case=case("", "E8"), request_id="R2"), metadata=supervisor
        )
    )
    assert voluntary.code() == grpc.StatusCode.PERMISSION_DENIED
    # Naming a payer would let a supervisor test where someone works.
    probing = await refused(
        suite.matcher.SubmitCase(
            mpb.SubmitCaseRequest(
                case=case("", "E9", kind=mpb.CASE_KIND_INVOLUNTARY, referral_reference="R-2"),
                request_id="R3",
            ),
            metadata=supervisor,
        )
    )
    assert probing.code() == grpc.StatusCode.PERMISSION_DENIED
    for call in (
        suite.matcher.GetCase(mpb.GetCaseRequest(case_id=k9), metadata=supervisor),
        suite.quota.GetBalance(
            qpb.GetBalanceRequest(account=account(qpb.ACCOUNT_KIND_EMPLOYEE, "E9")),
            metadata=supervisor,
        ),
    ):
        assert (await refused(call)).code() == grpc.StatusCode.PERMISSION_DENIED
    # The employee sees their case, the administrator too.
    mine = await suite.matcher.GetCase(
        mpb.GetCaseRequest(case_id=k9), metadata=suite.as_("employee", "E9")
    )
    assert mine.case.referral_reference == "REF-2027-1"


async def test_hr_sees_aggregates_never_an_employees_account(secured_suite: Secured) -> None:
    suite = secured_suite
    hr = suite.as_("hr", "hr-1")
    agency = qpb.GetBalanceRequest(account=account(qpb.ACCOUNT_KIND_AGENCY, "PT-HR"))
    assert (await suite.quota.GetBalance(agency, metadata=hr)).balance.entitled > 0
    person = qpb.GetBalanceRequest(account=account(qpb.ACCOUNT_KIND_EMPLOYEE, "E1"))
    assert (await refused(suite.quota.GetBalance(person, metadata=hr))).code() == (
        grpc.StatusCode.NOT_FOUND
    )
    await suite.quota.GetUsageSummary(qpb.GetUsageSummaryRequest(fiscal_year=2027), metadata=hr)


async def test_an_auditor_follows_the_money_not_a_person(secured_suite: Secured) -> None:
    """Agencies' pools and their ledgers, yes; an employee's account or the
    whole ledger, which holds every employee's, no."""
    suite = secured_suite
    auditor = suite.as_("auditor", "audit-1")
    agency = account(qpb.ACCOUNT_KIND_AGENCY, "PT-HR")
    person = account(qpb.ACCOUNT_KIND_EMPLOYEE, "E1")
    balance = await suite.quota.GetBalance(qpb.GetBalanceRequest(account=agency), metadata=auditor)
    assert balance.balance.entitled > 0
    await suite.quota.ListLedger(qpb.ListLedgerRequest(account=agency), metadata=auditor)
    refusal = await refused(
        suite.quota.GetBalance(qpb.GetBalanceRequest(account=person), metadata=auditor)
    )
    assert refusal.code() == grpc.StatusCode.NOT_FOUND  # as if there were no such account
    for request in (qpb.ListLedgerRequest(account=person), qpb.ListLedgerRequest()):
        refusal = await refused(suite.quota.ListLedger(request, metadata=auditor))
        assert refusal.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "an account you may read" in (refusal.details() or "")
