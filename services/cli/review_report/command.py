"""eapctl review report: the programme's review of a quarter or a year for
HR, as an HTML page and a CSV file, from the running suite.

    eapctl review report --period 2027-Q1 --html review.html --csv review.csv \\
        [--plan PLAN_ID ...]

The matcher is EAP_GRPC_ADDRESS (or --address); the quota service and the
calendar are EAP_QUOTA_ADDRESS and EAP_CALENDAR_ADDRESS, else the same
address. With EAP_AUTH_MODE=jwt on the servers, pass a token in EAP_TOKEN:
an HR or auditor token sees what the disclosure rules release to it. The
words are in --lang's language (else the locale's).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc

from services.cli.review_report import render, tables
from services.cli.review_report.gather import Addresses, gather
from services.runtime import i18n
from services.runtime.client_language import refusal_words
from services.runtime.i18n import tr


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eapctl review report", description=__doc__)
    matcher = os.environ.get("EAP_GRPC_ADDRESS", "127.0.0.1:50051")
    parser.add_argument("--address", default=matcher, help="the matcher, host:port")
    parser.add_argument("--quota-address", default=os.environ.get("EAP_QUOTA_ADDRESS"))
    parser.add_argument("--calendar-address", default=os.environ.get("EAP_CALENDAR_ADDRESS"))
    parser.add_argument("--period", required=True, help="a quarter, 2027-Q1, or a year, 2027")
    parser.add_argument("--html", help="write the page here")
    parser.add_argument("--csv", help="write the tables here (UTF-8, for Excel)")
    parser.add_argument(
        "--plan", action="append", default=[], help="a calendar plan's id, for attendance (repeat)"
    )
    i18n.add_language_option(parser)
    return parser


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    i18n.choose_cli_language(args.lang)
    if not (args.html or args.csv):
        print(tr("say where to write the report: --html FILE, --csv FILE or both"), file=sys.stderr)
        return 2
    addresses = Addresses(
        args.address, args.quota_address or args.address, args.calendar_address or args.address
    )
    try:
        data = asyncio.run(gather(addresses, args.period, args.plan))
    except grpc.aio.AioRpcError as error:
        print(f"{error.code().name}: {refusal_words(error)}", file=sys.stderr)
        return 1
    report = tables.build(data)
    if args.html:
        Path(args.html).write_text(render.page(report), encoding="utf-8")
        print(tr("wrote {path}", path=args.html))
    if args.csv:
        Path(args.csv).write_text(render.spreadsheet(report), encoding="utf-8", newline="")
        print(tr("wrote {path}", path=args.csv))
    return 0
