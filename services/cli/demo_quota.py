"""The demo's steps 4 to 8, on the quota's ledger: a partner's own booking
system reserves and commits sessions, the limits hold (one session a week,
an agency's pool), HR moves budget and grants a special approval, then the
balances and HR's usage summary (no cell of fewer than five people)."""

from __future__ import annotations

import uuid
from typing import Any

import grpc

from eap.quota.v1 import quota_pb2 as pb
from eap.quota.v1 import quota_pb2_grpc
from services.cli.demo_common import hours, pad, refusal, say, session
from services.runtime.i18n import N_, tr

# A cell of HR's usage summary, with one session or several.
CELL = N_("{people} people, {sessions} sessions, {hours}, NT${amount}")
CELL_OF_ONE = N_("{people} people, {sessions} session, {hours}, NT${amount}")


async def ledger_steps(quota: quota_pb2_grpc.QuotaServiceAsyncStub, county: dict[str, Any]) -> None:
    year = county["fiscal_year"]
    print(
        "\n"
        + tr("4. A partner's own booking system books and completes sessions (Reserve -> Commit)")
    )
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
                    session_start=session(year, week, 2, 14),
                    minutes=minutes,
                )
            )
        ).hold
        await quota.Commit(pb.CommitRequest(hold_id=hold.hold_id))
        done = (
            await quota.Commit(pb.CommitRequest(hold_id=hold.hold_id, minutes=used, completed=True))
        ).hold
        say(
            tr(
                "{employee} week {week} with {provider} held {minutes} min, took {used} min, "
                "spent NT${amount}",
                employee=employee,
                week=hold.iso_week,
                provider=f"{provider:<16}",
                minutes=minutes,
                used=used,
                amount=f"{done.amount_ntd:,}",
            )
        )

    print("\n" + tr("5. Limits hold"))
    try:
        await quota.Reserve(
            pb.ReserveRequest(
                idempotency_key=uuid.uuid4().hex,
                employee_id="emp-7f3a",
                agency_id="PT-EDUCATION",
                staff_category="teacher",
                provider_id="south-clinic",
                session_start=session(year, 4, 4, 10),
                minutes=60,
            )
        )
    except grpc.aio.AioRpcError as error:
        say(tr("a second session in the same week: {refusal}", refusal=refusal(error)))
    police_booking = pb.ReserveRequest(
        idempotency_key=uuid.uuid4().hex,
        employee_id="emp-51aa",
        agency_id="PT-POLICE",
        staff_category="worker",
        provider_id="harbour-law",
        session_start=session(year, 6, 3, 9),
        minutes=60,
    )
    try:
        await quota.Reserve(police_booking)
    except grpc.aio.AioRpcError as error:
        say(tr("the police bureau's pool runs dry: {refusal}", refusal=refusal(error)))
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
    say(
        tr(
            "HR moves NT${amount} from {agency}: police pool now NT${left} left",
            amount="12,000",
            agency="PT-PERSONNEL",
            left=f"{moved.to_balance.left:,}",
        )
    )
    hold = (await quota.Reserve(police_booking)).hold
    await quota.Commit(pb.CommitRequest(hold_id=hold.hold_id))
    say(
        tr(
            "the police booking goes through: {week}, NT${amount}",
            week=hold.iso_week,
            amount=f"{hold.amount_ntd:,}",
        )
    )

    print("\n" + tr("6. Beyond the entitlement, a special approval"))
    worker = pb.ReserveRequest(
        idempotency_key=uuid.uuid4().hex,
        employee_id="emp-09be",
        agency_id="PT-POLICE",
        staff_category="worker",
        provider_id="south-clinic",
        session_start=session(year, 7, 2, 15),
        minutes=120,
    )
    for week in (6, 7):
        worker.session_start.CopyFrom(session(year, week, 2, 15))
        worker.idempotency_key = uuid.uuid4().hex
        try:
            hold = (await quota.Reserve(worker)).hold
            await quota.Commit(pb.CommitRequest(hold_id=hold.hold_id))
            say(
                tr(
                    "{employee} books week {week}: {minutes} min",
                    employee="emp-09be",
                    week=hold.iso_week,
                    minutes=120,
                )
            )
        except grpc.aio.AioRpcError as error:
            say(
                tr(
                    "{employee} asks for week {week}: {refusal}",
                    employee="emp-09be",
                    week=f"{week:02d}",
                    refusal=refusal(error),
                )
            )
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
    say(
        tr(
            "special approval {reference} adds {added}: entitled {entitled}, left {left}",
            reference=f"SA-{year}-001",
            added=hours(240),
            entitled=hours(granted.balance.entitled),
            left=hours(granted.balance.left),
        )
    )
    worker.idempotency_key = uuid.uuid4().hex
    hold = (await quota.Reserve(worker)).hold
    await quota.Commit(pb.CommitRequest(hold_id=hold.hold_id))
    say(tr("now week {week} is booked", week=hold.iso_week))

    print("\n" + tr("7. Balances"))
    for kind, label, ids in (
        (pb.ACCOUNT_KIND_AGENCY, tr("agency"), [a["id"] for a in county["agencies"]]),
        (pb.ACCOUNT_KIND_PROVIDER, tr("provider"), [p["id"] for p in county["providers"]]),
    ):
        for owner in ids:
            b = (
                await quota.GetBalance(
                    pb.GetBalanceRequest(
                        account=pb.AccountRef(kind=kind, id=owner, fiscal_year=year)
                    )
                )
            ).balance
            unit = (lambda v: f"NT${v:,}") if b.unit == pb.UNIT_NTD else hours
            figures = tr(
                "entitled {entitled}  held {held}  spent {spent}  left {left}",
                entitled=f"{unit(b.entitled):>11}",
                held=f"{unit(b.held):>9}",
                spent=f"{unit(b.spent):>9}",
                left=f"{unit(b.left):>11}",
            )
            say(f"{pad(label, 8)} {owner:<16} {figures}")
    usage = (await quota.GetUsageSummary(pb.GetUsageSummaryRequest(fiscal_year=year))).rows
    print("\n" + tr("8. HR's usage summary (no employee ids, no cell of fewer than 5 people)"))
    for row in usage:
        month = tr("month {month}", month=f"{row.month:>2}")
        cell = f"{row.agency_id:<14} {row.staff_category:<9} {month}: "
        if row.suppressed:
            say(cell + tr("withheld"))
            continue
        cells = CELL if row.sessions != 1 else CELL_OF_ONE
        figures = tr(
            cells,
            people=row.people,
            sessions=row.sessions,
            hours=hours(row.minutes),
            amount=f"{row.amount_ntd:,}",
        )
        say(cell + figures)
    if any(row.suppressed for row in usage):
        say(
            tr(
                "withheld: fewer than 5 people, or withheld with such a cell so that "
                "subtraction cannot reveal it"
            )
        )
