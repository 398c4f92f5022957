"""eapctl: serve the services, check the books, run the demo."""

from __future__ import annotations

import argparse
import asyncio
import sys
from importlib import import_module
from typing import cast

from services.cli import registry
from services.runtime import logs
from services.runtime.config import Settings
from services.runtime.errors import ConfigError


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from services.runtime.server import serve

    names = list(registry.SERVICES) if args.service == "all" else [args.service]
    asyncio.run(serve(registry.build(names), settings))
    return 0


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from services.runtime import database

    async def run() -> None:
        for service in registry.build(list(registry.SERVICES)):
            engine = database.create_engine(settings.database_url_for(service.name))
            try:
                await database.migrate(engine, service.migrations, service.version_table)
            finally:
                await engine.dispose()

    asyncio.run(run())
    print("migrated")
    return 0


def _quota_verify(args: argparse.Namespace, settings: Settings) -> int:
    from services.quota.ledger import QuotaLedger
    from services.runtime import database

    async def run() -> list[str]:
        engine = database.create_engine(settings.database_url_for("quota"))
        try:
            return await QuotaLedger(engine).verify()
        finally:
            await engine.dispose()

    problems = asyncio.run(run())
    for problem in problems:
        print(problem)
    if problems:
        print(f"quota ledger: {len(problems)} accounts do not balance", file=sys.stderr)
        return 1
    print("quota ledger: every balance equals the sum of its ledger entries")
    return 0


JOB_COMMANDS = ("submit", "watch", "result", "apply")


# Each match tool's module, imported only when asked for: `solve` counts
# its start-up against its time limit.
MATCH_TOOLS = {
    "generate": "generate",
    "baseline": "greedy",
    "solve": "solver",
    "verify": "verify",
    "report": "report",
    "import-counselors": "counselor_csv",
}


def _match(args: argparse.Namespace, settings: Settings) -> int:
    if args.match_command in JOB_COMMANDS:
        from services.matcher import jobs_cli

        return jobs_cli.main(args.match_command, args.rest)
    tool = import_module(f"services.matcher.{MATCH_TOOLS[args.match_command]}")
    return cast(int, tool.main(args.rest))


CALENDAR_TOOLS = {"plan": "plan_cli", "find-time": "find_time_cli"}


def _calendar(args: argparse.Namespace, settings: Settings) -> int:
    tool = import_module(f"services.calendar.{CALENDAR_TOOLS[args.calendar_command]}")
    return cast(int, tool.main(args.rest))


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from services.cli.demo import run_demo

    return asyncio.run(run_demo(settings, keep=args.keep))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eapctl", description="Employee Assistance Programme suite: serve, check, demo."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve one service, or all in one process")
    serve.add_argument("service", choices=[*registry.SERVICES, "all"])
    serve.set_defaults(run=_serve)

    migrate = commands.add_parser("migrate", help="bring every service's tables up to date")
    migrate.set_defaults(run=_migrate)

    quota = commands.add_parser("quota", help="the quota ledger")
    quota_commands = quota.add_subparsers(dest="quota_command", required=True)
    verify = quota_commands.add_parser(
        "verify", help="prove that every balance equals the sum of its ledger entries"
    )
    verify.set_defaults(run=_quota_verify)

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
    result: int = args.run(args, settings)
    return result


if __name__ == "__main__":
    sys.exit(main())
