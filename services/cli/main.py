"""eapctl: serve the services, check the books, make keys and tokens, run the demo."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import timedelta
from importlib import import_module
from typing import cast

from services.cli import registry
from services.runtime import i18n, logs
from services.runtime.config import Settings
from services.runtime.errors import ConfigError
from services.runtime.i18n import tr


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from services.runtime.server import serve

    names = list(registry.SERVICES) if args.service == "all" else [args.service]
    companions = []
    if args.edge:
        from services.edge.process import LocalEdge

        companions.append(LocalEdge(settings))
    asyncio.run(serve(registry.build(names), settings, companions))
    return 0


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    asyncio.run(registry.migrate_all(settings))
    print(tr("migrated"))
    return 0


def _of(settings: Settings, tenant: str, line: str) -> str:
    """A line of a report, naming its tenant where there are several."""
    return f"{tenant}: {line}" if len(settings.tenants) > 1 else line


def _quota_verify(args: argparse.Namespace, settings: Settings) -> int:
    from services.quota.ledger_reads import LedgerReads
    from services.runtime import database

    async def run() -> list[str]:
        problems = []
        for tenant in settings.tenants:
            engine = database.create_engine(settings.database_url_for("quota", tenant))
            try:
                problems += [_of(settings, tenant, p) for p in await LedgerReads(engine).verify()]
            finally:
                await engine.dispose()
        return problems

    problems = asyncio.run(run())
    for problem in problems:
        print(problem)
    if problems:
        print(
            tr("quota ledger: {count} accounts do not balance", count=len(problems)),
            file=sys.stderr,
        )
        return 1
    print(tr("quota ledger: every balance equals the sum of its ledger entries"))
    return 0


def _verify(args: argparse.Namespace, settings: Settings) -> int:
    from services.cli.consistency import check
    from services.runtime import clock, database

    async def run() -> list[str]:
        problems = []
        for tenant in settings.tenants:
            matcher = database.create_engine(settings.database_url_for("matcher", tenant))
            quota = database.create_engine(settings.database_url_for("quota", tenant))
            try:
                # Sessions older than retention may have lost their booking to a purge.
                purged_before = (
                    clock.now() - timedelta(days=settings.retention_days)
                    if settings.retention_days > 0
                    else None
                )
                found = await check(matcher, quota, purged_before)
                problems += [_of(settings, tenant, str(p)) for p in found]
            finally:
                await matcher.dispose()
                await quota.dispose()
        return problems

    problems = asyncio.run(run())
    for problem in problems:
        print(problem)
    if problems:
        print(
            tr("verify: {count} problems between bookings and ledger", count=len(problems)),
            file=sys.stderr,
        )
        return 1
    print(
        tr(
            "verify: every session carries exactly one charge of its cost, every charge a "
            "session; no week, cap or budget is over its limit"
        )
    )
    return 0


def _audit_verify(args: argparse.Namespace, settings: Settings) -> int:
    from redis.asyncio import Redis

    from services.runtime import database
    from services.runtime.audit import AuditKeys, AuditTrail, Checkpoint

    keys = AuditKeys.load(settings.audit_keys_file, settings.development)

    async def run() -> list[str]:
        problems = []
        # The heads' checkpoints outside the database, where the services
        # keep them (REDIS_URL).
        redis = (
            Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
            if settings.redis_url
            else None
        )
        try:
            for tenant in settings.tenants:
                for service in registry.own_stores(registry.build(list(registry.SERVICES))):
                    if not getattr(service, "audited", False):
                        continue
                    url = settings.database_url_for(service.name, tenant)
                    engine = database.create_engine(url)
                    scope = database.scope_of(url)
                    checkpoint = Checkpoint(redis, service.name, scope) if redis else None
                    try:
                        trail = AuditTrail(engine, service.name, keys, checkpoint)
                        found = await trail.verify()
                        entries = len(await trail.entries(0, 10**9)) if not found else 0
                    finally:
                        await engine.dispose()
                    if not found:
                        held = tr(
                            "{service} audit trail: {entries} entries, the chain holds",
                            service=service.name,
                            entries=entries,
                        )
                        print(_of(settings, tenant, held))
                    problems += [_of(settings, tenant, p) for p in found]
        finally:
            if redis is not None:
                await redis.aclose()
        return problems

    problems = asyncio.run(run())
    for problem in problems:
        print(problem)
    if problems:
        print(tr("audit trails: {count} problems", count=len(problems)), file=sys.stderr)
        return 1
    return 0


def _retention_purge(args: argparse.Namespace, settings: Settings) -> int:
    from services.matcher import retention
    from services.runtime import database
    from services.runtime.audit import AuditKeys, AuditTrail

    keys = AuditKeys.load(settings.audit_keys_file, settings.development)

    async def run() -> tuple[int, int]:
        cases = jobs = 0
        for tenant in settings.tenants:
            engine = database.create_engine(settings.database_url_for("matcher", tenant))
            try:
                purged = await retention.purge(
                    engine, AuditTrail(engine, "matcher", keys), settings.retention_days
                )
            finally:
                await engine.dispose()
            cases, jobs = cases + purged[0], jobs + purged[1]
        return cases, jobs

    cases, jobs = asyncio.run(run())
    print(
        tr(
            "purged {cases} cases and {jobs} match jobs older than {days} days "
            "(EAP_RETENTION_DAYS)",
            cases=cases,
            jobs=jobs,
            days=settings.retention_days,
        )
    )
    return 0


JOB_COMMANDS = ("submit", "watch", "result", "apply")


# Each match tool's module, imported only when asked for: `solve` counts
# its start-up against its time limit.
MATCH_TOOLS = {
    "generate": "optimization.generate",
    "baseline": "optimization.greedy",
    "solve": "optimization.solver",
    "verify": "optimization.verify",
    "report": "optimization.report",
    "import-counselors": "registry.counselor_csv",
    "import-people": "registry.people_csv",
}


def _match(args: argparse.Namespace, settings: Settings) -> int:
    if args.match_command in JOB_COMMANDS:
        from services.matcher.optimization import jobs_cli

        return jobs_cli.main(args.match_command, args.rest)
    tool = import_module(f"services.matcher.{MATCH_TOOLS[args.match_command]}")
    return cast(int, tool.main(args.rest))


CALENDAR_TOOLS = {"plan": "plan_cli", "find-time": "find_time_cli"}


def _calendar(args: argparse.Namespace, settings: Settings) -> int:
    tool = import_module(f"services.calendar.{CALENDAR_TOOLS[args.calendar_command]}")
    return cast(int, tool.main(args.rest))


def _review(args: argparse.Namespace, settings: Settings) -> int:
    from services.cli.review_report import command

    return command.main(args.rest)


def _token(args: argparse.Namespace, settings: Settings) -> int:
    from services.cli import token_cli

    return token_cli.main(args.rest, settings)


def _tls(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from services.runtime import tls

    made = tls.make_dev_ca(Path(args.folder), args.namespace)
    print(
        tr(
            "development CA in {folder} (ca.crt, ca.key: keep the key private)",
            folder=Path(args.folder) / "ca",
        )
    )
    for folder in made:
        print(f"  {folder.name:<9} {folder}/tls.crt, tls.key, ca.crt (EAP_TLS_DIR={folder})")
    print(tr("for development only: production certificates come from cert-manager"))
    return 0


def _edge_config(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from services.edge import config

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.cluster:
        edge = config.cluster(settings, str(out))
    else:
        edge = config.local(settings, settings.grpc_address)
    (out / "envoy.json").write_text(config.render_json(edge))
    if edge.tls_dir:
        for name, text in config.sds_files(edge.tls_dir).items():
            (out / name).write_text(text)
    print(tr("wrote {path}", path=out / "envoy.json"))
    return 0


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from services.cli.demo import run_demo

    return asyncio.run(run_demo(settings, keep=args.keep))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eapctl", description="Employee Assistance Programme suite: serve, check, demo."
    )
    i18n.add_language_option(parser)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve one service, or all in one process")
    serve.add_argument("service", choices=[*registry.SERVICES, "all"])
    serve.add_argument(
        "--edge",
        action="store_true",
        help="and the Envoy edge for browsers (gRPC-Web, Connect) on EAP_EDGE_ADDRESS",
    )
    serve.set_defaults(run=_serve)

    migrate = commands.add_parser("migrate", help="bring every service's tables up to date")
    migrate.set_defaults(run=_migrate)

    check = commands.add_parser(
        "verify",
        help="prove that bookings and the quota ledger agree: one charge of its cost per "
        "session, no charge without one, no week, cap or budget over its limit",
    )
    check.set_defaults(run=_verify)

    quota = commands.add_parser("quota", help="the quota ledger")
    quota_commands = quota.add_subparsers(dest="quota_command", required=True)
    verify = quota_commands.add_parser(
        "verify", help="prove that every balance equals the sum of its ledger entries"
    )
    verify.set_defaults(run=_quota_verify)

    audit = commands.add_parser("audit", help="the audit trails of reads and disclosures")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    audit_verify = audit_commands.add_parser(
        "verify", help="walk every trail's hash chain; name any entry changed or removed"
    )
    audit_verify.set_defaults(run=_audit_verify)

    retention_command = commands.add_parser("retention", help="purging old case details")
    retention_commands = retention_command.add_subparsers(dest="retention_command", required=True)
    purge = retention_commands.add_parser(
        "purge", help="delete case details past EAP_RETENTION_DAYS (the matcher does it hourly)"
    )
    purge.set_defaults(run=_retention_purge)

    match = commands.add_parser(
        "match",
        help="matching: generate benchmark instances, book them first-come-first-served, "
        "solve them with CP-SAT, verify, score and report on schedules; and, against a running "
        "matcher, submit, watch, read and apply match jobs",
    )
    match.add_argument(
        "match_command",
        choices=[*MATCH_TOOLS, *JOB_COMMANDS],
    )
    match.add_argument("rest", nargs=argparse.REMAINDER, help="the tool's own arguments")
    match.set_defaults(run=_match)

    calendar = commands.add_parser(
        "calendar", help="plan a year's programme of meetings, trainings and group sessions"
    )
    calendar.add_argument("calendar_command", choices=[*CALENDAR_TOOLS])
    calendar.add_argument("rest", nargs=argparse.REMAINDER, help="the tool's own arguments")
    calendar.set_defaults(run=_calendar)

    review = commands.add_parser(
        "review",
        help="the programme's review of a quarter or a year for HR: sessions, waiting, "
        "no-shows, budget execution, satisfaction and attendance, as HTML and CSV",
    )
    review.add_argument("review_command", choices=["report"])
    review.add_argument("rest", nargs=argparse.REMAINDER, help="the report's own arguments")
    review.set_defaults(run=_review)

    token = commands.add_parser(
        "token", help="key pairs for Secrets, and development tokens (dev mode only)"
    )
    token.add_argument("rest", nargs=argparse.REMAINDER, help="mint ... | keygen KID")
    token.set_defaults(run=_token)

    tls_command = commands.add_parser("tls", help="certificates for encryption in transit")
    tls_commands = tls_command.add_subparsers(dest="tls_command", required=True)
    dev_ca = tls_commands.add_parser(
        "dev-ca",
        help="a development CA and a certificate for each service, the edge and an operator",
    )
    dev_ca.add_argument("folder", help="where to write them, e.g. var/tls")
    dev_ca.add_argument("--namespace", default="eap", help="the Kubernetes namespace (for names)")
    dev_ca.set_defaults(run=_tls)

    edge = commands.add_parser("edge", help="the Envoy edge that browsers reach the suite through")
    edge_commands = edge.add_subparsers(dest="edge_command", required=True)
    edge_config = edge_commands.add_parser(
        "config", help="write Envoy's configuration (and its TLS SDS files) into a folder"
    )
    edge_config.add_argument("--out", required=True, help="the folder, e.g. /etc/envoy")
    edge_config.add_argument(
        "--cluster",
        action="store_true",
        help="for Kubernetes: services at EAP_*_ADDRESS, /ready on 8081 for kubelet",
    )
    edge_config.set_defaults(run=_edge_config)

    demo = commands.add_parser("demo", help="tell the suite's story on embedded defaults")
    demo.add_argument("--keep", action="store_true", help="keep the demo's database")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as error:
        print(f"eapctl: configuration: {error}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    # Before the command runs, so that what it and the tools it runs write
    # for people is in the reader's language (i18n.choose_cli_language).
    i18n.choose_cli_language(args.lang, settings.default_language)
    result: int = args.run(args, settings)
    return result


if __name__ == "__main__":
    sys.exit(main())
