"""A case updated and withdrawn by its owner, over gRPC (issue 15, item 4):
UpdateCase changes what the case asks for without leaving a booking it
would not fit; WithdrawCase closes it, gives up what it holds and has
booked ahead, and it is offered nothing after."""

from __future__ import annotations

import datetime as dt

import grpc
from google.protobuf.field_mask_pb2 import FieldMask

from eap.matcher.v1 import matcher_pb2 as pb
from tests.access import Secured
from tests.conftest import MONDAY, Suite, at, during
from tests.matcher.test_booking import agency, book, case, hold, rule, slots, span, submit
from tests.quota.test_rpcs import details, refused
from tests.runtime.test_access import submit_own


def update(case_id: str, *paths: str, **values: object) -> pb.UpdateCaseRequest:
    return pb.UpdateCaseRequest(
        case=case(case_id, "E1", **values), update_mask=FieldMask(paths=list(paths))
    )


def fields(error: grpc.aio.AioRpcError) -> list[str]:
    return [v.field for v in details(error)["BadRequest"].field_violations]  # type: ignore[attr-defined]


def subject(error: grpc.aio.AioRpcError) -> str:
    return str(details(error)["PreconditionFailure"].violations[0].subject)  # type: ignore[attr-defined]


async def test_an_update_changes_what_the_case_asks_for(suite: Suite) -> None:
    await submit(suite, case("K1", modalities=[pb.MODALITY_VIDEO]))
    assert {s.modality for s in await slots(suite)} == {pb.MODALITY_VIDEO}
    # Resubmitting with another modality is another case (ALREADY_EXISTS): an update is the way.
    changed = await suite.matcher.UpdateCase(
        update("K1", "modalities", "minutes", modalities=[pb.MODALITY_IN_PERSON], minutes=90)
    )
    assert list(changed.case.modalities) == [pb.MODALITY_IN_PERSON]
    assert changed.case.minutes == 90
    assert changed.case.employee_id == "E1" and changed.case.agency_id == "PT-HR"
    offered = await slots(suite)
    assert offered and {(s.modality, s.minutes) for s in offered} == {(pb.MODALITY_IN_PERSON, 90)}
    got = await suite.matcher.GetCase(pb.GetCaseRequest(case_id="K1"))
    assert got.case == changed.case
    # Only the fields named are read: the rest of the message is ignored.
    again = await suite.matcher.UpdateCase(update("K1", "accepts_group", accepts_group=True))
    assert again.case.accepts_group and again.case.minutes == 90


async def test_an_update_is_checked_field_by_field(suite: Suite) -> None:
    await submit(suite, case("K1"))
    for request, named in (
        (update("K1", "employee_id", employee_id="E2"), ["update_mask.paths[0]"]),
        (update("K1", "category", "kind"), ["update_mask.paths[0]", "update_mask.paths[1]"]),
        (update("K1"), ["update_mask"]),
        (update("K1", "minutes", minutes=45), ["case.minutes"]),
        (update("K1", "sessions_wanted", sessions_wanted=0), ["case.sessions_wanted"]),
        (update("K1", "availability", availability=[]), ["case.availability"]),
        (update("K1", "modalities", "modalities"), ["update_mask.paths[1]"]),
    ):
        error = await refused(suite.matcher.UpdateCase(request))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, request
        assert fields(error) == named, request
    unknown = await refused(suite.matcher.UpdateCase(update("nope", "minutes", minutes=90)))
    assert unknown.code() == grpc.StatusCode.NOT_FOUND


async def test_an_update_never_leaves_a_booking_it_would_not_fit(suite: Suite) -> None:
    await submit(suite, case("K1", sessions_wanted=2))
    booked = await book(suite, (await slots(suite))[0])
    later = span(MONDAY + dt.timedelta(weeks=1), 9, 17)
    for request in (
        update("K1", "modalities", modalities=[pb.MODALITY_IN_PERSON]),
        update("K1", "excluded_counselor_ids", excluded_counselor_ids=[booked.counselor_id]),
        update("K1", "availability", availability=[later]),
        update("K1", "minutes", minutes=90),
    ):
        error = await refused(suite.matcher.UpdateCase(request))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, request
        assert rule(error) == "CASE_BOOKINGS_CONFLICT"
        assert subject(error) == f"booking/{booked.booking_id}"
    await hold(suite, next(s for s in await slots(suite) if s.start.seconds > booked.start.seconds))
    fewer = await refused(
        suite.matcher.UpdateCase(update("K1", "sessions_wanted", sessions_wanted=1))
    )
    assert (rule(fewer), subject(fewer)) == ("CASE_BOOKINGS_CONFLICT", "case")
    # What the booking does not depend on may change; the booking stands.
    fine = await suite.matcher.UpdateCase(
        update(
            "K1",
            "preferred_counselor_id",
            "time_off",
            "modalities",
            preferred_counselor_id="C002",
            time_off=pb.TIME_OFF_LEAVE,
            modalities=[pb.MODALITY_IN_PERSON, pb.MODALITY_VIDEO],
        )
    )
    assert fine.case.preferred_counselor_id == "C002"
    got = await suite.matcher.GetCase(pb.GetCaseRequest(case_id="K1"))
    assert booked.booking_id in {
        b.booking_id for b in got.bookings if b.state == pb.BOOKING_STATE_BOOKED
    }
    # Once the session has begun (and the hold has lapsed), the change is for
    # what is to come.
    with during(booked.start):
        moved_on = await suite.matcher.UpdateCase(
            update("K1", "modalities", modalities=[pb.MODALITY_IN_PERSON])
        )
    assert list(moved_on.case.modalities) == [pb.MODALITY_IN_PERSON]


