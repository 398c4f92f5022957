"""Every RPC of the suite, fuzzed: whatever a client sends, it gets a status
that names the problem (INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION,
...), never INTERNAL or UNKNOWN; the server keeps serving; and afterwards the
quota ledger still balances (`eapctl quota verify`) and the audit trails are
intact.

The services (quota, matcher, calendar, audit) run in one server, with the
test county seeded and some history made (cases, holds, bookings, a match
job, a plan, a group session), on SQLite (EAP_FUZZ_BACKENDS=sqlite,postgres
adds PostgreSQL and Redis). The RPCs are read from the generated
descriptors, so a new service, RPC or field is fuzzed without touching this
file. Hypothesis builds each request as one of:

- a wild message: any field at random, integers at their type's extremes,
  long and odd unicode text (NUL included), many repeated entries,
  Timestamps out of range, enum numbers nobody defined;
- a plausible message: the county's real ids, dates and sizes with a field
  or two broken, so that the handlers get past their first checks;
- bytes no message encodes to: random bytes, plausible requests cut short
  or corrupted, fields of the wrong wire type, strings that are not UTF-8.

All of them go through a bare channel as bytes, in concurrent batches.
EAP_FUZZ_CALLS_PER_RPC sets the volume: 120 per RPC by default (some
7,000 calls in all), so that `make test` stays under its ten minutes;
`make fuzz` sends 2,000 per RPC on both backends.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import logging
import operator
import os
import pkgutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import (
    Descriptor,
    EnumDescriptor,
    FieldDescriptor,
    MethodDescriptor,
    ServiceDescriptor,
)
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import eap
from eap.calendar.v1 import calendar_pb2 as cpb
from eap.matcher.v1 import matcher_pb2 as mpb
from eap.quota.v1 import quota_pb2 as qpb
from services.quota.service import QuotaService
from services.runtime import metrics, paging
from tests.conftest import MONDAY, Backend, Suite, at
from tests.county import counselor, reserve_request
from tests.matcher.test_booking import case, slots, span, submit

CALLS_PER_RPC = int(os.environ.get("EAP_FUZZ_CALLS_PER_RPC", "120"))
BACKENDS = os.environ.get("EAP_FUZZ_BACKENDS", "sqlite").split(",")
BATCH = 20  # calls in flight at once; one Hypothesis example is one batch
CALL_SECONDS = 30.0  # no unary answer may take longer
WATCH_SECONDS = 0.5  # a stream of a live job is cut short after this
# Statuses that mean the server failed, not the request.
SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.DATA_LOSS,
    }
)
EXAMPLE_PROGRAM = (
    Path(__file__).resolve().parents[2] / "services/calendar/examples/pingtung-2027.toml"
)
TRAILS = ["quota", "matcher", "calendar"]  # the audit trails: one a service
OFFICE_CSV = Path(__file__).resolve().parents[2] / "services/office_calendar/data/2027.csv"


def _services() -> list[ServiceDescriptor]:
    """Every service the generated code defines (eap.*.v1), all served by one server."""
    modules = [
        importlib.import_module(m.name)
        for m in pkgutil.walk_packages(eap.__path__, "eap.")
        if m.name.endswith("_pb2")
    ]
    return [s for module in modules for s in module.DESCRIPTOR.services_by_name.values()]


METHODS = [method for service in _services() for method in service.methods]


# -- the county, with some history to aim at ----------------------------------


@dataclass
class World:
    """Real ids the plausible requests use, besides the seeded county's."""

    case_ids: list[str] = field(default_factory=list)
    booking_ids: list[str] = field(default_factory=list)
    hold_ids: list[str] = field(default_factory=list)
    job_ids: list[str] = field(default_factory=list)
    plan_ids: list[str] = field(default_factory=list)
    event_uids: list[str] = field(default_factory=list)
    person_ids: list[str] = field(default_factory=list)
    room_ids: list[str] = field(default_factory=list)
    activity_ids: list[str] = field(default_factory=list)
    group_ids: list[str] = field(default_factory=list)


