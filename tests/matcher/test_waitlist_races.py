"""The waitlist across two `eapctl serve all` replicas on one PostgreSQL
(issue 16, acceptance 2): cancellations freeing slots race on both
replicas while both run the offering pass (every half second), and
throughout no slot is held for two cases, no case holds two offers, and
every offer is told once; the freed slots go to the first cases in line
(crisis first, then by joining); offers that lapse (the replicas' clock
moved past their deadline) pass on, never back to the case that let them
lapse.

Each round takes a fresh counselor-day: blockers book its seven slots, six
cases that accept only that counselor on that day wait (two of them crisis
cases, which joined last), and three blockers cancel at once, on both
replicas. `EAP_WAITLIST_ROUNDS` rounds (default 3).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from eap.matcher.v1 import matcher_pb2 as pb
from eap.matcher.v1 import matcher_pb2_grpc
from eap.quota.v1 import quota_pb2_grpc
from services.cli.consistency import check
from services.rules.waitlist import OFFER_HOURS
from services.runtime import database
from tests import county, replicas
from tests.booking_world import TAIPEI, TIMEOUT, Slot, Slots, Stub, open_county, under_way
from tests.replicas import Cluster

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ROUNDS = int(os.environ.get("EAP_WAITLIST_ROUNDS", "3"))
WAITING, CRISES, FREED = 6, 2, 3
SETTLE_SECONDS = 30.0


@pytest.fixture
def clock_file(tmp_path: Path) -> Path:
    path = tmp_path / "clock"
    path.write_text("0")
    return path


@pytest.fixture
def cluster(tmp_path: Path, clock_file: Path) -> Iterator[Cluster]:
    env = {"EAP_WAITLIST_SECONDS": "0.5", "EAP_DEV_CLOCK_FILE": str(clock_file)}
    with replicas.cluster(tmp_path, ["all"], 2, "eap.matcher.v1.MatcherService", env) as running:
        yield running


@pytest_asyncio.fixture
async def engine(cluster: Cluster) -> AsyncIterator[AsyncEngine]:
    made = database.create_engine(cluster.database_url)
    yield made
    await made.dispose()


async def rows(engine: AsyncEngine, sql: str) -> list[tuple[object, ...]]:
    async with engine.connect() as connection:
        return [tuple(r) for r in await connection.execute(text(sql))]


LIVE = (
    "SELECT * FROM matcher_bookings"
    " WHERE state IN ('confirming', 'booked', 'moving', 'completing', 'completed')"
    " OR (state = 'held' AND hold_expires_at > now() + make_interval(secs => {ahead}))"
)


async def broken_rules(engine: AsyncEngine, ahead: dt.timedelta) -> list[str]:
    """What must never be seen, at any moment: a slot live for two
    bookings, a counselor booked twice at once, a case holding two offers,
    an offer not held for its case, an offer told twice or not at all.
    `ahead`: how far the replicas' clock runs ahead (holds lapse by it)."""
    live = LIVE.format(ahead=ahead.total_seconds())
    problems = []
    for slot in await rows(
        engine,
        f"SELECT counselor_id, start, count(*) FROM ({live}) AS live"
        " GROUP BY counselor_id, start HAVING count(*) > 1",
    ):
        problems.append(f"slot {slot[:2]} live {slot[2]} times")
    for pair in await rows(
        engine,
        f"WITH live AS ({live}) SELECT a.counselor_id, a.start, b.start FROM live a"
        " JOIN live b ON a.counselor_id = b.counselor_id AND a.booking_id < b.booking_id"
        " AND a.start < b.end AND b.start < a.end",
    ):
        problems.append(f"counselor {pair[0]} booked twice at once: {pair[1:]}")
    for case in await rows(
        engine,
        "SELECT case_id, count(*) FROM matcher_waitlist WHERE state IN ('waiting', 'offered')"
        " GROUP BY case_id HAVING count(*) > 1",
    ):
        problems.append(f"case {case[0]} in line {case[1]} times")
    for entry in await rows(
        engine,
        "SELECT w.case_id, b.case_id, b.state FROM matcher_waitlist w"
        " LEFT JOIN matcher_bookings b ON b.booking_id = w.offer_booking_id"
        " WHERE w.state = 'offered' AND (b.case_id IS NULL OR b.case_id <> w.case_id"
        " OR b.state NOT IN ('held', 'confirming', 'released'))",
    ):
        problems.append(f"offer of {entry[0]} is {entry[1:]}")
    for told in await rows(
        engine,
        "SELECT w.offer_booking_id, count(n.notice_id) FROM matcher_waitlist w"
        " LEFT JOIN matcher_notices n ON n.booking_id = w.offer_booking_id AND n.kind = 'offer'"
        " WHERE w.state = 'offered' GROUP BY w.offer_booking_id HAVING count(n.notice_id) <> 1",
    ):
        problems.append(f"offer {told[0]} told {told[1]} times")
    for told in await rows(
        engine,
        "SELECT booking_id, count(*) FROM matcher_notices WHERE kind = 'offer'"
        " GROUP BY booking_id HAVING count(*) > 1",
    ):
        problems.append(f"offer {told[0]} told {told[1]} times")
    return problems