async def test_a_withdrawn_case_gives_back_what_it_took_and_gets_nothing(suite: Suite) -> None:
    await submit(suite, case("K1", sessions_wanted=3, accepts_group=True))
    found = await slots(suite)
    booked = await book(suite, found[0])
    held = await hold(
        suite, next(s for s in found if s.start.seconds >= found[0].start.seconds + 7 * 86400)
    )
    before = await agency(suite)
    assert before.spent > 0
    answer = await suite.matcher.WithdrawCase(
        pb.WithdrawCaseRequest(case_id="K1", reason="feeling better")
    )
    assert answer.case.HasField("withdrawn_at")
    states = {b.booking_id: b.state for b in answer.bookings}
    assert states == {
        booked.booking_id: pb.BOOKING_STATE_CANCELLED,
        held.booking_id: pb.BOOKING_STATE_RELEASED,
    }
    balance = await agency(suite)
    assert (balance.held, balance.spent) == (0, 0)  # its quota went back
    # Nothing more for it: no slots, no hold, no update.
    window = pb.FindSlotsRequest(case_id="K1", window_start=at(MONDAY, 0))
    for call in (
        suite.matcher.FindSlots(window),
        suite.matcher.HoldSlot(
            pb.HoldSlotRequest(
                case_id="K1", counselor_id=found[1].counselor_id, start=found[1].start
            )
        ),
        suite.matcher.UpdateCase(update("K1", "minutes", minutes=90)),
    ):
        error = await refused(call)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert rule(error) == "CASE_WITHDRAWN"
    # Nor is it proposed for a group session.
    candidates = await suite.matcher.ListGroupCandidates(
        pb.ListGroupCandidatesRequest(
            category=pb.CATEGORY_PSYCHOLOGICAL,
            window_start=at(MONDAY, 0),
            window_end=at(MONDAY + dt.timedelta(days=28), 0),
        )
    )
    assert "K1" not in {c.case_id for c in candidates.candidates}
    # Withdrawing again answers the same.
    again = await suite.matcher.WithdrawCase(pb.WithdrawCaseRequest(case_id="K1"))
    assert again.case == answer.case
    assert {b.booking_id: b.state for b in again.bookings} == states


async def test_a_session_that_has_begun_outlives_the_withdrawal(suite: Suite) -> None:
    await submit(suite, case("K1"))
    found = await slots(suite)
    first = await book(suite, found[0])
    second = await book(
        suite, next(s for s in found if s.start.seconds >= first.start.seconds + 7 * 86400)
    )
    with during(first.start):
        answer = await suite.matcher.WithdrawCase(pb.WithdrawCaseRequest(case_id="K1"))
        states = {b.booking_id: b.state for b in answer.bookings}
        assert states == {
            first.booking_id: pb.BOOKING_STATE_BOOKED,  # it is taking place
            second.booking_id: pb.BOOKING_STATE_CANCELLED,
        }
        done = await suite.matcher.CompleteSession(
            pb.CompleteSessionRequest(booking_id=first.booking_id)
        )
    assert done.booking.state == pb.BOOKING_STATE_COMPLETED


async def test_only_the_owner_or_an_administrator_changes_a_case(secured_suite: Secured) -> None:
    suite = secured_suite
    mine = await submit_own(suite, "r1", "E1")
    me, other = suite.as_("employee", "E1"), suite.as_("employee", "E2")
    request = update(mine, "minutes", minutes=90)
    error = await refused(suite.matcher.UpdateCase(request, metadata=other))
    assert error.code() == grpc.StatusCode.NOT_FOUND  # as if there were no such case
    counselor = await refused(
        suite.matcher.UpdateCase(request, metadata=suite.as_("counselor", "C001"))
    )
    assert counselor.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (await suite.matcher.UpdateCase(request, metadata=me)).case.minutes == 90
    withdraw = pb.WithdrawCaseRequest(case_id=mine)
    error = await refused(suite.matcher.WithdrawCase(withdraw, metadata=other))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    withdrawn = await suite.matcher.WithdrawCase(withdraw, metadata=me)
    assert withdrawn.case.HasField("withdrawn_at")
    admin = suite.as_("admin", "eap-admin")
    theirs = await submit_own(suite, "r2", "E2")
    assert (
        await suite.matcher.WithdrawCase(pb.WithdrawCaseRequest(case_id=theirs), metadata=admin)
    ).case.HasField("withdrawn_at")