async def _history(suite: Suite) -> World:
    """Cases, a booking and a held slot, quota holds, a match job, a plan and
    a group session, so that fuzzed ids can name things that exist."""
    assert suite.calendar is not None
    world = World()
    afternoons = [span(MONDAY, 13, 17), span(MONDAY + dt.timedelta(weeks=1), 13, 17)]
    for n in range(1, 5):
        await submit(suite, case(f"K{n}", f"E{n}", accepts_group=True, availability=afternoons))
        world.case_ids.append(f"K{n}")
    for case_id, employee in (("K5", "E5"), ("K6", "E6")):
        await submit(suite, case(case_id, employee))
        world.case_ids.append(case_id)
        slot = (await slots(suite, case_id))[0]
        held = await suite.matcher.HoldSlot(
            mpb.HoldSlotRequest(case_id=case_id, counselor_id=slot.counselor_id, start=slot.start)
        )
        world.booking_ids.append(held.booking.booking_id)
    # K5's slot booked, K6's held.
    await suite.matcher.ConfirmBooking(mpb.ConfirmBookingRequest(booking_id=world.booking_ids[0]))
    group = await suite.matcher.BookGroupSession(
        mpb.BookGroupSessionRequest(
            group_id="G1",
            counselor_id="C001",
            start=at(MONDAY, 14),
            minutes=60,
            modality=mpb.MODALITY_VIDEO,
            case_ids=["K1", "K2", "K3"],
        )
    )
    world.group_ids.append(group.group_id)
    world.booking_ids.extend(b.booking_id for b in group.bookings)
    for n, employee in enumerate(("E8", "E9")):
        reserved = await suite.quota.Reserve(reserve_request(f"fuzz-{n}", employee, n_week=12))
        world.hold_ids.append(reserved.hold.hold_id)
    await suite.quota.Commit(qpb.CommitRequest(hold_id=world.hold_ids[0]))
    job = await suite.matcher.SubmitMatchJob(
        mpb.SubmitMatchJobRequest(horizon_start=at(MONDAY, 9), weeks=1, time_limit_seconds=1)
    )
    world.job_ids.append(job.job.job_id)
    submitted = await suite.calendar.PlanProgram(
        # Time enough to place every event on a busy machine: the fuzzer draws
        # event, activity and room ids from the plan.
        cpb.PlanProgramRequest(program_toml=EXAMPLE_PROGRAM.read_text(), time_limit_seconds=20)
    )
    world.plan_ids.append(submitted.plan_id)
    for _ in range(300):
        plan = await suite.calendar.GetPlan(cpb.GetPlanRequest(plan_id=submitted.plan_id))
        if plan.state == cpb.PLAN_STATE_DONE:
            break
        await asyncio.sleep(0.1)
    assert plan.state == cpb.PLAN_STATE_DONE, plan.error
    assert plan.events, "the example programme's plan placed no event"
    for event in plan.events:
        world.event_uids.append(event.uid)
        world.activity_ids.append(event.activity_id)
        world.person_ids.extend(event.required_person_ids)
        if event.room_id:
            world.room_ids.append(event.room_id)
    for ids in (world.activity_ids, world.person_ids, world.room_ids):
        ids[:] = sorted(set(ids))
    return world


# -- requests ------------------------------------------------------------------