async def offers(engine: AsyncEngine, cases: list[str]) -> dict[str, tuple[str, dt.datetime]]:
    """The live offers among `cases`: case -> (counselor, start)."""
    named = ", ".join(f"'{c}'" for c in cases)
    found = await rows(
        engine,
        "SELECT w.case_id, b.counselor_id, b.start FROM matcher_waitlist w"
        " JOIN matcher_bookings b ON b.booking_id = w.offer_booking_id"
        f" WHERE w.state = 'offered' AND w.case_id IN ({named})",
    )
    return {str(c): (str(counselor), start) for c, counselor, start in found}  # type: ignore[misc]


async def settle(
    engine: AsyncEngine,
    cases: list[str],
    count: int,
    unlike: dict[str, tuple[str, dt.datetime]],
    ahead: dt.timedelta,
) -> dict[str, tuple[str, dt.datetime]]:
    """Waits until `count` of `cases` hold offers of slots other than
    those they held in `unlike`, checking the rules at every look."""
    loop = asyncio.get_running_loop()
    until = loop.time() + SETTLE_SECONDS
    while True:
        assert await broken_rules(engine, ahead) == []
        now = await offers(engine, cases)
        fresh = {c: s for c, s in now.items() if unlike.get(c) != s}
        # (An offer that lapsed shows until a pass writes it down.)
        if (len(fresh) >= count and len(now) == len(fresh)) or loop.time() > until:
            return now
        await asyncio.sleep(0.1)


class World:
    def __init__(self, stubs: list[Stub], slots: Slots) -> None:
        self.stubs = stubs
        self.slots = slots
        self.people = 0

    async def case(self, day: dt.date, crisis: bool = False) -> str:
        self.people += 1
        case_id, employee = f"K{self.people:04d}", f"E{self.people:04d}"
        await county.enrol(self.stubs[0], [employee])
        begin = dt.datetime(day.year, day.month, day.day, 9, tzinfo=TAIPEI)
        window = pb.TimeRange()
        window.start.FromDatetime(begin)
        window.end.FromDatetime(begin + dt.timedelta(hours=8))
        await self.stubs[0].SubmitCase(
            pb.SubmitCaseRequest(
                case=pb.Case(
                    case_id=case_id,
                    employee_id=employee,
                    agency_id="PT-HR",
                    staff_category="official",
                    category=pb.CATEGORY_PSYCHOLOGICAL,
                    kind=pb.CASE_KIND_CRISIS if crisis else pb.CASE_KIND_GENERAL,
                    sessions_wanted=1,
                    minutes=60,
                    modalities=[pb.MODALITY_VIDEO],
                    availability=[window],
                    time_off=pb.TIME_OFF_LEAVE,
                )
            ),
            timeout=TIMEOUT,
        )
        return case_id

    async def book(self, case_id: str, slot: Slot) -> str:
        request = pb.HoldSlotRequest(case_id=case_id, counselor_id=slot[0])
        request.start.FromDatetime(slot[1])
        held = await self.stubs[0].HoldSlot(request, timeout=TIMEOUT)
        await self.stubs[1].ConfirmBooking(
            pb.ConfirmBookingRequest(booking_id=held.booking.booking_id), timeout=TIMEOUT
        )
        return held.booking.booking_id

    async def join(self, case_id: str, slot: Slot, replica: int) -> None:
        day = slot[1].date()
        wishes = pb.WaitlistWishes(counselor_id=slot[0])
        wishes.window_start.FromDatetime(dt.datetime(day.year, day.month, day.day, tzinfo=TAIPEI))
        wishes.window_end.FromDatetime(
            dt.datetime(day.year, day.month, day.day, tzinfo=TAIPEI) + dt.timedelta(days=1)
        )
        request = pb.JoinWaitlistRequest(case_id=case_id, request_id="wait", wishes=wishes)
        await self.stubs[replica].JoinWaitlist(request, timeout=TIMEOUT)


