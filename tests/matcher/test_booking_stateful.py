"""Random sequences of booking calls from several clients over several
`eapctl serve all` replicas on one PostgreSQL database, Hypothesis choosing
the steps: holds, and ConfirmBooking, CancelBooking, RescheduleBooking and
CompleteSession on bookings in any state, one at a time or two at once on
the same booking from different replicas (confirm and confirm, confirm and
cancel, confirm and complete, reschedule and cancel, reschedule and
reschedule, reschedule and complete, complete and cancel, complete and
complete, cancel and cancel, a reschedule and a cancellation of the hold
it moves to), the second call a few milliseconds after the first or not.

After every step, once every call has answered: no booking is left with a
step under way, the check across services (`eapctl verify`) finds nothing,
and every booking is in the state the model expects. A single call has one
right outcome for each state and the model knows it. A race may go either
way, so the model then takes what the database says, but only if the
answers explain it: a cancellation that answered OK leaves the booking not
booked, and cancelled if the answer showed it so; a confirmation that
answered OK leaves it booked or completed unless a cancellation or a move
took it away; a completion that answered OK leaves it completed; a
reschedule that answered OK leaves the old booking cancelled and the new one
booked, and one that was refused leaves its new hold as it was; no booking
changes state without a call that answered OK to say so; of two racing
calls at least one succeeds, and two confirmations both do.

The replicas start once per test; every example has clients (cases, each of
a new employee) of its own, so no example sees another's bookings and no
database reset is needed between them. Hypothesis runs derandomized, so the
steps are the same on every run and only the races' timings differ;
shrinking is off by default, since a race that failed once may well not
fail again on replay.

EAP_STATEFUL_EXAMPLES (default 20) examples of up to EAP_STATEFUL_STEPS
(default 25) steps on EAP_STATEFUL_REPLICAS (default 3) replicas;
EAP_STATEFUL_SHRINK=1 shrinks a failure.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import os
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar, cast

import grpc
import pytest
from hypothesis import HealthCheck, Phase, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine

from eap.matcher.v1 import matcher_pb2 as pb
from eap.matcher.v1 import matcher_pb2_grpc
from eap.quota.v1 import quota_pb2_grpc
from services.cli.consistency import check
from services.matcher.booking.state import BookingState
from services.runtime import database
from tests import replicas
from tests.booking_world import (
    Race,
    ReplicaClock,
    Slots,
    Week,
    open_county,
    reply,
    under_way,
    week_of,
)
from tests.replicas import Cluster

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., None])
S = BookingState

DEFAULT_EXAMPLES = 20
EXAMPLES = int(os.environ.get("EAP_STATEFUL_EXAMPLES", str(DEFAULT_EXAMPLES)))
STEPS = int(os.environ.get("EAP_STATEFUL_STEPS", "25"))
REPLICAS = max(2, int(os.environ.get("EAP_STATEFUL_REPLICAS", "3")))  # a race needs two
SHRINK = os.environ.get("EAP_STATEFUL_SHRINK") == "1"

CLIENTS = 3  # employees an example books for at a time
CLIENT = st.integers(0, CLIENTS - 1)
REPLICA = st.integers(0, REPLICAS - 1)
PICK = st.integers(0, 255)  # which of the bookings a rule could act on
REPLICA_PAIR = st.permutations(range(REPLICAS))  # the first two race
# How long after the first call of a race the second starts, in seconds:
# fired at once, the two mostly meet at their first reads; a few
# milliseconds apart, the second lands while the first has a step under
# way and is talking to the quota service.
STAGGER = st.sampled_from((0.0, 0.002, 0.005, 0.01, 0.02))
# The county's entitlement is 360 minutes a year, six sessions of 60: a
# case wanting six never has a confirmation refused for want of minutes.
SESSIONS_WANTED = 6
# Slots for every step (a step holds two at most; eight counselors have
# seven a day), twice over, and at least twelve weeks: a client with all
# its sessions live, and a reschedule's two new holds, each take a week.
OFFICE_DAYS = max(60, EXAMPLES * STEPS * 2 // (8 * 7) * 2)
# A call that may complete a session runs with the replicas' clock moved
# past its start (a session is completed once it has begun): no hold may
# lapse meanwhile.
HOLD_SECONDS = 365 * 86_400

# Once every call has answered, a booking is in one of these.
AT_REST = frozenset({S.HELD, S.BOOKED, S.COMPLETED, S.CANCELLED, S.RELEASED})
LIVE = frozenset({S.HELD, S.BOOKED, S.COMPLETED})  # they take the employee's week
CHARGED = frozenset({S.BOOKED, S.COMPLETED})
SHOWN = {
    pb.BOOKING_STATE_HELD: S.HELD,
    pb.BOOKING_STATE_BOOKED: S.BOOKED,
    pb.BOOKING_STATE_COMPLETED: S.COMPLETED,
    pb.BOOKING_STATE_CANCELLED: S.CANCELLED,
    pb.BOOKING_STATE_RELEASED: S.RELEASED,
}

# One call on a booking at rest: its status code and the state it leaves.
# A confirmation the quota refuses for the employee's week is the model's
# to foresee (BookingMachine.clashes), not this table's.
SINGLE: dict[str, dict[BookingState, tuple[str, BookingState]]] = {
    "confirm": {
        S.HELD: ("OK", S.BOOKED),
        S.BOOKED: ("OK", S.BOOKED),  # a retry
        S.COMPLETED: ("OK", S.COMPLETED),
        S.CANCELLED: ("FAILED_PRECONDITION", S.CANCELLED),
        S.RELEASED: ("FAILED_PRECONDITION", S.RELEASED),
    },
    "cancel": {
        S.HELD: ("OK", S.RELEASED),
        S.BOOKED: ("OK", S.CANCELLED),
        S.COMPLETED: ("FAILED_PRECONDITION", S.COMPLETED),
        S.CANCELLED: ("OK", S.CANCELLED),
        S.RELEASED: ("OK", S.RELEASED),
    },
    "complete": {
        S.HELD: ("FAILED_PRECONDITION", S.HELD),
        S.BOOKED: ("OK", S.COMPLETED),
        S.COMPLETED: ("OK", S.COMPLETED),
        S.CANCELLED: ("FAILED_PRECONDITION", S.CANCELLED),
        S.RELEASED: ("FAILED_PRECONDITION", S.RELEASED),
    },
}

# Races on one hold or booking: the two calls fired at once. "cancel new"
# cancels the hold the pair's reschedule moves the booking to: while the
# quota moved the charge, that once left the new booking cancelling with
# the charge on it, which the reconciler then closed without giving back.
RACES: dict[str, list[tuple[str, str]]] = {
    "hold": [
        ("confirm", "confirm"),
        ("confirm", "cancel"),
        ("confirm", "complete"),
        ("cancel", "cancel"),
    ],
    "booking": [
        ("complete", "cancel"),
        ("complete", "complete"),
        ("confirm", "cancel"),
        ("cancel", "cancel"),
    ],
    "move": [  # on a booking too, one of the calls moving it
        ("reschedule", "cancel"),
        ("reschedule", "reschedule"),
        ("reschedule", "complete"),
        ("reschedule", "cancel new"),
    ],
}

# A change of state, and the calls any set of which, having answered OK,
# explains it ("moved in": the booking is the new one of a reschedule;
# "cancel": a cancellation that answered with the booking cancelled).
EXPLAINED: dict[tuple[BookingState, BookingState], list[frozenset[str]]] = {
    (S.HELD, S.BOOKED): [frozenset({"confirm"}), frozenset({"moved in"})],
    (S.HELD, S.RELEASED): [frozenset({"cancel"})],
    (S.HELD, S.CANCELLED): [frozenset({"cancel"})],
    (S.HELD, S.COMPLETED): [frozenset({"confirm", "complete"})],
    (S.BOOKED, S.CANCELLED): [frozenset({"cancel"}), frozenset({"reschedule"})],
    (S.BOOKED, S.COMPLETED): [frozenset({"complete"})],
}


@dataclass
class Known:
    """What the model knows of a booking."""

    case_id: str
    week: Week
    state: BookingState
    start: dt.datetime


@dataclass
class Call:
    """One call of a step, and how it was answered."""

    op: str  # confirm, cancel, complete, reschedule
    booking_id: str
    replica: int
    new_id: str = ""  # the hold a reschedule moves the booking to
    answer: str = ""  # "OK", or the status code and the rule
    shown: BookingState | None = None  # the booking as the answer showed it
    previous: BookingState | None = None  # a reschedule's old booking, as shown

    @property
    def ok(self) -> bool:
        return self.answer == "OK"

    @property
    def code(self) -> str:
        return self.answer.split(" ", 1)[0]

    def __str__(self) -> str:
        return f"{self.op} {self.booking_id[:8]} on {self.replica}: {self.answer}"


@dataclass
class World:
    """What outlives an example: the loop the gRPC channels and the engine
    are bound to, and the client with the slots nobody has used yet."""

    runner: asyncio.Runner
    race: Race
    clock: ReplicaClock
    engine: AsyncEngine
    channels: list[grpc.aio.Channel]
    seen: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    raced: set[tuple[str, str]] = field(default_factory=set)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coroutine)


async def _states(engine: AsyncEngine, booking_ids: list[str]) -> dict[str, BookingState]:
    if not booking_ids:
        return {}
    query = text(
        "SELECT booking_id, state FROM matcher_bookings WHERE booking_id IN :ids"
    ).bindparams(bindparam("ids", expanding=True))
    async with engine.connect() as connection:
        rows = await connection.execute(query, {"ids": booking_ids})
        return {r[0]: S(r[1]) for r in rows}


def _recorded(method: F) -> F:
    """Keeps the run's first failure, with the example's steps up to it.
    Hypothesis replays a failing example to report it; a race that goes the
    other way on the replay makes that a Flaky error instead, hiding what
    failed."""

    @functools.wraps(method)
    def recording(self: BookingMachine, *args: Any, **kwargs: Any) -> None:
        try:
            method(self, *args, **kwargs)
        except Exception as error:
            if not self.world.failures:
                steps = "\n".join(f"  {step}" for step in self.history)
                self.world.failures.append(f"{error}\nthe example's steps:\n{steps}")
            raise

    return cast(F, recording)


class BookingMachine(RuleBasedStateMachine):
    world: ClassVar[World]

    def __init__(self) -> None:
        super().__init__()
        self.clients: list[str] = []  # case ids
        self.known: dict[str, Known] = {}  # by booking id, in the order made
        self.last = "nothing yet"
        self.history: list[str] = []

    # -- the model's view ------------------------------------------------------

    def ids(self, *states: BookingState) -> list[str]:
        return [b for b, k in self.known.items() if k.state in states]

    def live(self, case_id: str, but: str = "") -> list[str]:
        return [
            b
            for b, k in self.known.items()
            if k.case_id == case_id and k.state in LIVE and b != but
        ]

    def clashes(self, booking_id: str) -> bool:
        """Whether the booking's employee has another session charged in
        its week: the quota then refuses to confirm it (WEEKLY_LIMIT). A
        hold for a reschedule that did not happen is such a one."""
        mine = self.known[booking_id]
        return any(
            b != booking_id and k.case_id == mine.case_id and k.week == mine.week
            for b, k in self.known.items()
            if k.state in CHARGED
        )

    def room(self, case_id: str, holds: int, replaces: str = "") -> bool:
        """Whether the case can take `holds` more (a reschedule's hold does
        not count the booking it replaces)."""
        return len(self.live(case_id, but=replaces)) + holds <= SESSIONS_WANTED

    def client(self, n: int, holds: int = 1) -> str:
        """Client n's case; a new client, when the case has no room for
        `holds` more."""
        while len(self.clients) <= n:
            self.clients.append("")
        if not self.clients[n] or not self.room(self.clients[n], holds):
            self.clients[n] = self.world.run(self.world.race.case(SESSIONS_WANTED))
        return self.clients[n]

    def hold(self, case_id: str, replica: int, replaces: str = "") -> str:
        """A new hold for the case, in a week its employee has free (the
        replaced booking's week counts as free, and is preferred)."""
        busy = {self.known[b].week for b in self.live(case_id, but=replaces)}
        prefer = self.known[replaces].week if replaces else None
        slot = self.world.race.slots.take_outside(busy, prefer)
        answer, held = self.world.run(
            reply(self.world.race.hold_call(replica, case_id, slot, replaces))
        )
        assert held is not None, f"HoldSlot on a free slot: {answer}"
        booking_id = held.booking.booking_id
        self.known[booking_id] = Known(case_id, week_of(slot), S.HELD, slot[1])
        self.history.append(f"hold {booking_id[:8]} for {case_id} on {replica}")
        return booking_id

    def send(self, booking_id: str, ops: Collection[str], calls: Awaitable[None]) -> None:
        """Runs `calls` on the booking, with the replicas' clock past its
        start when they may complete it: only a session that has begun can
        be completed."""
        known = self.known[booking_id]

        async def timed() -> None:
            if "complete" not in ops or known.state not in (S.HELD, S.BOOKED):
                await calls
                return
            async with self.world.clock.past(known.start):
                await calls

        self.world.run(timed())

    def call(self, call: Call) -> Coroutine[Any, Any, None]:
        """The call's RPC, answering into `call`."""
        race = self.world.race

        async def send() -> None:
            if call.op == "reschedule":
                answer, moved = await reply(
                    race.reschedule(call.replica, call.booking_id, call.new_id)
                )
                if moved is not None:
                    call.shown = SHOWN[moved.booking.state]
                    call.previous = SHOWN[moved.previous.state]
                call.answer = answer
                return
            if call.op == "confirm":
                answer, confirmed = await reply(race.confirm(call.replica, call.booking_id))
                booking = confirmed.booking if confirmed is not None else None
            elif call.op == "cancel":
                answer, cancelled = await reply(race.cancel(call.replica, call.booking_id))
                booking = cancelled.booking if cancelled is not None else None
            else:
                answer, completed = await reply(race.complete(call.replica, call.booking_id))
                booking = completed.booking if completed is not None else None
            if booking is not None:
                call.shown = SHOWN[booking.state]
            call.answer = answer

        return send()

    def did(self, step: str) -> None:
        self.last = step
        self.history.append(step)
        note(step)

    def movable(self, holds: int) -> list[str]:
        """The bookings whose case has room for `holds` new ones to move to."""
        return [
            b for b in self.ids(S.BOOKED) if self.room(self.known[b].case_id, holds, replaces=b)
        ]

    def booked(self, client: int, replica: int, holds: int = 0) -> str:
        """A new booking for the client, when a rule finds none to act on,
        with room left in its case for `holds` holds to move it to."""
        booking_id = self.hold(self.client(client, max(1, holds)), replica)
        call = Call("confirm", booking_id, replica)
        self.world.run(self.call(call))
        self.history.append(str(call))
        assert call.ok, str(call)
        self.known[booking_id].state = S.BOOKED
        return booking_id

    # -- steps -----------------------------------------------------------------
    #
    # What a step does depends on how earlier races went, which no seed
    # fixes; Hypothesis wants every run of the same choices to draw the
    # same way. So no precondition looks at the model, and every rule draws
    # the same things whatever the model holds: `pick` chooses among what
    # there is, and a rule that finds nothing to act on makes it first.

    @rule(client=CLIENT, replica=REPLICA)
    @_recorded
    def hold_slot(self, client: int, replica: int) -> None:
        self.hold(self.client(client), replica)
        self.last = self.history[-1]

    @rule(pick=PICK, op=st.sampled_from([*sorted(SINGLE), "reschedule"]), replica=REPLICA)
    @_recorded
    def one_call(self, pick: int, op: str, replica: int) -> None:
        if op == "reschedule":
            self.reschedule(pick, replica)
            return
        ids = list(self.known) or [self.hold(self.client(pick % CLIENTS), replica)]
        booking_id = ids[pick % len(ids)]
        known = self.known[booking_id]
        code, after = SINGLE[op][known.state]
        if op == "confirm" and known.state is S.HELD and self.clashes(booking_id):
            code, after = "FAILED_PRECONDITION", S.RELEASED
        call = Call(op, booking_id, replica)
        self.send(booking_id, [op], self.call(call))
        self.did(str(call))
        self.world.seen[f"{op} {known.state}: {call.code}"] += 1
        assert call.code == code, (str(call), known.state)
        if call.ok:
            assert call.shown is after, (str(call), call.shown)
        assert self.world.run(_states(self.world.engine, [booking_id])) == {booking_id: after}
        known.state = after

    def reschedule(self, pick: int, replica: int) -> None:
        """A booked session moved, with nothing racing it."""
        ids = self.movable(1) or [self.booked(pick % CLIENTS, replica, 1)]
        booking_id = ids[pick % len(ids)]
        known = self.known[booking_id]
        new_id = self.hold(known.case_id, replica, replaces=booking_id)
        call = Call("reschedule", booking_id, replica, new_id)
        self.world.run(self.call(call))
        self.did(str(call))
        self.world.seen[f"reschedule: {call.code}"] += 1
        assert call.ok, str(call)
        assert (call.shown, call.previous) == (S.BOOKED, S.CANCELLED), str(call)
        states = self.world.run(_states(self.world.engine, [booking_id, new_id]))
        assert states == {booking_id: S.CANCELLED, new_id: S.BOOKED}, (str(call), states)
        known.state, self.known[new_id].state = S.CANCELLED, S.BOOKED

    # A rule for each kind of race, rather than one drawing any: Hypothesis
    # chooses among rules first, so races are then most of the steps.

    @rule(pick=PICK, pair=st.sampled_from(RACES["hold"]), replicas=REPLICA_PAIR, stagger=STAGGER)
    @_recorded
    def race_on_hold(
        self, pick: int, pair: tuple[str, str], replicas: list[int], stagger: float
    ) -> None:
        # A hold the quota would refuse races to two refusals: not a race.
        ids = [b for b in self.ids(S.HELD) if not self.clashes(b)] or [
            self.hold(self.client(pick % CLIENTS), replicas[0])
        ]
        self.race(ids[pick % len(ids)], pair, replicas, stagger)

    @rule(pick=PICK, pair=st.sampled_from(RACES["booking"]), replicas=REPLICA_PAIR, stagger=STAGGER)
    @_recorded
    def race_on_booking(
        self, pick: int, pair: tuple[str, str], replicas: list[int], stagger: float
    ) -> None:
        self.race_on_booked(pick, pair, replicas, stagger)

    @rule(pick=PICK, pair=st.sampled_from(RACES["move"]), replicas=REPLICA_PAIR, stagger=STAGGER)
    @_recorded
    def race_on_move(
        self, pick: int, pair: tuple[str, str], replicas: list[int], stagger: float
    ) -> None:
        self.race_on_booked(pick, pair, replicas, stagger)

    def race_on_booked(
        self, pick: int, pair: tuple[str, str], replicas: list[int], stagger: float
    ) -> None:
        holds = pair.count("reschedule")
        ids = self.movable(holds) or [self.booked(pick % CLIENTS, replicas[0], holds)]
        self.race(ids[pick % len(ids)], pair, replicas, stagger)

    def race(
        self, booking_id: str, pair: tuple[str, str], replicas: list[int], stagger: float
    ) -> None:
        """Both calls of `pair` on the booking from two replicas, the second
        `stagger` seconds after the first; then what the answers and the
        database say, judged."""
        calls = []
        for op, replica in zip(pair, replicas, strict=False):
            call = Call(op, booking_id, replica)
            if op == "reschedule":
                call.new_id = self.hold(self.known[booking_id].case_id, replica, booking_id)
            calls.append(call)
        for call in calls:
            if call.op == "cancel new":
                mover = next(c for c in calls if c.op == "reschedule")
                call.op, call.booking_id = "cancel", mover.new_id
        involved = sorted({c.booking_id for c in calls} | ({c.new_id for c in calls} - {""}))
        before = {b: self.known[b].state for b in involved}
        first, second = (self.call(c) for c in calls)
        self.send(booking_id, pair, _together(first, _after(stagger, second)))
        self.did(f"{' + '.join(pair)} {stagger * 1000:g} ms apart: " + ", ".join(map(str, calls)))
        answers = ", ".join(c.code + (f" {c.shown}" if c.ok else "") for c in calls)
        self.world.seen[f"{' + '.join(pair)} on {before[booking_id]}: {answers}"] += 1
        self.world.raced.add(pair)
        after = self.world.run(_states(self.world.engine, involved))
        problems = list(_judge(pair, calls, before, after))
        assert not problems, "\n".join([*problems, self.last, f"after: {after}"])
        for b, state in after.items():
            self.known[b].state = state

    # -- after every step ----------------------------------------------------------

    @invariant()
    @_recorded
    def nothing_under_way_and_every_story_agrees(self) -> None:
        engine = self.world.engine
        stuck = self.world.run(under_way(engine))
        assert stuck == [], f"under way after every call answered: {stuck}; last: {self.last}"
        problems = self.world.run(check(engine, engine))
        assert problems == [], ([str(p) for p in problems], self.last)
        # Nothing changes a booking but the calls the model made.
        actual = self.world.run(_states(engine, list(self.known)))
        expected = {b: k.state for b, k in self.known.items()}
        assert actual == expected, self.last


async def _together(*calls: Awaitable[None]) -> None:
    await asyncio.gather(*calls)


async def _after(seconds: float, call: Awaitable[None]) -> None:
    await asyncio.sleep(seconds)
    await call


def _judge(
    pair: tuple[str, str],
    calls: list[Call],
    before: dict[str, BookingState],
    after: dict[str, BookingState],
) -> Iterator[str]:
    """What is wrong with a race's answers and its outcome in the database."""
    for call in calls:
        if call.code not in ("OK", "FAILED_PRECONDITION", "ABORTED"):
            yield f"{call}: no refusal a client could act on"
    if not any(call.ok for call in calls):
        yield "both calls refused: one of them must win"
    if pair == ("confirm", "confirm") and not all(call.ok for call in calls):
        yield "the second confirmation waits for the first and answers as it"
    if sum(call.ok for call in calls if call.op == "reschedule") > 1:
        yield "a booking moved twice"
    for booking_id, state in after.items():
        if state not in AT_REST:
            yield f"{booking_id[:8]} left {state}"
    ok: dict[str, set[str]] = {b: set() for b in after}
    for call in calls:
        if not call.ok:
            continue
        if call.op == "confirm" and call.shown not in CHARGED:
            yield f"{call}: answered OK showing {call.shown}"
        if call.op == "complete" and call.shown is not S.COMPLETED:
            yield f"{call}: answered OK showing {call.shown}"
        if call.op == "reschedule":
            if call.previous is not S.CANCELLED:
                yield f"{call}: answered OK showing the old booking {call.previous}"
            ok[call.new_id].add("moved in")
        # A cancellation that lost a race to a confirmation tries again; to
        # a completion or a move under way it is refused: answered OK, the
        # booking is cancelled (a move that finished first cancelled it).
        if call.op == "cancel" and call.shown not in (S.CANCELLED, S.RELEASED):
            yield f"{call}: answered OK showing {call.shown}"
        ok[call.booking_id].add(call.op)
    for call in calls:
        if call.op == "cancel" and call.ok and after[call.booking_id] is S.BOOKED:
            yield f"{call}: answered OK, yet the booking is booked"
    for booking_id, done in ok.items():
        state, was = after[booking_id], before[booking_id]
        name = booking_id[:8]
        if "cancel" in done and state not in (S.CANCELLED, S.RELEASED):
            yield f"{name}: cancelled with OK, yet {state}"
        if "complete" in done and state is not S.COMPLETED:
            yield f"{name}: completed with OK, yet {state}"
        kept = {"confirm", "moved in"} & done and not {"cancel", "reschedule"} & done
        if kept and state not in CHARGED:
            yield f"{name}: confirmed with OK and never cancelled, yet {state}"
        if "reschedule" in done and state is not S.CANCELLED:
            yield f"{name}: moved with OK, yet {state}"
        if state != was and not any(need <= done for need in EXPLAINED.get((was, state), [])):
            yield f"{name}: {was} -> {state} with no call answering OK for it"
    for call in calls:
        others = {c.booking_id for c in calls if c is not call}
        refused = call.op == "reschedule" and not call.ok
        if refused and call.new_id not in others and after[call.new_id] is not S.HELD:
            yield f"{call}: refused, yet its new hold is {after[call.new_id]}"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    # The test moves the replicas' clock past a session's start to complete
    # it; holds then live long enough not to lapse on the way.
    env = {
        "EAP_DEV_CLOCK_FILE": str(tmp_path / "clock"),
        "EAP_SLOT_HOLD_SECONDS": str(HOLD_SECONDS),
    }
    (tmp_path / "clock").write_text("0")
    with replicas.cluster(
        tmp_path, ["all"], REPLICAS, "eap.matcher.v1.MatcherService", env
    ) as running:
        yield running


async def _open(cluster: Cluster, runner: asyncio.Runner) -> World:
    channels = [grpc.aio.insecure_channel(r.address) for r in cluster.replicas]
    stubs = [matcher_pb2_grpc.MatcherServiceStub(c) for c in channels]
    await open_county(stubs, quota_pb2_grpc.QuotaServiceStub(channels[0]))
    engine = database.create_engine(cluster.database_url)
    clock = ReplicaClock(Path(cluster.env["EAP_DEV_CLOCK_FILE"]))
    return World(runner, Race(stubs, Slots(OFFICE_DAYS)), clock, engine, channels)


async def _close(world: World) -> None:
    for channel in world.channels:
        await channel.close(None)
    await world.engine.dispose()


def test_random_steps_and_races_keep_bookings_and_ledger_agreeing(cluster: Cluster) -> None:
    # Hypothesis runs the steps synchronously: one loop for the whole test,
    # which the channels and the engine's connections belong to.
    with asyncio.Runner() as runner:
        world = runner.run(_open(cluster, runner))
        BookingMachine.world = world
        try:
            run_state_machine_as_test(
                BookingMachine,
                settings=settings(
                    max_examples=EXAMPLES,
                    stateful_step_count=STEPS,
                    deadline=None,
                    derandomize=True,
                    database=None,
                    phases=[Phase.explicit, Phase.generate, *([Phase.shrink] if SHRINK else [])],
                    suppress_health_check=[HealthCheck.too_slow],
                ),
            )
        except Exception as error:
            if world.failures:
                raise AssertionError(world.failures[0]) from error
            raise
        finally:
            runner.run(_close(world))
    print("\n".join(f"{n:4} {what}" for what, n in sorted(world.seen.items())))
    missing = {pair for pairs in RACES.values() for pair in pairs} - world.raced
    if EXAMPLES >= DEFAULT_EXAMPLES:
        # Not vacuous: every kind of race ran at least once.
        assert not missing, missing
