"""`make demo`: the suite's story, told through gRPC on embedded defaults.

It starts the services in this process on a scratch SQLite file, loads the
sample county, registers counselors and books cases online the way a
booking frontend does (find slots, hold one, confirm it), has HR match the
open cases in an optimized job with progress shown and apply it, shows a
booking refused by a limit and allowed after a special approval, prints the
balances, writes the job's HTML report to var/, plans the programme's year
of meetings and trainings, written to var/ as iCalendar, and proposes and
books group counseling sessions. Then it stops:
`make run` is the server.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import shutil
import tempfile
import uuid
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from prometheus_client import REGISTRY, generate_latest

from eap.audit.v1 import audit_pb2 as apb
from eap.audit.v1 import audit_pb2_grpc
from eap.calendar.v1 import calendar_pb2 as cpb
from eap.calendar.v1 import calendar_pb2_grpc
from eap.matcher.v1 import matcher_pb2 as mpb
from eap.matcher.v1 import matcher_pb2_grpc
from eap.quota.v1 import quota_pb2 as pb
from eap.quota.v1 import quota_pb2_grpc
from services.cli import registry, token_cli
from services.cli.demo_edge import browser_step
from services.matcher.registry import people_csv
from services.matcher.service import MatcherService
from services.quota.service import QuotaService
from services.rules.office_time import OFFICE_ZONE
from services.runtime.auth import Role
from services.runtime.config import Settings
from services.runtime.fields import timestamp
from services.runtime.logs import JsonFormatter
from services.runtime.server import start

SERVICE_LOG = Path("var") / "demo-services.log"
METRICS_DUMP = Path("var") / "demo-metrics.prom"
PROGRAM_FILE = Path(__file__).resolve().parents[1] / "calendar/examples/pingtung-2027.toml"


def _log_services_to(path: Path) -> None:
    """The services' own JSON logs go to `path` in full; the terminal shows
    the story and the services' warnings only (EAP_LOG_LEVEL overrides)."""
    root = logging.getLogger()
    if "EAP_LOG_LEVEL" not in os.environ:
        for handler in root.handlers:
            handler.setLevel(logging.WARNING)
    path.parent.mkdir(exist_ok=True)
    into_file = logging.FileHandler(path, mode="w", encoding="utf-8")
    into_file.setFormatter(JsonFormatter())
    root.addHandler(into_file)
    root.setLevel(min(root.level, logging.INFO))


def _people_file() -> bytes:
    return resources.files("services.cli").joinpath("data/people.csv").read_bytes()


def _load_county() -> dict[str, Any]:
    text = resources.files("services.cli").joinpath("data/sample_county.json").read_text()
    county: dict[str, Any] = json.loads(text)
    return county


def _session(year: int, iso_week: int, weekday: int, hour: int) -> Timestamp:
    day = dt.date.fromisocalendar(year, iso_week, weekday)
    return timestamp(dt.datetime(day.year, day.month, day.day, hour, tzinfo=OFFICE_ZONE))


