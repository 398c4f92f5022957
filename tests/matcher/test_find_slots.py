"""FindSlots as a frontend uses it (issue 15, item 4), over gRPC: slots to
reschedule to, pages, filters (modality, time of day, the counselor's
language) and offers spread over counselors and days."""

from __future__ import annotations

import datetime as dt

import grpc

from eap.matcher.v1 import matcher_pb2 as pb
from eap.quota.v1 import quota_pb2 as qpb
from tests.conftest import MONDAY, Suite, at
from tests.county import ORG, RATE, YEAR, counselor, enrol
from tests.matcher.test_booking import book, case, local, submit
from tests.quota.test_rpcs import details, refused


def window(case_id: str, *, days: int = 14, **more: object) -> pb.FindSlotsRequest:
    return pb.FindSlotsRequest(
        case_id=case_id,
        window_start=at(MONDAY, 0),
        window_end=at(MONDAY + dt.timedelta(days=days), 0),
        **{"max_slots": 200, **more},  # type: ignore[arg-type]
    )


async def test_a_booked_session_counts_as_free_when_rescheduling_it(suite: Suite) -> None:
    await submit(suite, case("K1", sessions_wanted=1))
    first = (await suite.matcher.FindSlots(window("K1"))).slots
    booked = await book(suite, first[0], "K1")
    # Fully booked: nothing more to offer, unless the booking is to move.
    assert not (await suite.matcher.FindSlots(window("K1"))).slots
    moving = (
        await suite.matcher.FindSlots(window("K1", replaces_booking_id=booked.booking_id))
    ).slots
    assert moving
    # Its own week is free again (it is the one the move gives up) and so is its time.
    weeks = {local(s.start).isocalendar()[1] for s in moving}
    assert local(booked.start).isocalendar()[1] in weeks
    assert any(s.start == booked.start and s.counselor_id == booked.counselor_id for s in moving)
    # What FindSlots offers, HoldSlot and RescheduleBooking take.
    target = next(s for s in moving if s.start != booked.start)
    held = await suite.matcher.HoldSlot(
        pb.HoldSlotRequest(
            case_id="K1",
            counselor_id=target.counselor_id,
            start=target.start,
            replaces_booking_id=booked.booking_id,
        )
    )
    moved = await suite.matcher.RescheduleBooking(
        pb.RescheduleBookingRequest(
            booking_id=booked.booking_id, new_booking_id=held.booking.booking_id
        )
    )
    assert moved.booking.state == pb.BOOKING_STATE_BOOKED
    assert moved.booking.start == target.start