def move_clock(path: Path, ahead: dt.timedelta) -> None:
    fresh = path.with_suffix(".new")
    fresh.write_text(str(ahead.total_seconds()))
    fresh.replace(path)  # a replica reads it whole or not at all


async def test_freed_slots_go_down_the_line_once_each_across_replicas(
    cluster: Cluster, engine: AsyncEngine, clock_file: Path
) -> None:
    channels = [grpc.aio.insecure_channel(r.address) for r in cluster.replicas]
    try:
        stubs: list[Stub] = [matcher_pb2_grpc.MatcherServiceStub(c) for c in channels]
        await open_county(stubs, quota_pb2_grpc.QuotaServiceStub(channels[0]))
        world = World(stubs, Slots(ROUNDS + 2))
        ahead = dt.timedelta()
        for n in range(ROUNDS):
            day = world.slots.day()
            blockers = []
            for slot in day:
                blockers.append(await world.book(await world.case(slot[1].date()), slot))
            general: list[str] = []
            crisis: list[str] = []
            for k in range(WAITING):
                is_crisis = k >= WAITING - CRISES
                case_id = await world.case(day[0][1].date(), crisis=is_crisis)
                await world.join(case_id, day[0], k % 2)
                (crisis if is_crisis else general).append(case_id)
            line = crisis + general  # the order the line keeps: crises first, then by joining
            # Three cancellations at once, on both replicas, while both offer.
            answers = await asyncio.gather(
                *(
                    stubs[k % 2].CancelBooking(
                        pb.CancelBookingRequest(booking_id=b, reason="plans changed"),
                        timeout=TIMEOUT,
                    )
                    for k, b in enumerate(blockers[:FREED])
                )
            )
            assert all(a.booking.state == pb.BOOKING_STATE_CANCELLED for a in answers)
            first = await settle(engine, line, FREED, {}, ahead)
            assert sorted(first) == sorted(line[:FREED]), (n, first, line)
            assert len(set(first.values())) == FREED  # each slot to one case
            # The offers lapse: each slot passes on, never back to its case.
            ahead += dt.timedelta(hours=OFFER_HOURS, minutes=5)
            move_clock(clock_file, ahead)
            second = await settle(engine, line, FREED, first, ahead)
            again = {c: s for c, s in second.items() if first.get(c) != s}
            # Every case that let its offer lapse holds another slot or none:
            # the lapsed ones went to others, down the line.
            assert len(again) == FREED, (n, first, second)
            assert all(first.get(c) != slot for c, slot in second.items()), (first, second)
            assert await under_way(engine) == []
            problems = await check(engine, engine)
            assert problems == [], [str(p) for p in problems]
        assert await broken_rules(engine, ahead) == []
    finally:
        for channel in channels:
            await channel.close(None)
