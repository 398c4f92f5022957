"""The demo's steps 9 to 11: HR plans the programme's year, the calendar
proposes and books group sessions, and who may see what (an employee's
token, a supervisor's referral, the sealed directory, the audit trail)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc

from eap.audit.v1 import audit_pb2 as apb
from eap.audit.v1 import audit_pb2_grpc
from eap.calendar.v1 import calendar_pb2 as cpb
from eap.calendar.v1 import calendar_pb2_grpc
from eap.matcher.v1 import matcher_pb2 as mpb
from eap.matcher.v1 import matcher_pb2_grpc
from eap.quota.v1 import quota_pb2 as pb
from eap.quota.v1 import quota_pb2_grpc
from services.calendar.unplaced import solver_words
from services.cli import token_cli
from services.cli.demo_common import hours, load_county, local, refusal, say, submit_case, when
from services.runtime.auth import Role
from services.runtime.config import Settings
from services.runtime.i18n import N_, tr

PROGRAM_FILE = Path(__file__).resolve().parents[1] / "calendar/examples/pingtung-2027.toml"
ENROLLMENT_WORDS = {
    "ENROLLED": N_("enrolled"),
    "WAITLISTED": N_("waitlisted"),
    "CANCELLED": N_("cancelled"),
}


async def year_plan(calendar: calendar_pb2_grpc.CalendarServiceAsyncStub) -> None:
    """The programme's year of meetings, trainings and group sessions."""
    print(
        "\n"
        + tr("9. HR plans the programme's 2027 calendar (CP-SAT), from the Pingtung-style file")
    )
    text = PROGRAM_FILE.read_text(encoding="utf-8")
    plan_id = (await calendar.PlanProgram(cpb.PlanProgramRequest(program_toml=text))).plan_id
    plan = await calendar.GetPlan(cpb.GetPlanRequest(plan_id=plan_id))
    while plan.state in (cpb.PLAN_STATE_QUEUED, cpb.PLAN_STATE_RUNNING):
        await asyncio.sleep(0.2)
        plan = await calendar.GetPlan(cpb.GetPlanRequest(plan_id=plan_id))
    say(
        tr(
            "{placed} events placed, {unplaced} left out ({status}, {seconds} s):",
            placed=len(plan.events),
            unplaced=len(plan.unplaced),
            status=solver_words(plan.solver_status),
            seconds=f"{plan.seconds:.1f}",
        )
    )
    for event in plan.events:
        room = f", {event.room_id}" if event.room_id else ""
        say(f"{when(event.start)}  {event.title} #{event.occurrence}{room}")
    for left in plan.unplaced:  # in the language the channel asks for
        say(tr("not placed: {why}", why=left.explanation))
    training = next(e for e in plan.events if e.kind == "training" and e.capacity)
    for person in ("cv-01", "cv-02"):
        enrolled = await calendar.EnrollTraining(
            cpb.EnrollTrainingRequest(plan_id=plan_id, event_uid=training.uid, person_id=person)
        )
        state = cpb.EnrollmentState.Name(enrolled.state).removeprefix("ENROLLMENT_STATE_")
        state = tr(ENROLLMENT_WORDS[state]) if state in ENROLLMENT_WORDS else state.lower()
        say(
            tr(
                "{person} enrolls in {training}: {state}",
                person=person,
                training=training.title,
                state=state,
            )
        )
    exported = await calendar.ExportCalendar(cpb.ExportCalendarRequest(plan_id=plan_id))
    ics = Path("var") / "demo-plan-2027.ics"
    ics.write_bytes(exported.ics)
    say(
        tr(
            "the plan as iCalendar ({count} events): {path}",
            count=exported.events,
            path=ics.resolve(),
        )
    )