async def test_only_a_booked_session_of_the_same_case_can_be_replaced(suite: Suite) -> None:
    await submit(suite, case("K1", sessions_wanted=1))
    await submit(suite, case("K2", "E2", sessions_wanted=1))
    theirs = await book(suite, (await suite.matcher.FindSlots(window("K2"))).slots[0], "K2")
    error = await refused(
        suite.matcher.FindSlots(window("K1", replaces_booking_id=theirs.booking_id))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = details(error)["BadRequest"].field_violations  # type: ignore[attr-defined]
    assert [v.field for v in violations] == ["replaces_booking_id"]
    unknown = suite.matcher.FindSlots(window("K1", replaces_booking_id="nope"))
    assert (await refused(unknown)).code() == grpc.StatusCode.NOT_FOUND


def day_of(slot: pb.Slot) -> dt.date:
    return local(slot.start).date()


async def pages(suite: Suite, request: pb.FindSlotsRequest) -> list[list[pb.Slot]]:
    found = []
    while True:
        answer = await suite.matcher.FindSlots(request)
        found.append(list(answer.slots))
        if not answer.next_page_token:
            return found
        request.page_token = answer.next_page_token


async def test_slots_come_in_pages_spread_over_counselors_and_days(suite: Suite) -> None:
    await submit(suite, case("K1"))
    everything = list((await suite.matcher.FindSlots(window("K1"))).slots)
    paged = await pages(suite, window("K1", page_size=5))
    assert all(len(p) == 5 for p in paged[:-1]) and 0 < len(paged[-1]) <= 5
    assert [s for p in paged for s in p] == everything  # every slot once, in rank order
    # The first page: a slot of each counselor on each day, not one
    # counselor's back-to-back half hours.
    first = paged[0]
    tops = [(s.counselor_id, day_of(s)) for s in first[:4]]
    assert len(set(tops)) == 4
    assert {c for c, _ in tops} == {"C001", "C002"} and len({d for _, d in tops}) == 2
    assert [local(s.start).hour for s in first[:4]] == [9, 9, 9, 9]
    # max_slots still bounds a single answer, and says there is more.
    three = await suite.matcher.FindSlots(window("K1", max_slots=3))
    assert list(three.slots) == everything[:3] and three.next_page_token
    bad = suite.matcher.FindSlots(window("K1", page_token="nonsense"))
    assert fields(await refused(bad)) == ["page_token"]


async def test_the_preferred_counselor_comes_first_spread_over_days(suite: Suite) -> None:
    await submit(suite, case("K1", preferred_counselor_id="C002"))
    found = (await suite.matcher.FindSlots(window("K1", page_size=4))).slots
    assert [s.counselor_id for s in found[:2]] == ["C002", "C002"]
    assert all(s.preferred for s in found[:2])
    assert len({day_of(s) for s in found[:2]}) == 2


def fields(error: grpc.aio.AioRpcError) -> list[str]:
    return [v.field for v in details(error)["BadRequest"].field_violations]  # type: ignore[attr-defined]


async def test_slots_filtered_by_modality_time_of_day_and_language(suite: Suite) -> None:
    for counselor_id, provider, languages in (
        ("C001", "P1", ["zh-TW", "nan"]),
        ("C002", "P2", ["en"]),
    ):
        await suite.matcher.UpsertCounselor(
            pb.UpsertCounselorRequest(
                counselor=counselor(counselor_id, provider=provider, languages=languages)
            )
        )
    await submit(suite, case("K1", modalities=[pb.MODALITY_VIDEO, pb.MODALITY_IN_PERSON]))

    async def offered(**filters: object) -> list[pb.Slot]:
        return list((await suite.matcher.FindSlots(window("K1", **filters))).slots)  # type: ignore[arg-type]

    assert {s.modality for s in await offered()} == {pb.MODALITY_VIDEO}  # the case's first
    in_person = await offered(modalities=[pb.MODALITY_IN_PERSON])
    assert in_person and {s.modality for s in in_person} == {pb.MODALITY_IN_PERSON}
    assert await offered(modalities=[pb.MODALITY_PHONE]) == []  # the case does not take it
    afternoons = await offered(earliest_start_time="13:00")
    assert afternoons and min(local(s.start).time() for s in afternoons) >= dt.time(13)
    mornings = await offered(latest_start_time="10:00")
    assert mornings and max(local(s.start).time() for s in mornings) <= dt.time(10)
    taiwanese = await offered(languages=["nan"])
    assert taiwanese and {s.counselor_id for s in taiwanese} == {"C001"}
    assert set(taiwanese[0].languages) == {"zh-TW", "nan"}
    assert {s.counselor_id for s in await offered(languages=["zh"])} == {"C001"}
    assert {s.counselor_id for s in await offered(languages=["en", "nan"])} == {"C001", "C002"}
    assert await offered(languages=["hak"]) == []
    for filters, named in (
        ({"earliest_start_time": "25:00"}, ["earliest_start_time"]),
        ({"earliest_start_time": "15:00", "latest_start_time": "10:00"}, ["latest_start_time"]),
        ({"languages": ["not a tag"]}, ["languages[0]"]),
        ({"modalities": [99]}, ["modalities[0]"]),
        ({"page_size": 201}, ["page_size"]),
    ):
        error = await refused(suite.matcher.FindSlots(window("K1", **filters)))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert fields(error) == named, filters


async def test_the_registry_keeps_languages_and_a_video_link(suite: Suite) -> None:
    link = "https://meet.example.org/pingtung-c001"
    await suite.matcher.UpsertCounselor(
        pb.UpsertCounselorRequest(counselor=counselor(languages=["zh-TW"], video_link=link))
    )
    got = (await suite.matcher.GetCounselor(pb.GetCounselorRequest(counselor_id="C001"))).counselor
    assert (list(got.languages), got.video_link) == (["zh-TW"], link)
    for changes, named in (
        ({"languages": ["中文"]}, ["counselor.languages[0]"]),
        ({"video_link": "http://meet.example.org/x"}, ["counselor.video_link"]),
    ):
        bad = suite.matcher.UpsertCounselor(
            pb.UpsertCounselorRequest(counselor=counselor(**changes))
        )
        assert fields(await refused(bad)) == named


async def test_slots_and_bookings_say_where_or_by_which_video_room(suite: Suite) -> None:
    room = "https://meet.county.example/room-lin"
    await suite.matcher.UpsertCounselor(
        pb.UpsertCounselorRequest(counselor=counselor(video_link=room))
    )
    await submit(suite, case("K1", modalities=[pb.MODALITY_VIDEO], sessions_wanted=2))
    video = (await suite.matcher.FindSlots(window("K1"))).slots
    lin = [s for s in video if s.counselor_id == "C001"]
    assert lin and all((s.video_link, s.location) == (room, "") for s in lin)
    booked = await book(suite, lin[0], "K1")
    assert (booked.video_link, booked.location) == (room, "")
    await submit(suite, case("K2", "E2", modalities=[pb.MODALITY_IN_PERSON]))
    in_person = (await suite.matcher.FindSlots(window("K2"))).slots
    assert {s.location for s in in_person} == {"Pingtung office 3F"}
    assert not any(s.video_link for s in in_person)
    # A booking keeps where it was booked, as an appointment letter does.
    await suite.matcher.UpsertCounselor(
        pb.UpsertCounselorRequest(counselor=counselor(location="Pingtung office 5F"))
    )
    listed = await suite.matcher.GetCase(pb.GetCaseRequest(case_id="K1"))
    assert listed.bookings[0].video_link == room


async def nothing_offered(suite: Suite, employee: str, agency: str, category: str) -> list[str]:
    """The rules FindSlots names for a case of `employee` (in the directory
    with `agency` and `category`), which it offers nothing."""
    await enrol(suite.matcher, [employee], agency=agency, category=category)  # type: ignore[arg-type]
    await submit(suite, case(f"K-{employee}", employee, agency_id=agency, staff_category=category))
    found = await suite.matcher.FindSlots(window(f"K-{employee}"))
    assert not found.slots
    assert all(reason.explanation for reason in found.none_because)  # in the reader's words
    return [reason.rule for reason in found.none_because]


async def test_no_slot_is_offered_that_the_confirmation_would_refuse(suite: Suite) -> None:
    assert await nothing_offered(suite, "X1", "PT-NOWHERE", "official") == ["NO_BUDGET_POOL"]
    assert await nothing_offered(suite, "X2", "PT-HR", "contractor") == ["NO_ENTITLEMENT_POLICY"]
    await suite.quota.UpsertAgency(
        qpb.UpsertAgencyRequest(agency_id="PT-POOR", organisation=ORG, display_name="PT-POOR")
    )
    await suite.quota.TopUpBudget(
        qpb.TopUpBudgetRequest(
            idempotency_key="poor",
            agency_id="PT-POOR",
            fiscal_year=YEAR,
            amount_ntd=RATE // 2,  # not even one hour
            reason="what was left",
        )
    )
    assert await nothing_offered(suite, "X3", "PT-POOR", "official") == ["AGENCY_BUDGET"]
    # And what is offered, a confirmation takes.
    await submit(suite, case("K1"))
    offered = (await suite.matcher.FindSlots(window("K1"))).slots
    assert (await book(suite, offered[-1], "K1")).state == pb.BOOKING_STATE_BOOKED


async def test_when_nothing_is_offered_the_answer_says_why_in_chinese(suite: Suite) -> None:
    await submit(suite, case("K1", sessions_wanted=1))
    await book(suite, (await suite.matcher.FindSlots(window("K1"))).slots[0], "K1")
    found = await suite.matcher.FindSlots(window("K1"))
    ((rule, words),) = [(r.rule, r.explanation) for r in found.none_because]
    assert (rule, words) == ("CASE_FULLY_BOOKED", "您申請的諮商次數皆已預約。")
    await submit(suite, case("K2", "E2", category=pb.CATEGORY_LEGAL))  # nobody here takes legal
    found = await suite.matcher.FindSlots(window("K2"))
    assert [r.rule for r in found.none_because] == ["NO_QUALIFIED_COUNSELOR"]
    # Found slots come without reasons.
    await submit(suite, case("K3", "E3"))
    assert not (await suite.matcher.FindSlots(window("K3"))).none_because