def _refusal(error: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    rule = error.code().name
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            rule = info.reason
    return f"{error.code().name} [{rule}] {error.details()}"


def _hours(minutes: int) -> str:
    return f"{minutes / 60:g} h"


async def run_demo(settings: Settings, keep: bool = False) -> int:
    _log_services_to(SERVICE_LOG)
    scratch = Path(tempfile.mkdtemp(prefix="eap-demo-"))
    settings = replace(
        settings,
        grpc_address="127.0.0.1:0",
        metrics_port=-1,
        database_url=f"sqlite:///{scratch / 'demo.sqlite3'}",
        redis_url=None,
        auth_mode="dev",
    )
    # Step 11's tokens are signed with the development key, made now so
    # that the server trusts it from the start.
    token_cli.ensure_dev_key(settings)
    server = await start(registry.build(list(registry.SERVICES)), settings)
    print(
        f"Suite up on 127.0.0.1:{server.port} ({', '.join(registry.SERVICES)}), "
        f"SQLite at {scratch / 'demo.sqlite3'}\n"
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            quota = quota_pb2_grpc.QuotaServiceStub(channel)
            matcher = matcher_pb2_grpc.MatcherServiceStub(channel)
            job_id = await _story(quota, matcher)
            # The job's report, written where `make demo` leaves things.
            (service,) = [s for s in server.services if isinstance(s, MatcherService)]
            report = Path("var") / "demo-report.html"
            report.parent.mkdir(exist_ok=True)
            report.write_text(await service.jobs.report(job_id), encoding="utf-8")
            print(f"\nThe optimized job's HTML report: {report.resolve()}")
            calendar = calendar_pb2_grpc.CalendarServiceStub(channel)
            await _year_plan(calendar)
            await _group_sessions(calendar, matcher, quota)
            await _confidentiality(matcher, audit_pb2_grpc.AuditServiceStub(channel), settings)
            # The balance gauges follow the current fiscal year; the story
            # is in the county's, so they are read for it before the dump,
            # which then shows what a scrape would (small agencies absent).
            (books,) = [s for s in server.services if isinstance(s, QuotaService)]
            await books.reads.refresh_metrics(int(_load_county()["fiscal_year"]))
            county = _load_county()
            page = await browser_step(
                server,
                settings,
                employee=people_csv.parse(_people_file())[0][0].employee_id,
                story_year=county["fiscal_year"],
                fund_year=lambda year: fund_year(quota, county, year),
            )
    finally:
        await server.stop(1)
    METRICS_DUMP.write_bytes(generate_latest(REGISTRY))
    print(f"\nThe services' logs: {SERVICE_LOG.resolve()}; their metrics: {METRICS_DUMP.resolve()}")
    if not keep:
        shutil.rmtree(scratch)
    print("\nDemo finished; the suite shut down cleanly.")
    print(
        f"The booking page was at {page}; `make run` serves it at http://{settings.edge_address}/"
    )
    return 0


async def _year_plan(calendar: calendar_pb2_grpc.CalendarServiceAsyncStub) -> None:
    """The programme's year of meetings, trainings and group sessions."""
    print("\n9. HR plans the programme's 2027 calendar (CP-SAT), from the Pingtung-style file")
    text = PROGRAM_FILE.read_text(encoding="utf-8")
    plan_id = (await calendar.PlanProgram(cpb.PlanProgramRequest(program_toml=text))).plan_id
    plan = await calendar.GetPlan(cpb.GetPlanRequest(plan_id=plan_id))
    while plan.state in (cpb.PLAN_STATE_QUEUED, cpb.PLAN_STATE_RUNNING):
        await asyncio.sleep(0.2)
        plan = await calendar.GetPlan(cpb.GetPlanRequest(plan_id=plan_id))
    print(
        f"   {len(plan.events)} events placed, {len(plan.unplaced)} left out "
        f"({plan.solver_status.lower()}, {plan.seconds:.1f} s):"
    )
    for event in plan.events:
        room = f", {event.room_id}" if event.room_id else ""
        print(f"   {_when(event.start)}  {event.title} #{event.occurrence}{room}")
    for left in plan.unplaced:
        print(f"   not placed: {left.explanation}")
    training = next(e for e in plan.events if e.kind == "training" and e.capacity)
    for person in ("cv-01", "cv-02"):
        enrolled = await calendar.EnrollTraining(
            cpb.EnrollTrainingRequest(plan_id=plan_id, event_uid=training.uid, person_id=person)
        )
        state = cpb.EnrollmentState.Name(enrolled.state).removeprefix("ENROLLMENT_STATE_")
        print(f"   {person} enrolls in {training.title}: {state.lower()}")
    exported = await calendar.ExportCalendar(cpb.ExportCalendarRequest(plan_id=plan_id))
    ics = Path("var") / "demo-plan-2027.ics"
    ics.write_bytes(exported.ics)
    print(f"   the plan as iCalendar ({exported.events} events): {ics.resolve()}")


async def _confidentiality(
    matcher: matcher_pb2_grpc.MatcherServiceAsyncStub,
    audit: audit_pb2_grpc.AuditServiceAsyncStub,
    settings: Settings,
) -> None:
    """Who may see what: an employee's token, a supervisor's referral, the
    directory and the audit trail."""
    county = _load_county()
    print(
        "\n11. Confidentiality: each caller sees only what their role allows, and reads are audited"
    )

    def bearer(role: Role, subject: str) -> tuple[tuple[str, str]]:
        return (("authorization", f"Bearer {token_cli.mint(settings, role, subject, 5)}"),)

    employee = bearer(Role.EMPLOYEE, "emp-2b7e")
    own = await matcher.GetCase(mpb.GetCaseRequest(case_id="K-1001"), metadata=employee)
    print(
        f"   emp-2b7e (an employee's token) reads their case K-1001: {len(own.bookings)} bookings"
    )
    try:
        await matcher.GetCase(mpb.GetCaseRequest(case_id="K-1002"), metadata=employee)
    except grpc.aio.AioRpcError as error:
        print(f"   emp-2b7e asks for K-1002, someone else's: {_refusal(error)}")
    person = county["people"]["emp-2b7e"]
    await matcher.SetContact(
        mpb.SetContactRequest(employee_id="emp-2b7e", contact=mpb.Contact(**person)),
        metadata=employee,
    )
    print("   emp-2b7e keeps their name and phone in the directory, sealed at rest")
    session = own.bookings[0]
    found = await matcher.GetContact(
        mpb.GetContactRequest(employee_id="emp-2b7e"),
        metadata=bearer(Role.COUNSELOR, session.counselor_id),
    )
    print(
        f"   {session.counselor_id}, who holds their session, reads it: "
        f"{found.contact.name}, {found.contact.phone}"
    )
    referral = mpb.Case(  # the payer is the people directory's
        employee_id="emp-7a30",
        category=mpb.CATEGORY_MANAGEMENT,
        kind=mpb.CASE_KIND_INVOLUNTARY,
        referral_reference="PT-PERS-2027-014",
        sessions_wanted=2,
        minutes=60,
        modalities=[mpb.MODALITY_IN_PERSON],
        availability=[
            mpb.TimeRange(start=_local("2027-04-06T09:00"), end=_local("2027-04-06T17:00"))
        ],
        time_off=mpb.TIME_OFF_OFFICIAL_LEAVE,
    )
    received = await matcher.SubmitCase(
        mpb.SubmitCaseRequest(case=referral, request_id="ref-2027-014"),
        metadata=bearer(Role.SUPERVISOR, "sup-01"),
    )
    print(
        f"   supervisor sup-01 refers a member of staff: received ({received.case.case_id}); "
        "nothing else comes back, and GetCase is refused"
    )
    auditor = bearer(Role.AUDITOR, "audit-01")
    entries = (
        await audit.ListAuditEntries(
            apb.ListAuditEntriesRequest(trail="matcher", page_size=1000), metadata=auditor
        )
    ).entries
    verified = await audit.VerifyAuditTrail(
        apb.VerifyAuditTrailRequest(trail="matcher"), metadata=auditor
    )
    readers = sorted({e.role for e in entries})
    print(
        f"   auditor audit-01: the matcher's trail holds {len(entries)} reads by "
        f"{', '.join(readers)}; chain {'intact' if verified.intact else 'BROKEN'}"
    )


async def _group_sessions(
    calendar: calendar_pb2_grpc.CalendarServiceAsyncStub,
    matcher: matcher_pb2_grpc.MatcherServiceAsyncStub,
    quota: quota_pb2_grpc.QuotaServiceAsyncStub,
) -> None:
    """Group counseling: proposed by the calendar, booked through the matcher."""
    county = _load_county()
    print("\n10. Staff with family cases accept a group; the calendar proposes and books sessions")
    for c in county["group_cases"]:
        await _submit_case(matcher, c)
    print(f"   {len(county['group_cases'])} family cases accept a group session, in person")
    proposals = (
        await calendar.ProposeGroupSessions(
            cpb.ProposeGroupSessionsRequest(
                category="family",
                counselor_ids=["C-LIN"],
                first_date="2027-04-19",
                last_date="2027-04-30",
                duration_minutes=90,
                min_size=3,
                modality="in_person",
            )
        )
    ).proposals
    for proposal in proposals:
        print(
            f"   proposed: {_when(proposal.start)}, {proposal.counselor_id} leads "
            f"{len(proposal.case_ids)} cases"
        )
    provider = pb.AccountRef(kind=pb.ACCOUNT_KIND_PROVIDER, id="mind-care-assoc", fiscal_year=2027)
    before = (await quota.GetBalance(pb.GetBalanceRequest(account=provider))).balance
    booked = await calendar.BookGroupSessions(
        cpb.BookGroupSessionsRequest(sessions=proposals, modality="in_person", min_size=3)
    )
    for session in booked.sessions:
        refused = ", ".join(f"{r.case_id} ({r.rule})" for r in session.refused) or "none"
        print(
            f"   booked {_when(session.session.start)}: {len(session.booked_case_ids)} places; "
            f"refused: {refused}"
        )
    after = (await quota.GetBalance(pb.GetBalanceRequest(account=provider))).balance
    places = sum(len(s.booked_case_ids) for s in booked.sessions)
    print(
        f"   {places} places took {_hours(after.spent - before.spent)} of the provider's cap, "
        f"not {_hours(places * 90)}: the counselor's time counts once, its cost is shared"
    )


async def fund_year(
    quota: quota_pb2_grpc.QuotaServiceAsyncStub, county: dict[str, Any], year: int
) -> None:
    """The county's agencies, budgets, provider contracts and entitlements
    for fiscal `year`."""
    org = county["organisation"]
    for agency in county["agencies"]:
        await quota.UpsertAgency(
            pb.UpsertAgencyRequest(
                agency_id=agency["id"], organisation=org, display_name=agency["name"]
            )
        )
        await quota.TopUpBudget(
            pb.TopUpBudgetRequest(
                idempotency_key=f"budget-{agency['id']}-{year}",
                agency_id=agency["id"],
                fiscal_year=year,
                amount_ntd=agency["budget_ntd"],
                reason="annual budget",
            )
        )
    for provider in county["providers"]:
        await quota.SetProviderContract(
            pb.SetProviderContractRequest(
                provider_id=provider["id"],
                fiscal_year=year,
                hourly_rate_ntd=provider["hourly_rate_ntd"],
                cap_minutes=provider["cap_hours"] * 60,
                reason="annual contract",
            )
        )
    for policy in county["entitlement_policy"]:
        await quota.SetEntitlementPolicy(
            pb.SetEntitlementPolicyRequest(
                organisation=org,
                staff_category=policy["staff_category"],
                fiscal_year=year,
                minutes=policy["hours"] * 60,
            )
        )


async def _story(
    quota: quota_pb2_grpc.QuotaServiceAsyncStub, matcher: matcher_pb2_grpc.MatcherServiceAsyncStub
) -> str:
    """Tells the story; returns the optimized job's id."""
    county = _load_county()
    org, year = county["organisation"], county["fiscal_year"]

    print(f"1. HR loads the {org} programme for fiscal year {year}")
    await fund_year(quota, county, year)
    for agency in county["agencies"]:
        print(f"   agency {agency['id']:<14} budget NT${agency['budget_ntd']:>9,}")
    for provider in county["providers"]:
        print(
            f"   provider {provider['id']:<16} NT${provider['hourly_rate_ntd']:,}/h, "
            f"cap {provider['cap_hours']} h"
        )
    print(
        "   entitlements: "
        + ", ".join(f"{p['staff_category']} {p['hours']} h" for p in county["entitlement_policy"])
    )
    people, problems = people_csv.parse(_people_file())
    assert not problems, problems
    loaded = await matcher.ImportPeople(mpb.ImportPeopleRequest(people=people, replace_all=True))
    print(
        f"   people directory: {loaded.added} employees, each with their agency and staff "
        "category (a case is paid for by the directory's, never the caller's word)"
    )

    await _online_booking(county, matcher, quota)
    job_id = await _optimized_job(county, matcher)

    print("\n4. A partner's own booking system books and completes sessions (Reserve -> Commit)")
    bookings = [
        ("emp-7f3a", "PT-EDUCATION", "teacher", "mind-care-assoc", 3, 90, 75),
        ("emp-7f3a", "PT-EDUCATION", "teacher", "mind-care-assoc", 4, 90, 90),
        ("emp-c41d", "PT-PERSONNEL", "official", "harbour-law", 3, 60, 60),
        ("emp-09be", "PT-POLICE", "worker", "south-clinic", 5, 120, 120),
    ]
    for employee, agency, category, provider, week, minutes, used in bookings:
        hold = (
            await quota.Reserve(
                pb.ReserveRequest(
                    idempotency_key=uuid.uuid4().hex,
                    employee_id=employee,
                    agency_id=agency,
                    staff_category=category,
                    provider_id=provider,
                    session_start=_session(year, week, 2, 14),
                    minutes=minutes,
                )
            )
        ).hold
        await quota.Commit(pb.CommitRequest(hold_id=hold.hold_id))
        done = (
            await quota.Commit(pb.CommitRequest(hold_id=hold.hold_id, minutes=used, completed=True))
        ).hold
        print(
            f"   {employee} week {hold.iso_week} with {provider:<16} held {minutes} min, "
            f"took {used} min, spent NT${done.amount_ntd:,}"
        )

    print("\n5. Limits hold")
    try:
        await quota.Reserve(
            pb.ReserveRequest(
                idempotency_key=uuid.uuid4().hex,
                employee_id="emp-7f3a",
                agency_id="PT-EDUCATION",
                staff_category="teacher",
                provider_id="south-clinic",
                session_start=_session(year, 4, 4, 10),
                minutes=60,
            )
        )
    except grpc.aio.AioRpcError as error:
        print(f"   a second session in the same week: {_refusal(error)}")
    police_booking = pb.ReserveRequest(
        idempotency_key=uuid.uuid4().hex,
        employee_id="emp-51aa",
        agency_id="PT-POLICE",
        staff_category="worker",
        provider_id="harbour-law",
        session_start=_session(year, 6, 3, 9),
        minutes=60,
    )
    try:
        await quota.Reserve(police_booking)
    except grpc.aio.AioRpcError as error:
        print(f"   the police bureau's pool runs dry: {_refusal(error)}")
    moved = await quota.TransferBudget(
        pb.TransferBudgetRequest(
            idempotency_key=f"transfer-{year}-1",
            from_agency_id="PT-PERSONNEL",
            to_agency_id="PT-POLICE",
            fiscal_year=year,
            amount_ntd=12000,
            reason="mid-year rebalancing approved by the personnel office",
        )
    )
    print(
        f"   HR moves NT$12,000 from PT-PERSONNEL: police pool now "
        f"NT${moved.to_balance.left:,} left"
    )
    hold = (await quota.Reserve(police_booking)).hold
    await quota.Commit(pb.CommitRequest(hold_id=hold.hold_id))
    print(f"   the police booking goes through: {hold.iso_week}, NT${hold.amount_ntd:,}")

    print("\n6. Beyond the entitlement, a special approval")
    worker = pb.ReserveRequest(
        idempotency_key=uuid.uuid4().hex,
        employee_id="emp-09be",
        agency_id="PT-POLICE",
        staff_category="worker",
        provider_id="south-clinic",
        session_start=_session(year, 7, 2, 15),
        minutes=120,
    )
    for week in (6, 7):
        worker.session_start.CopyFrom(_session(year, week, 2, 15))
        worker.idempotency_key = uuid.uuid4().hex
        try:
            hold = (await quota.Reserve(worker)).hold
            await quota.Commit(pb.CommitRequest(hold_id=hold.hold_id))
            print(f"   emp-09be books week {hold.iso_week}: 120 min")
        except grpc.aio.AioRpcError as error:
            print(f"   emp-09be asks for week {week:02d}: {_refusal(error)}")
    granted = await quota.Grant(
        pb.GrantRequest(
            idempotency_key=f"grant-{year}-001",
            account=pb.AccountRef(kind=pb.ACCOUNT_KIND_EMPLOYEE, id="emp-09be", fiscal_year=year),
            minutes=240,
            approval_reference=f"SA-{year}-001",
            approver="personnel-director",
            reason="special approval: continuing crisis follow-up",
        )
    )
    print(
        f"   special approval SA-{year}-001 adds 4 h: entitled "
        f"{_hours(granted.balance.entitled)}, left {_hours(granted.balance.left)}"
    )
    worker.idempotency_key = uuid.uuid4().hex
    hold = (await quota.Reserve(worker)).hold
    await quota.Commit(pb.CommitRequest(hold_id=hold.hold_id))
    print(f"   now week {hold.iso_week} is booked")

    print("\n7. Balances")
    for kind, label, ids in (
        (pb.ACCOUNT_KIND_AGENCY, "agency", [a["id"] for a in county["agencies"]]),
        (pb.ACCOUNT_KIND_PROVIDER, "provider", [p["id"] for p in county["providers"]]),
    ):
        for owner in ids:
            b = (
                await quota.GetBalance(
                    pb.GetBalanceRequest(
                        account=pb.AccountRef(kind=kind, id=owner, fiscal_year=year)
                    )
                )
            ).balance
            unit = (lambda v: f"NT${v:,}") if b.unit == pb.UNIT_NTD else _hours
            print(
                f"   {label:<8} {owner:<16} entitled {unit(b.entitled):>11}  "
                f"held {unit(b.held):>9}  spent {unit(b.spent):>9}  left {unit(b.left):>11}"
            )
    usage = (await quota.GetUsageSummary(pb.GetUsageSummaryRequest(fiscal_year=year))).rows
    print("\n8. HR's usage summary (no employee ids, no cell of fewer than 5 people)")
    for row in usage:
        cell = f"   {row.agency_id:<14} {row.staff_category:<9} month {row.month:>2}: "
        if row.suppressed:
            print(f"{cell}withheld")
            continue
        print(
            f"{cell}{row.people} people, "
            f"{row.sessions} session{'s' if row.sessions != 1 else ''}, "
            f"{_hours(row.minutes)}, NT${row.amount_ntd:,}"
        )
    if any(row.suppressed for row in usage):
        print(
            "   withheld: fewer than 5 people, or withheld with such a cell so that "
            "subtraction cannot reveal it"
        )
    return job_id


_CATEGORIES = {name.lower(): value for name, value in mpb.Category.items()}
_MODALITIES = {name.lower(): value for name, value in mpb.Modality.items()}


def _local(text: str) -> Timestamp:
    return timestamp(dt.datetime.fromisoformat(text).replace(tzinfo=OFFICE_ZONE))


def _when(stamp: Timestamp) -> str:
    return stamp.ToDatetime(tzinfo=dt.UTC).astimezone(OFFICE_ZONE).strftime("%a %d %b %H:%M")


async def _submit_case(matcher: matcher_pb2_grpc.MatcherServiceAsyncStub, c: Any) -> None:
    await matcher.SubmitCase(
        mpb.SubmitCaseRequest(
            case=mpb.Case(
                case_id=c["id"],
                employee_id=c["employee"],
                agency_id=c["agency"],
                staff_category=c["staff_category"],
                category=_CATEGORIES[f"category_{c['category']}"],
                kind=mpb.CASE_KIND_GENERAL,
                sessions_wanted=c["sessions"],
                minutes=c["minutes"],
                modalities=[_MODALITIES[f"modality_{m}"] for m in c["modalities"]],
                availability=[
                    mpb.TimeRange(start=_local(a), end=_local(b)) for a, b in c["available"]
                ],
                time_off=mpb.TIME_OFF_OFFICIAL_LEAVE,
                accepts_group=c.get("accepts_group", False),
            )
        )
    )


async def _optimized_job(
    county: dict[str, Any], matcher: matcher_pb2_grpc.MatcherServiceAsyncStub
) -> str:
    print("\n3. HR matches the open cases in one optimized job (CP-SAT), with progress")
    for c in county["open_cases"]:
        await _submit_case(matcher, c)
    print(f"   {len(county['open_cases'])} more cases come in; K-1001 still wants its second")
    job = (
        await matcher.SubmitMatchJob(
            mpb.SubmitMatchJobRequest(
                horizon_start=_local("2027-03-15T00:00"), weeks=2, time_limit_seconds=3
            )
        )
    ).job
    async for update in matcher.WatchMatchJob(mpb.WatchMatchJobRequest(job_id=job.job_id)):
        j = update.job
        state = mpb.MatchJobState.Name(j.state).removeprefix("MATCH_JOB_STATE_").lower()
        print(
            f"   job {j.job_id[:8]} {state:<7} {j.elapsed_seconds:4.1f} s  "
            f"best {j.best_score:,.2f}  bound {j.bound:,.2f}"
        )
    result = await matcher.GetMatchResult(mpb.GetMatchResultRequest(job_id=job.job_id))
    for s in result.sessions:
        print(f"   proposed: {s.case_id} with {s.counselor_id} {_when(s.start)}")
    for u in result.unserved:
        print(f"   not served: {u.case_id} ({u.reason}): {u.explanation}")
    applied = await matcher.ApplyMatchResult(mpb.ApplyMatchResultRequest(job_id=job.job_id))
    print(f"   HR applies it: {len(applied.booking_ids)} bookings made, quota spent for each")
    return job.job_id


async def _online_booking(
    county: dict[str, Any],
    matcher: matcher_pb2_grpc.MatcherServiceAsyncStub,
    quota: quota_pb2_grpc.QuotaServiceAsyncStub,
) -> None:
    print(
        "\n2. Counselors register, and a frontend books online (FindSlots -> HoldSlot -> Confirm)"
    )
    for k in county["counselors"]:
        await matcher.UpsertCounselor(
            mpb.UpsertCounselorRequest(
                counselor=mpb.Counselor(
                    counselor_id=k["id"],
                    provider_id=k["provider"],
                    display_name=k["name"],
                    specialties=[_CATEGORIES[f"category_{s}"] for s in k["specialties"]],
                    modalities=[_MODALITIES[f"modality_{m}"] for m in k["modalities"]],
                    location=k["location"],
                    max_sessions_per_day=k["max_sessions_per_day"],
                    weekly_availability=[
                        mpb.WeeklyWindow(weekday=d, start_time=a, end_time=b)
                        for d, a, b in k["weekly"]
                    ],
                )
            )
        )
        print(f"   counselor {k['id']:<7} ({k['provider']}): {', '.join(k['specialties'])}")
    for c in county["cases"]:
        await _submit_case(matcher, c)
    window: dict[str, Any] = {
        "window_start": _local("2027-03-08T00:00"),
        "window_end": _local("2027-03-22T00:00"),
    }
    first, second, legal = (c["id"] for c in county["cases"])
    found = (
        await matcher.FindSlots(mpb.FindSlotsRequest(case_id=first, max_slots=3, **window))
    ).slots
    print(f"   {first} asks for slots; the best three:")
    for slot in found:
        print(f"     {_when(slot.start)}  {slot.counselor_name} ({slot.counselor_id})")
    held = (
        await matcher.HoldSlot(
            mpb.HoldSlotRequest(
                case_id=first, counselor_id=found[0].counselor_id, start=found[0].start
            )
        )
    ).booking
    print(f"   {first} holds {_when(held.start)} while filling in the form")
    try:
        await matcher.HoldSlot(
            mpb.HoldSlotRequest(
                case_id=second, counselor_id=found[0].counselor_id, start=found[0].start
            )
        )
    except grpc.aio.AioRpcError as error:
        print(f"   {second} tries the same slot: {_refusal(error)}")
    booked = (
        await matcher.ConfirmBooking(mpb.ConfirmBookingRequest(booking_id=held.booking_id))
    ).booking
    print(f"   {first} confirms: booked {_when(booked.start)}, quota spent in the same step")
    for case_id in (second, legal):
        slot = (
            await matcher.FindSlots(mpb.FindSlotsRequest(case_id=case_id, max_slots=1, **window))
        ).slots[0]
        hold = (
            await matcher.HoldSlot(
                mpb.HoldSlotRequest(
                    case_id=case_id, counselor_id=slot.counselor_id, start=slot.start
                )
            )
        ).booking
        await matcher.ConfirmBooking(mpb.ConfirmBookingRequest(booking_id=hold.booking_id))
        print(f"   {case_id} books {_when(slot.start)} with {slot.counselor_name}")
    education = (
        await quota.GetBalance(
            pb.GetBalanceRequest(
                account=pb.AccountRef(
                    kind=pb.ACCOUNT_KIND_AGENCY,
                    id="PT-EDUCATION",
                    fiscal_year=county["fiscal_year"],
                )
            )
        )
    ).balance
    print(f"   PT-EDUCATION has spent NT${education.spent:,} on these bookings")
