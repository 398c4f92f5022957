"""Group sessions booked through the matcher and paid through the quota.

Each participant spends one of their sessions (their week's one session and
a whole session of entitlement); the counselor's time counts once, toward
their hours and their daily limit; the provider minutes and the cost are
shared among the participants, so each agency pays for its own staff."""

from __future__ import annotations

import datetime as dt

import grpc

from eap.matcher.v1 import matcher_pb2 as pb
from eap.quota.v1 import quota_pb2 as qpb
from tests.conftest import MONDAY, Suite, at
from tests.county import RATE, account, counselor, enrol
from tests.matcher.test_booking import book, case, local, rule, slots, submit
from tests.quota.test_rpcs import refused

TEN = at(MONDAY, 10)


def group(*case_ids: str, **changes: object) -> pb.BookGroupSessionRequest:
    request = pb.BookGroupSessionRequest(
        group_id="G1",
        counselor_id="C001",
        start=TEN,
        minutes=60,
        modality=pb.MODALITY_VIDEO,
        case_ids=list(case_ids),
    )
    for name, value in changes.items():
        if name == "start":
            request.start.CopyFrom(value)  # type: ignore[arg-type]
        else:
            setattr(request, name, value)
    return request


async def balance(suite: Suite, kind: int, owner: str) -> qpb.Balance:
    request = qpb.GetBalanceRequest(account=account(kind, owner))
    return (await suite.quota.GetBalance(request)).balance


async def test_a_group_spends_each_session_once_and_shares_the_counselors_time(
    suite: Suite,
) -> None:
    await submit(suite, case("K1", "E1", accepts_group=True))
    await submit(suite, case("K2", "E2", accepts_group=True))
    await enrol(suite.matcher, ["E3"], agency="PT-EDU")
    await submit(suite, case("K3", "E3", accepts_group=True, agency_id="PT-EDU"))
    answer = await suite.matcher.BookGroupSession(group("K1", "K2", "K3"))
    assert not answer.refused
    assert sorted(b.case_id for b in answer.bookings) == ["K1", "K2", "K3"]
    assert {b.state for b in answer.bookings} == {pb.BOOKING_STATE_BOOKED}
    assert {b.group_id for b in answer.bookings} == {"G1"}

    # Each participant: a whole session of entitlement.
    for employee in ("E1", "E2", "E3"):
        entitlement = await balance(suite, qpb.ACCOUNT_KIND_EMPLOYEE, employee)
        assert (entitlement.spent, entitlement.left) == (60, 360 - 60)
    # The provider: one hour, not three. The money: one session's cost,
    # shared out 2:1 between the two agencies whose staff attend.
    provider = await balance(suite, qpb.ACCOUNT_KIND_PROVIDER, "P1")
    assert (provider.spent, provider.held) == (60, 0)
    hr = await balance(suite, qpb.ACCOUNT_KIND_AGENCY, "PT-HR")
    edu = await balance(suite, qpb.ACCOUNT_KIND_AGENCY, "PT-EDU")
    assert hr.spent + edu.spent == RATE
    assert abs(hr.spent - 2 * edu.spent) <= 2

    # One session a week for each participant: their next slots are a week later.
    later = await slots(suite, "K2")
    assert later and all(local(s.start).date() > MONDAY for s in later)
    # A retry returns the group as booked and spends nothing more.
    again = await suite.matcher.BookGroupSession(group("K1", "K2", "K3"))
    assert sorted(b.booking_id for b in again.bookings) == sorted(
        b.booking_id for b in answer.bookings
    )
    assert (await balance(suite, qpb.ACCOUNT_KIND_PROVIDER, "P1")).spent == 60


async def test_the_counselors_daily_limit_counts_a_group_once(suite: Suite) -> None:
    await suite.matcher.UpsertCounselor(
        pb.UpsertCounselorRequest(counselor=counselor(max_sessions_per_day=2))
    )
    for n in range(1, 6):
        await submit(suite, case(f"K{n}", f"E{n}", accepts_group=True))
    await suite.matcher.BookGroupSession(group("K1", "K2", "K3"))
    # The group is one of the counselor's two sessions that day: one more fits ...
    offer = next(s for s in await slots(suite, "K4") if s.counselor_id == "C001")
    assert local(offer.start).date() == MONDAY
    await book(suite, offer, "K4")
    # ... and then the day is full.
    rest = [s for s in await slots(suite, "K5") if s.counselor_id == "C001"]
    assert rest and all(local(s.start).date() != MONDAY for s in rest)
    # The counselor's time is taken once: another group at ten is refused.
    clash = await refused(suite.matcher.BookGroupSession(group("K5", "K4", group_id="G2")))
    assert clash.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert rule(clash) in ("SLOT_TAKEN", "COUNSELOR_DAY_FULL")


