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

It speaks the language eapctl chose (`eapctl --lang zh-TW demo`, or a
zh_TW locale: `LANG=zh_TW.UTF-8 make demo`), and asks the services for it
(accept-language), so that their refusals and reports are in it too. Its
steps live in demo_booking.py (2, 3), demo_programme.py (9-11) and
demo_edge.py (12, 13).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
from prometheus_client import REGISTRY, generate_latest

from eap.audit.v1 import audit_pb2_grpc
from eap.calendar.v1 import calendar_pb2_grpc
from eap.matcher.v1 import matcher_pb2 as mpb
from eap.matcher.v1 import matcher_pb2_grpc
from eap.quota.v1 import quota_pb2 as pb
from eap.quota.v1 import quota_pb2_grpc
from services.cli import registry, token_cli
from services.cli.demo_booking import online_booking, optimized_job
from services.cli.demo_common import hours, load_county, people_file, say
from services.cli.demo_edge import browser_step
from services.cli.demo_notices import notices_step
from services.cli.demo_programme import confidentiality, group_sessions, year_plan
from services.cli.demo_quota import ledger_steps
from services.matcher.registry import people_csv
from services.matcher.service import MatcherService
from services.quota.service import QuotaService
from services.runtime.client_language import AcceptLanguage
from services.runtime.config import Settings
from services.runtime.i18n import tr
from services.runtime.logs import JsonFormatter
from services.runtime.server import start

SERVICE_LOG = Path("var") / "demo-services.log"
METRICS_DUMP = Path("var") / "demo-metrics.prom"


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
        # The story's notices go out in its last step, once its people have
        # given their addresses, not whenever a poll happens to fall.
        notifier_poll_seconds=24 * 3600,
    )
    # Step 11's tokens are signed with the development key, made now so
    # that the server trusts it from the start.
    token_cli.ensure_dev_key(settings)
    server = await start(registry.build(list(registry.SERVICES)), settings)
    up = tr(
        "Suite up on {address} ({services}), SQLite at {path}",
        address=f"127.0.0.1:{server.port}",
        services=", ".join(registry.SERVICES),
        path=scratch / "demo.sqlite3",
    )
    print(f"{up}\n")
    try:
        # Every call asks for the demo's language: refusals, plans and reports in it.
        asking = [AcceptLanguage()]
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{server.port}",
            interceptors=asking,  # type: ignore[arg-type]  # grpc's stubs want a cast here
        ) as channel:
            quota = quota_pb2_grpc.QuotaServiceStub(channel)
            matcher = matcher_pb2_grpc.MatcherServiceStub(channel)
            job_id = await _story(quota, matcher)
            # The job's report, written where `make demo` leaves things.
            (service,) = [s for s in server.services if isinstance(s, MatcherService)]
            report = Path("var") / "demo-report.html"
            report.parent.mkdir(exist_ok=True)
            report.write_text(await service.jobs.report(job_id), encoding="utf-8")
            print("\n" + tr("The optimized job's HTML report: {path}", path=report.resolve()))
            calendar = calendar_pb2_grpc.CalendarServiceStub(channel)
            await year_plan(calendar)
            await group_sessions(calendar, matcher, quota)
            await confidentiality(matcher, audit_pb2_grpc.AuditServiceStub(channel), settings)
            # The balance gauges follow the current fiscal year; the story
            # is in the county's, so they are read for it before the dump,
            # which then shows what a scrape would (small agencies absent).
            (books,) = [s for s in server.services if isinstance(s, QuotaService)]
            await books.reads.refresh_metrics(int(load_county()["fiscal_year"]))
            county = load_county()
            page = await browser_step(
                server,
                settings,
                employee=people_csv.parse(people_file())[0][0].employee_id,
                story_year=county["fiscal_year"],
                fund_year=lambda year: fund_year(quota, county, year),
            )
            told = await notices_step(server, settings)
    finally:
        await server.stop(1)
    METRICS_DUMP.write_bytes(generate_latest(REGISTRY))
    left = tr(
        "The services' logs: {logs}; their metrics: {metrics}",
        logs=SERVICE_LOG.resolve(),
        metrics=METRICS_DUMP.resolve(),
    )
    print(f"\n{left}")
    if not keep:
        shutil.rmtree(scratch)
    print(f"\n{told}")
    print("\n" + tr("Demo finished; the suite shut down cleanly."))
    print(
        tr(
            "The booking page was at {page}; `make run` serves it at {address}",
            page=page,
            address=f"http://{settings.edge_address}/",
        )
    )
    return 0


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
    county = load_county()
    org, year = county["organisation"], county["fiscal_year"]

    print(
        tr(
            "1. HR loads the {organisation} programme for fiscal year {year}",
            organisation=org,
            year=year,
        )
    )
    await fund_year(quota, county, year)
    for agency in county["agencies"]:
        say(
            tr(
                "agency {agency} budget NT${amount}",
                agency=f"{agency['id']:<14}",
                amount=f"{agency['budget_ntd']:>9,}",
            )
        )
    for provider in county["providers"]:
        say(
            tr(
                "provider {provider} NT${rate}/h, cap {cap}",
                provider=f"{provider['id']:<16}",
                rate=f"{provider['hourly_rate_ntd']:,}",
                cap=hours(provider["cap_hours"] * 60),
            )
        )
    policies = county["entitlement_policy"]
    each = ", ".join(f"{p['staff_category']} {hours(p['hours'] * 60)}" for p in policies)
    say(tr("entitlements: {each}", each=each))
    people, problems = people_csv.parse(people_file())
    assert not problems, problems
    loaded = await matcher.ImportPeople(mpb.ImportPeopleRequest(people=people, replace_all=True))
    say(
        tr(
            "people directory: {count} employees, each with their agency and staff category "
            "(a case is paid for by the directory's, never the caller's word)",
            count=loaded.added,
        )
    )

    await online_booking(county, matcher, quota)
    job_id = await optimized_job(county, matcher)

    await ledger_steps(quota, county)
    return job_id