_T = FieldDescriptor
_INT_RANGES = {
    _T.TYPE_INT32: (-(2**31), 2**31 - 1),
    _T.TYPE_SINT32: (-(2**31), 2**31 - 1),
    _T.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    _T.TYPE_INT64: (-(2**63), 2**63 - 1),
    _T.TYPE_SINT64: (-(2**63), 2**63 - 1),
    _T.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    _T.TYPE_UINT32: (0, 2**32 - 1),
    _T.TYPE_FIXED32: (0, 2**32 - 1),
    _T.TYPE_UINT64: (0, 2**64 - 1),
    _T.TYPE_FIXED64: (0, 2**64 - 1),
}
# Text that has broken parsers, queries and terminals before.
_ODD_TEXT = [
    "",
    " ",
    "\x00",
    "C001\x00",
    "\n",
    "C001\n",
    " C001",
    "..",
    "../../etc/passwd",
    "' OR '1'='1",
    "%s%n%x",
    "\u202e",
    "\ufeff",
    "\U0010ffff",
    "\uff30\uff34\uff0d\uff28\uff32",  # PT-HR in full-width letters
    "🙂",
    "x" * 65,
    "9" * 40,
    "-1",
    "NaN",
]
_MIN_SECONDS, _MAX_SECONDS = -62_135_596_800, 253_402_300_799  # 0001-01-01 .. 9999-12-31
_NOT_UTF8 = [b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xf4\x90\x80\x80", b"a\x80"]


def _integers(low: int, high: int) -> st.SearchStrategy[int]:
    edges = sorted({0, 1, low, low + 1, high - 1, high} | ({-1} if low < 0 else set()))
    return st.one_of(
        st.sampled_from(edges),
        st.integers(max(low, -1000), min(high, 1000)),
        st.integers(low, high),
    )


def _repeated(text: st.SearchStrategy[Any], low: int, high: int) -> st.SearchStrategy[Any]:
    """A short piece repeated many times: long values at a low entropy cost."""
    return st.builds(operator.mul, text, st.integers(low, high))


_WILD_TEXT = st.one_of(
    st.text(max_size=24),  # any code point protobuf allows (not surrogates), NUL included
    st.sampled_from(_ODD_TEXT),
    _repeated(st.text(min_size=1, max_size=3), 100, 2000),  # a few KB
)
_WILD_BYTES = st.one_of(
    st.binary(max_size=64),
    st.sampled_from(_NOT_UTF8),
    _repeated(st.binary(min_size=1, max_size=4), 100, 2000),
)
_WILD_STAMP = st.builds(
    Timestamp,
    seconds=st.one_of(
        st.sampled_from([_MIN_SECONDS - 1, _MIN_SECONDS, _MAX_SECONDS, _MAX_SECONDS + 1]),
        _integers(-(2**63), 2**63 - 1),
    ),
    nanos=st.one_of(
        st.sampled_from([-1, 999_999_999, 1_000_000_000]), _integers(-(2**31), 2**31 - 1)
    ),
)


def _taipei(days: int, half_hours: int, seconds: int) -> Timestamp:
    """A moment `days` after MONDAY, on a half hour, maybe a little off it."""
    stamp = at(MONDAY + dt.timedelta(days=days), 0)
    stamp.seconds += half_hours * 1800 + seconds
    return stamp


_PLAUSIBLE_STAMP = st.builds(
    _taipei, st.integers(-14, 120), st.integers(14, 40), st.sampled_from([0, 0, 0, 0, 1, 900])
)


_NEAR_DATES = st.integers(-30, 120).map(lambda n: (MONDAY + dt.timedelta(days=n)).isoformat())
_ODD_DATES = st.sampled_from(
    ["2027-02-29", "2027-3-8", "27-03-08", "2027-03-08T10:00", "0001-01-01", "9999-12-31", ""]
)
# Pairs of Timestamps that a plausible message keeps in order.
_SPANS = (("start", "end"), ("window_start", "window_end"))
_LIST_SIZES = {"case_ids": (2, 5)}  # a group session needs two cases at least
_TIME_LIMITS = st.sampled_from([-1, 1, 2, 301, 601, 2**31 - 1])


class Requests:
    """Hypothesis strategies for the request bytes of each RPC."""

    def __init__(self, world: World) -> None:
        program = EXAMPLE_PROGRAM.read_text()
        office_csv = OFFICE_CSV.read_bytes()
        # Mostly the county's; a few new ids, which concurrent calls race to create.
        counselors = _mostly(st.sampled_from(["C001", "C002"]), st.sampled_from(["C101", "C102"]))
        new_cases = st.sampled_from([f"FZ{n}" for n in range(8)])
        cases = _mostly(st.sampled_from(world.case_ids), new_cases)
        bookings = st.sampled_from(world.booking_ids)
        people = st.sampled_from(world.person_ids)
        agencies = _mostly(st.sampled_from(["PT-HR", "PT-EDU"]), st.just("PT-NEW"))
        # What a real client sends, by field name ...
        self._good: dict[str, st.SearchStrategy[Any]] = {
            "counselor_id": counselors,
            "counselor_ids": counselors,
            "preferred_counselor_id": st.sampled_from(["", "C001"]),
            "excluded_counselor_ids": st.just("C002"),
            "referral_reference": st.sampled_from(["", "", "REF-1"]),
            "provider_id": _mostly(st.sampled_from(["P1", "P2"]), st.just("P3")),
            "agency_id": agencies,
            "from_agency_id": agencies,
            "to_agency_id": agencies,
            "employee_id": st.sampled_from([f"E{n}" for n in range(1, 10)]),
            "id": st.sampled_from(["E1", "E8", "P1", "P2", "PT-HR", "PT-EDU"]),
            "staff_category": _mostly(st.sampled_from(["official", "teacher"]), st.just("nurse")),
            "organisation": st.just("pingtung"),
            "case_id": cases,
            "case_ids": cases,
            "booking_id": bookings,
            "new_booking_id": bookings,
            "replaces_booking_id": st.just(""),
            "hold_id": st.sampled_from(world.hold_ids),
            "job_id": st.sampled_from(world.job_ids),
            "plan_id": st.sampled_from(world.plan_ids),
            "event_uid": st.sampled_from(world.event_uids),
            "person_id": people,
            "required_person_ids": people,
            "optional_person_ids": people,
            "room_id": st.sampled_from(world.room_ids),
            "activity_id": st.sampled_from(world.activity_ids),
            "group_id": st.sampled_from([*world.group_ids, "G2", "G3"]),
            "idempotency_key": st.one_of(
                st.sampled_from([f"key-{n}" for n in range(8)]), st.uuids().map(str)
            ),
            "page_token": st.one_of(st.integers(), st.text(max_size=12)).map(paging.page_token),
            "category": st.sampled_from(["psychological", "family"]),
            "modality": st.sampled_from(["in_person", "video", "phone"]),
            "first_date": _NEAR_DATES,
            "last_date": _NEAR_DATES,
            "start_date": _NEAR_DATES,
            "end_date": _NEAR_DATES,
            "start_time": st.sampled_from(["09:00", "13:30"]),
            "end_time": st.sampled_from(["12:00", "17:00", "21:00"]),
            "program_toml": st.just(program),
            "csv_content": st.just(office_csv),
            "fiscal_year": st.sampled_from([0, 2027]),
            "year": st.sampled_from([0, 2027]),
            "minutes": st.sampled_from([60, 90, 120, 360]),
            "duration_minutes": st.sampled_from([30, 60, 90, 120]),
            "hold_ttl_seconds": st.sampled_from([0, 60]),
            "weekday": st.integers(1, 7),
            "max_sessions_per_day": st.integers(1, 12),
            "sessions_wanted": st.integers(1, 3),
            "weeks": st.integers(1, 8),
            "size": st.integers(2, 4),
            "index": st.integers(0, 3),
            "min_size": st.integers(2, 10),
            "max_size": st.integers(2, 10),
            "min_participants": st.integers(0, 3),
            "page_size": st.sampled_from([0, 1, 2, 100]),
            "max_slots": st.sampled_from([0, 1, 20, 200]),
            "max_cases": st.sampled_from([0, 1, 500]),
            "limit": st.sampled_from([0, 1, 10]),
            "trail": st.sampled_from(TRAILS),
            # Kept short in every request, wild ones too: a valid programme
            # or match job with a long time limit would only keep a core busy.
            "time_limit_seconds": _TIME_LIMITS,
        }
        for name in ("amount_ntd", "extra_ntd", "hourly_rate_ntd", "cap_minutes"):
            self._good[name] = st.sampled_from([1, 2000, 100_000])
        # ... and what it sends by mistake, besides wild values.
        self._edges: dict[str, st.SearchStrategy[Any]] = {
            "counselor_id": st.just("C404"),
            "replaces_booking_id": bookings,
            "provider_id": st.just("P404"),
            "agency_id": st.just("PT-404"),
            "staff_category": st.just("contractor"),
            "organisation": st.just("elsewhere"),
            "category": st.just("astrology"),
            "modality": st.just("smoke"),
            "start_time": st.sampled_from(["24:00", "9:00", "25:61"]),
            "end_time": st.sampled_from(["08:00", "24:00", "17:60"]),
            "program_toml": st.sampled_from(
                [program.replace("year = 2027", "year = 2031"), program[:900], program * 2]
            ),
            "csv_content": st.sampled_from(
                [office_csv[: len(office_csv) // 2], office_csv.replace(b",0,", b",7,")]
            ),
            "fiscal_year": st.sampled_from([2026, 2028, 1999, 10_000]),
            "year": st.sampled_from([2026, 2028, 1999, 10_000]),
            "minutes": st.sampled_from([0, 30, 45, 150, 361]),
            "duration_minutes": st.sampled_from([0, 15, 180, 481]),
            "hold_ttl_seconds": st.sampled_from([1, 86_400, 86_401]),
            "weekday": st.sampled_from([0, 8]),
            "max_sessions_per_day": st.sampled_from([0, 13]),
            "sessions_wanted": st.sampled_from([0, 13]),
            "weeks": st.sampled_from([0, 9]),
            "size": st.sampled_from([1, 31]),
            "index": st.sampled_from([-1, 30]),
            "min_size": st.sampled_from([1, 31]),
            "max_size": st.sampled_from([1, 31]),
            "min_participants": st.sampled_from([1, 31]),
            "page_size": st.sampled_from([1000, 1001, 501]),
            "max_slots": st.just(201),
            "max_cases": st.just(501),
            "limit": st.just(101),
            "trail": st.just("audit"),
        }
        for name in ("first_date", "last_date", "start_date", "end_date"):
            self._edges[name] = _ODD_DATES
        for name in ("amount_ntd", "extra_ntd", "hourly_rate_ntd", "cap_minutes"):
            self._edges[name] = st.sampled_from([-1, 0, 10**12])
        self._wild: dict[tuple[str, bool], st.SearchStrategy[Message]] = {}
        self._plausible: dict[tuple[str, bool], st.SearchStrategy[Message]] = {}

    def payloads(self, method: MethodDescriptor) -> st.SearchStrategy[bytes]:
        """What to send to `method`: mostly plausible, often wild, some bytes
        that decode to no message at all."""
        request = method.input_type
        plausible = self.plausible(request).map(_serialized)
        return st.one_of(
            plausible,
            plausible,
            plausible,
            plausible,
            self.wild(request).map(_serialized),
            self.wild(request).map(_serialized),
            st.builds(
                _mutated,
                plausible,
                st.integers(0, 2**16),
                st.integers(0, 3),
                st.binary(min_size=1, max_size=8),
            ),
            _wire_garbage(request),
            st.binary(max_size=256),
        )

    # wild: every field random, nested messages included

    def wild(self, descriptor: Descriptor, small: bool = False) -> st.SearchStrategy[Message]:
        key = (descriptor.full_name, small)
        if key not in self._wild:
            self._wild[key] = st.deferred(lambda: self._build_wild(descriptor, small))
        return self._wild[key]

    def _build_wild(self, descriptor: Descriptor, small: bool) -> st.SearchStrategy[Message]:
        if descriptor.full_name == Timestamp.DESCRIPTOR.full_name:
            return _WILD_STAMP
        values = {f.name: self._wild_field(f, small) for f in descriptor.fields}
        return st.builds(_message(descriptor), st.fixed_dictionaries({}, optional=values))

    def _wild_field(self, descriptor: FieldDescriptor, small: bool) -> st.SearchStrategy[Any]:
        if descriptor.name == "time_limit_seconds":
            return _TIME_LIMITS
        one = self._wild_value(descriptor, small)
        if not descriptor.is_repeated:
            return one
        if small:
            return st.lists(one, max_size=3)
        # Many entries (past every limit the API sets) are cheap repeats of
        # a few small ones.
        many = self._wild_value(descriptor, small=True)
        return st.one_of(
            st.lists(one, max_size=5), _repeated(st.lists(many, min_size=1, max_size=2), 20, 1100)
        )

    def _wild_value(self, descriptor: FieldDescriptor, small: bool) -> st.SearchStrategy[Any]:
        kind = descriptor.type
        if kind in _INT_RANGES:
            return _integers(*_INT_RANGES[kind])
        if kind in (_T.TYPE_DOUBLE, _T.TYPE_FLOAT):
            return st.floats(width=64 if kind == _T.TYPE_DOUBLE else 32)
        if kind == _T.TYPE_BOOL:
            return st.booleans()
        if kind == _T.TYPE_STRING:
            return st.text(max_size=8) if small else _WILD_TEXT
        if kind == _T.TYPE_BYTES:
            return st.binary(max_size=8) if small else _WILD_BYTES
        if kind == _T.TYPE_ENUM:
            return st.one_of(_known(descriptor.enum_type), _integers(-(2**31), 2**31 - 1))
        assert kind == _T.TYPE_MESSAGE, descriptor.full_name
        return self.wild(descriptor.message_type, small=True)

    # plausible: the county's ids and sizes, a field or two broken

    def plausible(self, descriptor: Descriptor, top: bool = True) -> st.SearchStrategy[Message]:
        key = (descriptor.full_name, top)
        if key not in self._plausible:
            self._plausible[key] = st.deferred(lambda: self._build_plausible(descriptor, top))
        return self._plausible[key]

    def _build_plausible(self, descriptor: Descriptor, top: bool) -> st.SearchStrategy[Message]:
        if descriptor.full_name == Timestamp.DESCRIPTOR.full_name:
            return _PLAUSIBLE_STAMP
        good, broken = {}, {}
        for f in descriptor.fields:
            one = self._plausible_value(f)
            if f.is_repeated:
                low, high = _LIST_SIZES.get(f.name, (1, 4))
                one = st.lists(one, min_size=low, max_size=high, unique=not _is_message(f))
            good[f.name] = one
            if _is_message(f):
                # Broken inside rather than as a whole, so the rest stays plausible.
                inner = self.plausible(f.message_type)
                bad = st.lists(inner, min_size=1, max_size=4) if f.is_repeated else inner
                broken[f.name] = st.one_of(bad, bad, bad, st.none())  # None: left unset
                continue
            edge = self._edges.get(f.name) if f.type != _T.TYPE_ENUM else st.just(0)
            if edge is not None and f.is_repeated:
                edge = st.lists(edge, min_size=1, max_size=2)
            wild = self._wild_field(f, small=False)
            broken[f.name] = st.one_of(wild, st.none(), *([edge] if edge is not None else []))
        # Most requests break a field or two (the top message) or none (one inside).
        breaks = st.sampled_from([0, 1, 1, 2] if top else [0, 0, 0, 0, 1])
        stamps = {f.name for f in descriptor.fields if _is_stamp(f)}
        span = next((p for p in _SPANS if set(p) <= stamps), None)
        return _plausible_message(_message(descriptor), good, broken, breaks, span)

    def _plausible_value(self, descriptor: FieldDescriptor) -> st.SearchStrategy[Any]:
        kind = descriptor.type
        if kind == _T.TYPE_ENUM:  # a category or modality enum, not the text of that name
            return st.sampled_from([v.number for v in descriptor.enum_type.values if v.number])
        if descriptor.name in self._good:
            return self._good[descriptor.name]
        if kind == _T.TYPE_MESSAGE:
            return self.plausible(descriptor.message_type, top=False)
        if kind == _T.TYPE_STRING:
            return st.text("abcdefghijklmnopqrstuvwxyz -", min_size=1, max_size=20)
        if kind in (_T.TYPE_DOUBLE, _T.TYPE_FLOAT):
            return st.floats(0, 1000)
        if kind == _T.TYPE_BOOL:
            return st.booleans()
        return st.integers(0, 100)


@st.composite
def _plausible_message(
    draw: st.DrawFn,
    build: Callable[[dict[str, Any]], Message],
    good: dict[str, st.SearchStrategy[Any]],
    broken: dict[str, st.SearchStrategy[Any]],
    breaks: st.SearchStrategy[int],
    span: tuple[str, str] | None,
) -> Message:
    """A message of good values but for `breaks` fields; a span's end after its start."""
    names = sorted(good)
    count = min(draw(breaks), len(names))
    chosen = set()
    if count:
        chosen = draw(st.sets(st.sampled_from(names), min_size=count, max_size=count))
    values = {name: draw(broken[name] if name in chosen else good[name]) for name in names}
    if span and not chosen & set(span):
        start, end = span
        length = draw(st.sampled_from([3600, 5400, 7200, 7200, 4 * 3600, 7 * 86_400, 14 * 86_400]))
        values[end] = Timestamp(seconds=values[start].seconds + length)
    return build(values)


def _is_message(field: FieldDescriptor) -> bool:
    return field.type == _T.TYPE_MESSAGE and not _is_stamp(field)


def _is_stamp(field: FieldDescriptor) -> bool:
    return field.type == _T.TYPE_MESSAGE and field.message_type is Timestamp.DESCRIPTOR


def _mostly(usual: st.SearchStrategy[Any], other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`usual` three times in four, else `other`."""
    return st.one_of(usual, usual, usual, other)


def _known(enum: EnumDescriptor) -> st.SearchStrategy[int]:
    return st.sampled_from([value.number for value in enum.values])


def _message(descriptor: Descriptor) -> Callable[[dict[str, Any]], Message]:
    cls = GetMessageClass(descriptor)

    def build(values: dict[str, Any]) -> Message:
        return cls(**{name: value for name, value in values.items() if value is not None})

    return build


def _serialized(message: Message) -> bytes:
    return message.SerializeToString()


def _mutated(data: bytes, where: int, how: int, noise: bytes) -> bytes:
    """`data` cut short, with a byte changed, or with `noise` inserted."""
    cut = where % (len(data) + 1)
    if how == 0:
        return data[:cut]
    if how == 1 and data:
        cut = min(cut, len(data) - 1)
        return data[:cut] + bytes([data[cut] ^ (noise[0] or 1)]) + data[cut + 1 :]
    if how == 2:
        return data[:cut] + noise + data[cut:]
    return data + noise


def _varint(value: int) -> bytes:
    value &= 2**64 - 1
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field_bytes(number: int, wire_type: int, value: int, body: bytes, lie: int) -> bytes:
    """One field as it would travel, or nearly: any wire type for any field,
    lengths that lie, varints too long."""
    tag = _varint(number << 3 | wire_type)
    if wire_type == 0:
        return tag + (_varint(value) if lie == 0 else b"\xff" * 10 + b"\x01")
    if wire_type == 1:
        return tag + (value & (2**64 - 1)).to_bytes(8, "little")
    if wire_type == 2:
        return tag + _varint(len(body) + lie) + body
    if wire_type == 5:
        return tag + (value & (2**32 - 1)).to_bytes(4, "little")
    return tag + body  # groups (3, 4) and the wire types nobody defined (6, 7)


def _wire_garbage(descriptor: Descriptor) -> st.SearchStrategy[bytes]:
    numbers = [f.number for f in descriptor.fields] or [1]
    one = st.builds(
        _field_bytes,
        st.one_of(st.sampled_from(numbers), st.integers(1, 2**29 - 1)),
        st.integers(0, 7),
        _integers(-(2**63), 2**64 - 1),
        st.one_of(st.sampled_from(_NOT_UTF8), st.binary(max_size=16)),
        st.sampled_from([0, 0, 0, 1, -1, 1000]),
    )
    return st.lists(one, min_size=1, max_size=6).map(b"".join)


# -- calls -----------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    code: grpc.StatusCode
    details: str


def _path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


async def _call(channel: grpc.aio.Channel, method: MethodDescriptor, payload: bytes) -> Outcome:
    """Sends `payload` as the request, bytes as they are, and reads the status."""
    try:
        if method.server_streaming:
            stream = channel.unary_stream(_path(method))(payload, timeout=WATCH_SECONDS)
            async for _ in stream:
                pass
        else:
            await channel.unary_unary(_path(method))(payload, timeout=CALL_SECONDS)
    except grpc.aio.AioRpcError as error:
        return Outcome(error.code(), error.details() or "")
    return Outcome(grpc.StatusCode.OK, "")


def _is_fault(method: MethodDescriptor, outcome: Outcome) -> bool:
    if outcome.code in SERVER_FAULTS:
        return True
    # A status too long for the client's metadata limit: the refusal is lost.
    if outcome.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "metadata" in outcome.details:
        return True
    # A stream of a live job runs past its deadline; nothing else should.
    return outcome.code == grpc.StatusCode.DEADLINE_EXCEEDED and not method.server_streaming


def _unexpected_errors() -> float:
    return sum(
        sample.value
        for family in metrics.UNEXPECTED_ERRORS.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    )


def _report(
    method: MethodDescriptor,
    faults: Sequence[tuple[bytes, Outcome]],
    logged: Sequence[logging.LogRecord],
) -> str:
    lines = [f"{_path(method)}: {len(faults)} calls failed on the server's side"]
    for payload, outcome in faults[:5]:
        lines.append(f"  {outcome.code.name} {outcome.details[:200]!r} for {payload[:300]!r}")
    for record in logged[-3:]:
        error_type = getattr(record, "error_type", "?")
        stack = getattr(record, "stack", "")
        lines.append(f"  logged {error_type}:\n{stack[:2500]}")
    return "\n".join(lines)


@dataclass
class Tally:
    calls: Counter[str] = field(default_factory=Counter)
    codes: Counter[tuple[str, str]] = field(default_factory=Counter)


def _fuzz(
    method: MethodDescriptor,
    payloads: st.SearchStrategy[bytes],
    send: Callable[[list[bytes]], list[Outcome]],
    tally: Tally,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Hypothesis sends batches of payloads to `method` until it has sent
    CALLS_PER_RPC; any server-side failure fails the test with its batch."""

    @settings(
        max_examples=max(1, CALLS_PER_RPC // BATCH),
        derandomize=True,
        database=None,
        deadline=None,
        # No shrinking: a batch that fails is reported as sent. A server that
        # stops answering fails every call after 30 s, so shrinking would
        # replay batches of such calls for an hour instead of failing.
        phases=(Phase.generate,),
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )
    @given(st.lists(payloads, min_size=BATCH, max_size=BATCH))
    def batch(sent: list[bytes]) -> None:
        outcomes = send(sent)
        tally.calls[method.full_name] += len(sent)
        for outcome in outcomes:
            tally.codes[method.full_name, outcome.code.name] += 1
        faults = [(p, o) for p, o in zip(sent, outcomes, strict=True) if _is_fault(method, o)]
        where = _path(method).lstrip("/")
        logged = [r for r in caplog.records if getattr(r, "grpc_method", "") == where]
        assert not faults, _report(method, faults, logged)

    batch()


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
async def test_no_request_makes_the_servers_fail(
    suite_with_calendar: Suite, backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    suite = suite_with_calendar
    assert suite.server is not None
    caplog.set_level(logging.ERROR, logger="eap.rpc")
    world = await _history(suite)
    requests = Requests(world)
    unexpected_before = _unexpected_errors()
    loop = asyncio.get_running_loop()
    tally = Tally()
    started = time.perf_counter()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{suite.server.port}") as channel:

        def sender(method: MethodDescriptor) -> Callable[[list[bytes]], list[Outcome]]:
            async def batch(sent: list[bytes]) -> list[Outcome]:
                return await asyncio.gather(*(_call(channel, method, p) for p in sent))

            return lambda sent: asyncio.run_coroutine_threadsafe(batch(sent), loop).result()

        def fuzz_all() -> None:
            for method in METHODS:
                _fuzz(method, requests.payloads(method), sender(method), tally, caplog)

        # Hypothesis draws in a thread of its own, so this loop keeps serving.
        await asyncio.to_thread(fuzz_all)
        elapsed = time.perf_counter() - started

        # Still serving, every service healthy, the books balanced.
        health = health_pb2_grpc.HealthStub(channel)
        answer = await health.Check(health_pb2.HealthCheckRequest())  # type: ignore[misc]
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        await suite.quota.Ping(qpb.PingRequest())
        await suite.matcher.GetCounselor(mpb.GetCounselorRequest(counselor_id="C001"))
    assert _unexpected_errors() == unexpected_before
    quota = next(s for s in suite.server.services if isinstance(s, QuotaService))
    assert await quota.reads.verify() == []
    for service in suite.server.services:
        trail = getattr(service, "audit", None)
        if trail is not None:
            assert await trail.verify() == [], service.name
    verify = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("eapctl")),
        "quota",
        "verify",
        env={**os.environ, "DATABASE_URL": backend.settings.database_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(verify.communicate(), 60)
    assert verify.returncode == 0, output.decode()
    total = sum(tally.calls.values())
    print(f"\nfuzz: {total} calls to {len(METHODS)} RPCs in {elapsed:.1f} s")
    for method in METHODS:
        codes = {c: n for (m, c), n in sorted(tally.codes.items()) if m == method.full_name}
        print(f"  {method.full_name}: {tally.calls[method.full_name]} {codes}")
    assert all(tally.calls[m.full_name] >= CALLS_PER_RPC // 2 for m in METHODS), tally.calls


def _request(path: str, message: Message | bytes) -> tuple[str, bytes]:
    return path, message if isinstance(message, bytes) else message.SerializeToString()


# What the fuzzer found, each answered INTERNAL, UNKNOWN or not at all before
# its fix; now each is INVALID_ARGUMENT naming the field.
FOUND = [
    # bytes that decode to no message (gRPC itself answered UNKNOWN)
    ("request", _request("/eap.quota.v1.QuotaService/Ping", b"\xff\xff\xff")),
    ("request", _request("/eap.matcher.v1.MatcherService/GetCase", b"\n\x03\xed\xa0\x80")),
    # a Timestamp no datetime holds
    (
        "session_start",
        _request(
            "/eap.quota.v1.QuotaService/Reserve",
            qpb.ReserveRequest(session_start=Timestamp(seconds=2**62)),
        ),
    ),
    (
        "start",
        _request(
            "/eap.calendar.v1.CalendarService/MoveEvent",
            cpb.MoveEventRequest(start=Timestamp(seconds=0, nanos=-1)),
        ),
    ),
    # a horizon of 2**31 - 1 weeks, added up before it was refused
    (
        "weeks",
        _request(
            "/eap.matcher.v1.MatcherService/SubmitMatchJob",
            mpb.SubmitMatchJobRequest(
                horizon_start=at(MONDAY, 9), weeks=2**31 - 1, time_limit_seconds=1
            ),
        ),
    ),
    # a page token past int64, sent to the database as it was
    (
        "page_token",
        _request(
            "/eap.quota.v1.QuotaService/ListLedger",
            qpb.ListLedgerRequest(page_token=paging.page_token("9" * 30)),
        ),
    ),
    # a line break inside a CSV field
    (
        "csv_content",
        _request(
            "/eap.calendar.v1.CalendarService/ImportOfficeCalendar",
            cpb.ImportOfficeCalendarRequest(year=2027, csv_content=b"]\r8r"),
        ),
    ),
    # NUL in an id, or in the key a page token names: PostgreSQL's text cannot hold it
    (
        "case_id",
        _request("/eap.matcher.v1.MatcherService/GetCase", mpb.GetCaseRequest(case_id="K1\x00")),
    ),
    (
        "page_token",
        _request(
            "/eap.matcher.v1.MatcherService/ListCounselors",
            mpb.ListCounselorsRequest(page_token=paging.page_token("\x00")),
        ),
    ),
]


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
async def test_what_the_fuzzer_found_stays_fixed(suite_with_calendar: Suite) -> None:
    assert suite_with_calendar.server is not None
    port = suite_with_calendar.server.port
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        for field_name, (path, payload) in FOUND:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary(path)(payload, timeout=10)
            error = caught.value
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (path, error.details())
            assert (error.details() or "").startswith(f"{field_name}:"), error.details()
        # Thousands of bad fields, or an id of kilobytes echoed back: the
        # refusal still fits the trailers a client accepts.
        many = mpb.UpsertCounselorRequest(
            counselor=mpb.Counselor(specialties=[99] * 3000, modalities=[99] * 3000)
        )
        path = "/eap.matcher.v1.MatcherService/UpsertCounselor"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary(path)(many.SerializeToString(), timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (caught.value.details() or "").endswith("and 5990 more")
        long_id = cpb.GetPlanRequest(plan_id="p" * 5000).SerializeToString()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary("/eap.calendar.v1.CalendarService/GetPlan")(long_id)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    # The same new counselor or case sent at once (on PostgreSQL, some of them
    # were answered INTERNAL): one creates it, the others find it.
    matcher = suite_with_calendar.matcher
    upserts = await asyncio.gather(
        *(
            matcher.UpsertCounselor(mpb.UpsertCounselorRequest(counselor=counselor("C9")))
            for _ in range(10)
        )
    )
    assert sorted(u.created for u in upserts) == [False] * 9 + [True]
    submitted = await asyncio.gather(
        *(submit(suite_with_calendar, case("K9", "E9")) for _ in range(10))
    )
    assert {c.case_id for c in submitted} == {"K9"}
    # A case preferring a counselor whose provider has no contract, and
    # excluding one nobody registered, left a match job's snapshot unreadable.
    await matcher.UpsertCounselor(mpb.UpsertCounselorRequest(counselor=counselor("C8", "P9")))
    await submit(
        suite_with_calendar,
        case("K8", "E8", preferred_counselor_id="C8", excluded_counselor_ids=["C404"]),
    )
    job = await matcher.SubmitMatchJob(
        mpb.SubmitMatchJobRequest(horizon_start=at(MONDAY, 9), weeks=1, time_limit_seconds=1)
    )
    assert job.job.state == mpb.MATCH_JOB_STATE_QUEUED
