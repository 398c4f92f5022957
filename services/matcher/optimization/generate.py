"""Deterministic benchmark instances (eap-match-instance/1) shaped like a county EAP.

    python -m services.matcher.optimization.generate --scale S --seed 1 [--weeks 4] [--tight 0.75]

The shape, and why:

* Providers are contracted firms. The first is a general EAP firm whose
  counselors cover several categories (so every category has someone); the
  others are specialist practices (law offices, financial counselling, ...)
  with their own rate bands.
* Counselors keep a weekly roster of half-days in Taiwan office hours
  (09:00-12:00, 13:30-17:30, the civil-service lunch break between), some
  an evening (18:30-21:00) for remote sessions, a few a Saturday morning.
  Days the DGPA office calendar marks closed (national holidays, their
  make-up days off) drop daytime work; leave and training drop a few more.
* Employees work office hours or shifts (police, fire, hospitals): office
  workers get a few approved half-days and remote evenings, shift workers
  whole free days between shifts. Some employees bring a second concern,
  so rules on employees (weekly limit, entitlement) span cases.
* Most cases wait in a backlog from the weeks before the horizon; new ones
  arrive during it, availability only from submission on. Crisis cases
  arrive during the horizon and clear their diaries for the next 3 days.
* Agency budgets are a share (`tight`) of what their cases would cost at the
  usual rate, and provider hour caps a share of the hours routed to them,
  so both bind.

Same scale, seed and options: the same dict, byte for byte once dumped.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from services.matcher.optimization.instance import (
    INSTANCE_FORMAT,
    SEED_RULES,
    SEED_WEIGHTS,
    TIME_FORMAT,
)
from services.office_calendar import OfficeCalendar, load_shipped
from services.rules.office_time import OFFICE_ZONE_NAME
from services.rules.sessions import SLOT_MINUTES


@dataclass(frozen=True)
class Scale:
    cases: int
    counselors: int
    agencies: int
    providers: int


# The benchmark's S, M and L sizes.
SCALES = {
    "S": Scale(cases=60, counselors=8, agencies=3, providers=3),
    "M": Scale(cases=400, counselors=40, agencies=8, providers=5),
    "L": Scale(cases=2000, counselors=150, agencies=20, providers=8),
}

# Share of demand by category in a public-sector EAP: mostly psychological.
CATEGORIES = {
    "psychological": 50,
    "family": 14,
    "legal": 10,
    "financial": 9,
    "health": 9,
    "management": 8,
}
# NT$ per hour, low and high, by a specialist provider's main category.
RATE_BANDS = {
    "psychological": (1600, 2400),
    "family": (1600, 2200),
    "legal": (2200, 3200),
    "financial": (1400, 2000),
    "health": (1200, 1800),
    "management": (2400, 3200),
}
SPECIALISTS = ["psychological", "legal", "family", "financial", "management", "health"]
MORNING = (time(9, 0), time(12, 0))
AFTERNOON = (time(13, 30), time(17, 30))
EVENING = (time(18, 30), time(21, 0))
WORKDAY = (time(9, 0), time(17, 30))
AGENCY_NAMES = [
    ("police bureau", 6, 0.7),  # name, relative headcount, share on shifts
    ("education bureau", 5, 0.0),
    ("fire bureau", 3, 0.8),
    ("public health bureau", 3, 0.4),
    ("social affairs bureau", 2, 0.1),
    ("environmental protection bureau", 2, 0.3),
    ("civil affairs bureau", 1, 0.0),
    ("finance bureau", 1, 0.0),
    ("labor affairs bureau", 1, 0.0),
    ("transportation bureau", 1, 0.2),
]


def _pick(rnd: random.Random, weights: dict[str, int]) -> str:
    names = list(weights)
    return rnd.choices(names, weights=[weights[n] for n in names])[0]


Block = tuple[datetime, datetime]


def _block(day: date, span: tuple[time, time]) -> Block:
    return datetime.combine(day, span[0]), datetime.combine(day, span[1])


@dataclass
class _Provider:
    id: str
    name: str
    main: str  # "general" or the specialist category
    rate: int
    hours_cap: int = 0


@dataclass
class _Counselor:
    id: str
    provider: _Provider
    specialties: list[str]
    modalities: list[str]
    max_per_day: int
    availability: list[Block]


@dataclass
class _Agency:
    id: str
    name: str
    headcount: float
    shift_share: float
    budget: int = 0


@dataclass(frozen=True)
class _Employee:
    id: str
    agency: _Agency
    remaining_hours: int
    days_off: frozenset[date] | None  # shift workers: the days between shifts


@dataclass
class _Case:
    id: str
    employee: _Employee
    category: str
    kind: str
    sessions: int
    minutes: int
    modalities: list[str]
    submitted: datetime
    availability: list[Block] = field(default_factory=list)
    preferred: _Counselor | None = None
    excluded: list[_Counselor] = field(default_factory=list)

    def accepts(self, k: _Counselor) -> bool:
        return self.category in k.specialties and any(m in k.modalities for m in self.modalities)

    @property
    def remote(self) -> bool:
        return "video" in self.modalities or "phone" in self.modalities


@dataclass(frozen=True)
class _World:
    """What every part of the generator reads: the random stream and days."""

    rnd: random.Random
    start: date
    weeks: int
    calendar: OfficeCalendar

    @property
    def days(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range(7 * self.weeks)]

    def office_day(self, day: date) -> bool:
        return day.weekday() < 5 and self.calendar.is_office_day(day)


# --- providers and counselors ----------------------------------------------------


def _providers(w: _World, n: int) -> list[_Provider]:
    out: list[_Provider] = []
    for p in range(n):
        main = "general" if p == 0 else SPECIALISTS[(p - 1) % len(SPECIALISTS)]
        low, high = RATE_BANDS["psychological" if main == "general" else main]
        name = "general EAP firm" if main == "general" else f"{main} practice {p}"
        out.append(_Provider(f"PRV{p + 1:02d}", name, main, w.rnd.randrange(low, high + 1, 100)))
    return out


def _specialties(w: _World, main: str) -> list[str]:
    if main == "general":
        others = [c for c in CATEGORIES if c != "psychological"]
        return sorted(["psychological", *w.rnd.sample(others, w.rnd.choice([1, 1, 2]))])
    extra = _pick(w.rnd, CATEGORIES) if w.rnd.random() < 0.35 else main
    return sorted({main, extra})


def _roster(w: _World, remote: bool) -> list[Block]:
    """Weekly half-days kept every week, minus closed days and leave."""
    half_days = [(wd, span) for wd in range(5) for span in (MORNING, AFTERNOON)]
    weekly = sorted(w.rnd.sample(half_days, w.rnd.choice([2, 3, 4, 4, 5, 6])))
    evening = w.rnd.randrange(5) if remote and w.rnd.random() < 0.4 else None
    saturday = w.rnd.random() < 0.1
    out: list[Block] = []
    for day in w.days:
        if w.office_day(day):
            out += [
                _block(day, span)
                for wd, span in weekly
                if wd == day.weekday() and w.rnd.random() > 0.07
            ]  # leave, training
            if evening == day.weekday():
                out.append(_block(day, EVENING))
        elif day.weekday() == 5 and saturday:
            out.append(_block(day, MORNING))
    return out


def _modalities(w: _World) -> list[str]:
    if w.rnd.random() < 0.05:  # works from home only
        return ["video", "phone"]
    return (
        ["in_person"]
        + (["video"] if w.rnd.random() < 0.7 else [])
        + (["phone"] if w.rnd.random() < 0.3 else [])
    )


def _counselors(w: _World, n: int, providers: Sequence[_Provider]) -> list[_Counselor]:
    out: list[_Counselor] = []
    for c in range(n):
        # every provider staffed; the general firm is the largest
        prov = providers[c] if c < len(providers) else w.rnd.choice([providers[0], *providers])
        modalities = _modalities(w)
        remote = "video" in modalities or "phone" in modalities
        out.append(
            _Counselor(
                f"C{c + 1:03d}",
                prov,
                _specialties(w, prov.main),
                modalities,
                w.rnd.choice([3, 4, 4, 5]),
                _roster(w, remote),
            )
        )
    # A category no one offers would make its cases unservable by
    # construction; the general firm's first counselor takes it on.
    offered = {s for k in out for s in k.specialties}
    out[0].specialties = sorted([*out[0].specialties, *(c for c in CATEGORIES if c not in offered)])
    return out


# --- agencies, employees and cases -------------------------------------------------


def _agencies(w: _World, n: int) -> list[_Agency]:
    out: list[_Agency] = []
    for a in range(n):
        name, size, shifts = AGENCY_NAMES[a % len(AGENCY_NAMES)]
        if a >= len(AGENCY_NAMES):
            name = f"{name}, district {a // len(AGENCY_NAMES) + 1}"
        out.append(_Agency(f"AG{a + 1:02d}", name, size * w.rnd.uniform(0.7, 1.3), shifts))
    return out


def _employee(w: _World, number: int, agencies: Sequence[_Agency]) -> _Employee:
    agency = w.rnd.choices(agencies, weights=[a.headcount for a in agencies])[0]
    hours = w.rnd.choices([2, 3, 4, 6, 8, 10, 12], weights=[4, 4, 10, 14, 24, 14, 30])[0]
    days_off = None
    if w.rnd.random() < agency.shift_share:
        days_off = frozenset(d for d in w.days if w.rnd.random() < 0.35)
    return _Employee(f"E{number:04d}", agency, hours, days_off)


def _free_time(w: _World, case: _Case) -> list[Block]:
    """When the employee can come. A crisis clears the diary for 3 days."""
    who = case.employee
    clear_until = case.submitted.date() + timedelta(days=3) if case.kind == "crisis" else None
    out: list[Block] = []
    for day in w.days:
        if clear_until is not None and day <= clear_until:
            out += [_block(day, WORKDAY)] + ([_block(day, EVENING)] if case.remote else [])
        elif who.days_off is not None:
            off = day in who.days_off
            out += [_block(day, WORKDAY)] if off else []
            if case.remote and (off or w.rnd.random() < 0.2):
                out.append(_block(day, EVENING))
        elif day.weekday() < 5:
            # approved leave for a session, or a remote evening at home
            out += [_block(day, span) for span in (MORNING, AFTERNOON) if w.rnd.random() < 0.28]
            if case.remote and w.rnd.random() < 0.35:
                out.append(_block(day, EVENING))
        elif day.weekday() == 5 and w.rnd.random() < 0.3:
            out.append(_block(day, MORNING))
    return _from(out, case.submitted)


def _from(blocks: Sequence[Block], moment: datetime) -> list[Block]:
    """Availability is given at intake: nothing before it, and nothing
    shorter than the shortest session."""
    past = moment.hour * 60 + moment.minute
    first = moment.replace(second=0) + timedelta(minutes=-past % 30)
    clipped = [(max(a, first), b) for a, b in blocks]
    return [(a, b) for a, b in clipped if b - a >= timedelta(minutes=60)]


def _shape(w: _World, kind: str, category: str) -> tuple[int, int, list[str]]:
    """Sessions wanted, minutes each, acceptable modalities."""
    rnd = w.rnd
    if kind == "crisis":
        sessions = rnd.choice([1, 1, 2, 3])
    elif kind == "involuntary":  # a supervisor's referral: a short fixed course
        sessions = rnd.choice([2, 3])
    else:
        sessions = rnd.choice([1, 2, 3, 4])
    longer = category == "family"  # couples and families need the time
    minutes = rnd.choices([60, 90, 120], weights=[45, 30, 25] if longer else [75, 18, 7])[0]
    modes = [["in_person"], ["video"], ["in_person", "video"], ["phone", "video"], ["phone"]]
    weights = [20, 20, 30, 25, 5] if kind == "crisis" else [32, 15, 38, 12, 3]
    return min(sessions, w.weeks), minutes, rnd.choices(modes, weights=weights)[0]


def _submitted(w: _World, kind: str) -> datetime:
    rnd = w.rnd
    h0 = datetime.combine(w.start, time())
    if kind == "crisis":  # during the horizon, at any waking hour
        day = rnd.randrange(max(1, 7 * w.weeks - 3))
        return h0 + timedelta(days=day, hours=rnd.randint(8, 20), minutes=rnd.choice([0, 15, 40]))
    office = timedelta(hours=8, minutes=30 + rnd.randrange(0, 9 * 60, 5))
    if rnd.random() < 0.25:  # new intake during the horizon's first weeks
        return h0 + timedelta(days=rnd.randrange(max(1, 7 * (w.weeks - 1)))) + office
    return h0 - timedelta(days=rnd.randint(1, 21)) + office  # the backlog


def _relationships(w: _World, case: _Case, counselors: Sequence[_Counselor]) -> None:
    """Returning clients ask for their counselor; a few exclude one (a
    colleague's spouse, a bad experience)."""
    able = [k for k in counselors if case.accepts(k)]
    if able and case.kind != "crisis" and w.rnd.random() < 0.25:
        case.preferred = w.rnd.choice(able)
    if w.rnd.random() < 0.04:
        others = [k for k in (able or counselors) if k is not case.preferred]
        if others:
            case.excluded = [w.rnd.choice(others)]


def _cases(
    w: _World, n: int, agencies: Sequence[_Agency], counselors: Sequence[_Counselor]
) -> list[_Case]:
    out: list[_Case] = []
    employees = 0
    for i in range(n):
        # about one case in fourteen is an employee's second concern
        if out and w.rnd.random() < 0.07:
            who = w.rnd.choice(out).employee
        else:
            employees += 1
            who = _employee(w, employees, agencies)
        category = _pick(w.rnd, CATEGORIES)
        kind = _pick(w.rnd, {"general": 87, "involuntary": 8, "crisis": 5})
        sessions, minutes, modalities = _shape(w, kind, category)
        case = _Case(
            f"K{i + 1:04d}", who, category, kind, sessions, minutes, modalities, _submitted(w, kind)
        )
        case.availability = _free_time(w, case)
        _relationships(w, case, counselors)
        out.append(case)
    return out


# --- money and hours ---------------------------------------------------------------


def _budgets_and_caps(
    w: _World,
    tight: float,
    providers: Sequence[_Provider],
    agencies: Sequence[_Agency],
    counselors: Sequence[_Counselor],
    cases: Sequence[_Case],
) -> None:
    """Fund a share of what the cases would cost at their usual rate, and
    contract a share of the hours routed to each provider."""
    spend = {a.id: 0.0 for a in agencies}
    hours = {p.id: 0.0 for p in providers}
    for case in cases:
        able = [k for k in counselors if case.accepts(k)] or list(counselors)
        wanted_h = case.sessions * case.minutes / 60
        spend[case.employee.agency.id] += wanted_h * sum(k.provider.rate for k in able) / len(able)
        for k in able:
            hours[k.provider.id] += wanted_h / len(able)
    for a in agencies:
        a.budget = int(round(spend[a.id] * tight * w.rnd.uniform(0.8, 1.15), -3))
    for p in providers:
        p.hours_cap = math.ceil(hours[p.id] * min(1.0, tight + 0.15)) + 2


# --- the file ----------------------------------------------------------------------


def _stamp(moment: datetime) -> str:
    return moment.strftime(TIME_FORMAT)


def _blocks(blocks: Sequence[Block]) -> list[list[str]]:
    return [[_stamp(a), _stamp(b)] for a, b in blocks]


def _case_json(c: _Case) -> dict[str, object]:
    return {
        "id": c.id,
        "employee": c.employee.id,
        "agency": c.employee.agency.id,
        "category": c.category,
        "kind": c.kind,
        "sessions": c.sessions,
        "minutes": c.minutes,
        "modalities": c.modalities,
        "submitted": _stamp(c.submitted),
        "availability": _blocks(c.availability),
        "preferred_counselor": c.preferred.id if c.preferred else None,
        "excluded_counselors": [k.id for k in c.excluded],
        "employee_remaining_hours": c.employee.remaining_hours,
    }


def _parts_json(
    providers: Sequence[_Provider],
    counselors: Sequence[_Counselor],
    agencies: Sequence[_Agency],
    cases: Sequence[_Case],
) -> dict[str, object]:
    return {
        "providers": [
            {"id": p.id, "name": p.name, "hourly_rate_ntd": p.rate, "hours_cap": p.hours_cap}
            for p in providers
        ],
        "counselors": [
            {
                "id": k.id,
                "provider": k.provider.id,
                "specialties": k.specialties,
                "modalities": k.modalities,
                "max_sessions_per_day": k.max_per_day,
                "availability": _blocks(k.availability),
            }
            for k in counselors
        ],
        "agencies": [{"id": a.id, "name": a.name, "budget_ntd": a.budget} for a in agencies],
        "cases": [_case_json(c) for c in cases],
    }


def first_monday(day: date) -> date:
    return day + timedelta(days=-day.weekday() % 7)


def generate(scale: str, seed: int, *, weeks: int = 4, tight: float = 0.75) -> dict[str, object]:
    """An instance of `scale` (S, M, L). The seed picks the data and the
    horizon's first Monday (one of ten from March 2027, so some horizons
    hold the Tomb-Sweeping Day closures)."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}, not {scale!r}")
    size = SCALES[scale]
    start = first_monday(date(2027, 3, 1)) + timedelta(weeks=(seed - 1) % 10)
    w = _World(
        random.Random(f"eap-match/{scale}/{seed}/{weeks}/{tight}"), start, weeks, load_shipped()
    )
    providers = _providers(w, size.providers)
    counselors = _counselors(w, size.counselors, providers)
    agencies = _agencies(w, size.agencies)
    cases = _cases(w, size.cases, agencies, counselors)
    _budgets_and_caps(w, tight, providers, agencies, counselors, cases)
    return {
        "format": INSTANCE_FORMAT,
        "name": f"eap-{scale}-seed{seed}-w{weeks}",
        "generator": {
            "by": "services.matcher.optimization.generate",
            "scale": scale,
            "seed": seed,
            "weeks": weeks,
            "tight": tight,
        },
        "timezone": OFFICE_ZONE_NAME,
        "horizon": {"start": start.isoformat(), "weeks": weeks},
        "slot_minutes": SLOT_MINUTES,
        "rules": dict(SEED_RULES),
        "weights": dict(SEED_WEIGHTS),
        **_parts_json(providers, counselors, agencies, cases),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.matcher.optimization.generate",
        description="Write a deterministic eap-match-instance/1 to stdout.",
    )
    parser.add_argument("--scale", choices=sorted(SCALES), default="S")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--weeks", type=int, default=4)
    parser.add_argument(
        "--tight",
        type=float,
        default=0.75,
        help="budgets as a share of what the cases would cost (default 0.75)",
    )
    args = parser.parse_args(argv)
    if args.weeks < 1 or args.tight <= 0:
        parser.error("--weeks must be at least 1 and --tight positive")
    instance = generate(args.scale, args.seed, weeks=args.weeks, tight=args.tight)
    json.dump(instance, sys.stdout, ensure_ascii=False, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