async def group_sessions(
    calendar: calendar_pb2_grpc.CalendarServiceAsyncStub,
    matcher: matcher_pb2_grpc.MatcherServiceAsyncStub,
    quota: quota_pb2_grpc.QuotaServiceAsyncStub,
) -> None:
    """Group counseling: proposed by the calendar, booked through the matcher."""
    county = load_county()
    print(
        "\n"
        + tr("10. Staff with family cases accept a group; the calendar proposes and books sessions")
    )
    for c in county["group_cases"]:
        await submit_case(matcher, c)
    say(
        tr(
            "{count} family cases accept a group session, in person",
            count=len(county["group_cases"]),
        )
    )
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
        say(
            tr(
                "proposed: {time}, {counselor} leads {count} cases",
                time=when(proposal.start),
                counselor=proposal.counselor_id,
                count=len(proposal.case_ids),
            )
        )
    provider = pb.AccountRef(kind=pb.ACCOUNT_KIND_PROVIDER, id="mind-care-assoc", fiscal_year=2027)
    before = (await quota.GetBalance(pb.GetBalanceRequest(account=provider))).balance
    booked = await calendar.BookGroupSessions(
        cpb.BookGroupSessionsRequest(sessions=proposals, modality="in_person", min_size=3)
    )
    for session in booked.sessions:
        refused = ", ".join(f"{r.case_id} ({r.rule})" for r in session.refused) or tr("none")
        say(
            tr(
                "booked {time}: {count} places; refused: {refused}",
                time=when(session.session.start),
                count=len(session.booked_case_ids),
                refused=refused,
            )
        )
    after = (await quota.GetBalance(pb.GetBalanceRequest(account=provider))).balance
    places = sum(len(s.booked_case_ids) for s in booked.sessions)
    say(
        tr(
            "{places} places took {used} of the provider's cap, not {each}: the counselor's "
            "time counts once, its cost is shared",
            places=places,
            used=hours(after.spent - before.spent),
            each=hours(places * 90),
        )
    )


async def confidentiality(
    matcher: matcher_pb2_grpc.MatcherServiceAsyncStub,
    audit: audit_pb2_grpc.AuditServiceAsyncStub,
    settings: Settings,
) -> None:
    """Who may see what: an employee's token, a supervisor's referral, the
    directory and the audit trail."""
    county = load_county()
    print(
        "\n"
        + tr(
            "11. Confidentiality: each caller sees only what their role allows, and reads are "
            "audited"
        )
    )

    def bearer(role: Role, subject: str) -> tuple[tuple[str, str]]:
        return (("authorization", f"Bearer {token_cli.mint(settings, role, subject, 5)}"),)

    employee = bearer(Role.EMPLOYEE, "emp-2b7e")
    own = await matcher.GetCase(mpb.GetCaseRequest(case_id="K-1001"), metadata=employee)
    say(
        tr(
            "{employee} (an employee's token) reads their case {case}: {count} bookings",
            employee="emp-2b7e",
            case="K-1001",
            count=len(own.bookings),
        )
    )
    try:
        await matcher.GetCase(mpb.GetCaseRequest(case_id="K-1002"), metadata=employee)
    except grpc.aio.AioRpcError as error:
        say(
            tr(
                "{employee} asks for {case}, someone else's: {refusal}",
                employee="emp-2b7e",
                case="K-1002",
                refusal=refusal(error),
            )
        )
    person = county["people"]["emp-2b7e"]
    await matcher.SetContact(
        mpb.SetContactRequest(employee_id="emp-2b7e", contact=mpb.Contact(**person)),
        metadata=employee,
    )
    say(
        tr(
            "{employee} keeps their name and phone in the directory, sealed at rest",
            employee="emp-2b7e",
        )
    )
    session = own.bookings[0]
    found = await matcher.GetContact(
        mpb.GetContactRequest(employee_id="emp-2b7e"),
        metadata=bearer(Role.COUNSELOR, session.counselor_id),
    )
    say(
        tr(
            "{counselor}, who holds their session, reads it: {name}, {phone}",
            counselor=session.counselor_id,
            name=found.contact.name,
            phone=found.contact.phone,
        )
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
            mpb.TimeRange(start=local("2027-04-06T09:00"), end=local("2027-04-06T17:00"))
        ],
        time_off=mpb.TIME_OFF_OFFICIAL_LEAVE,
    )
    received = await matcher.SubmitCase(
        mpb.SubmitCaseRequest(case=referral, request_id="ref-2027-014"),
        metadata=bearer(Role.SUPERVISOR, "sup-01"),
    )
    say(
        tr(
            "supervisor {supervisor} refers a member of staff: received ({case}); nothing "
            "else comes back, and GetCase is refused",
            supervisor="sup-01",
            case=received.case.case_id,
        )
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
    readers = ", ".join(sorted({e.role for e in entries}))
    chain = tr("chain intact") if verified.intact else tr("chain BROKEN")
    say(
        tr(
            "auditor {auditor}: the matcher's trail holds {count} reads by {roles}; {chain}",
            auditor="audit-01",
            count=len(entries),
            roles=readers,
            chain=chain,
        )
    )