async def test_participants_the_rules_refuse_are_named_and_the_rest_share_the_cost(
    suite: Suite,
) -> None:
    await submit(suite, case("K1", "E1", accepts_group=True))
    await submit(suite, case("K2", "E2", accepts_group=True))
    await submit(suite, case("K3", "E3"))  # wants individual sessions only
    await submit(suite, case("K4", "E4", accepts_group=True, modalities=[pb.MODALITY_PHONE]))
    await submit(suite, case("K5", "E5", accepts_group=True))
    await enrol(suite.matcher, ["E6"], category="contractor")
    await submit(suite, case("K6", "E6", accepts_group=True, staff_category="contractor"))
    # E5 already has a session this week.
    await book(suite, next(s for s in await slots(suite, "K5") if s.counselor_id == "C002"), "K5")
    answer = await suite.matcher.BookGroupSession(group("K1", "K2", "K3", "K4", "K5", "K6"))
    assert sorted(b.case_id for b in answer.bookings) == ["K1", "K2"]
    reasons = {r.case_id: r.rule for r in answer.refused}
    assert reasons == {
        "K3": "GROUP_DECLINED",
        "K4": "NOT_BOOKABLE",
        "K5": "WEEKLY_LIMIT",
        "K6": "NO_ENTITLEMENT_POLICY",  # the quota's refusal, for one participant
    }
    assert all("E" not in r.message.split() for r in answer.refused)
    # The two who take part carry the whole session between them, and the
    # shares reserved for a group of five were given back.
    provider = await balance(suite, qpb.ACCOUNT_KIND_PROVIDER, "P1")
    assert (provider.spent, provider.held) == (60, 0)
    hr = await balance(suite, qpb.ACCOUNT_KIND_AGENCY, "PT-HR")
    assert hr.spent == 2 * RATE  # K5's own session, and the group's whole cost
    assert hr.held == 0


async def test_too_small_a_group_books_nothing(suite: Suite) -> None:
    await submit(suite, case("K1", "E1", accepts_group=True))
    await submit(suite, case("K2", "E2"))
    await enrol(suite.matcher, ["E3"], category="contractor")
    await submit(suite, case("K3", "E3", accepts_group=True, staff_category="contractor"))
    error = await refused(suite.matcher.BookGroupSession(group("K1", "K2", "K3")))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert rule(error) == "GROUP_TOO_SMALL"
    error = await refused(suite.matcher.BookGroupSession(group("K1", "K3", group_id="G2")))
    assert rule(error) == "GROUP_TOO_SMALL"  # K3's quota refusal leaves one
    got = await suite.matcher.GetCase(pb.GetCaseRequest(case_id="K1"))
    assert not got.bookings
    for kind, owner in ((qpb.ACCOUNT_KIND_PROVIDER, "P1"), (qpb.ACCOUNT_KIND_AGENCY, "PT-HR")):
        untouched = await balance(suite, kind, owner)
        assert (untouched.held, untouched.spent) == (0, 0)
    # Nothing of it blocks an individual booking at that time.
    offer = next(s for s in await slots(suite, "K1") if s.counselor_id == "C001")
    assert local(offer.start).hour == 9
    await book(suite, offer)


async def test_cancelling_a_group_gives_everything_back(suite: Suite) -> None:
    for n in (1, 2, 3):
        await submit(suite, case(f"K{n}", f"E{n}", accepts_group=True))
    await suite.matcher.BookGroupSession(group("K1", "K2", "K3"))
    cancelled = await suite.matcher.CancelGroupSession(
        pb.CancelGroupSessionRequest(group_id="G1", reason="leader ill")
    )
    assert {b.state for b in cancelled.bookings} == {pb.BOOKING_STATE_CANCELLED}
    for kind, owner in (
        (qpb.ACCOUNT_KIND_PROVIDER, "P1"),
        (qpb.ACCOUNT_KIND_AGENCY, "PT-HR"),
        (qpb.ACCOUNT_KIND_EMPLOYEE, "E2"),
    ):
        back = await balance(suite, kind, owner)
        assert (back.held, back.spent) == (0, 0)
    missing = await refused(
        suite.matcher.CancelGroupSession(pb.CancelGroupSessionRequest(group_id="G404"))
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND


async def test_bad_group_requests_are_refused_field_by_field(suite: Suite) -> None:
    await submit(suite, case("K1", "E1", accepts_group=True))
    await submit(suite, case("K2", "E2", accepts_group=True))
    cases = [
        (group("K1"), "case_ids"),
        (group("K1", "K1"), "case_ids"),
        (group("K1", "K404"), "case_ids[1]"),
        (group("K1", "K2", minutes=45), "minutes"),
        (group("K1", "K2", start=at(MONDAY, 10, 15)), "start"),
        (group("K1", "K2", start=at(MONDAY - dt.timedelta(weeks=1), 10)), "start"),
        (group("K1", "K2", modality=pb.MODALITY_UNSPECIFIED), "modality"),
        (group("K1", "K2", group_id=""), "group_id"),
        (group("K1", "K2", min_participants=3), "min_participants"),
    ]
    for request, field in cases:
        error = await refused(suite.matcher.BookGroupSession(request))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert field in (error.details() or ""), (field, error.details())
    closed = await refused(suite.matcher.BookGroupSession(group("K1", "K2", start=at(MONDAY, 12))))
    # 12:00-13:00 is outside the counselor's hours (09-12, 13:30-17).
    assert rule(closed) == "NOT_BOOKABLE"
