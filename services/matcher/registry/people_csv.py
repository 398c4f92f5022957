"""The people directory from the CSV file HR keeps, the way an office
exports it from its personnel system.

    eapctl match import-people PEOPLE.csv [--replace-all] [--dry-run] [--address HOST:PORT]

Columns (a header row names them; order free): employee_id, agency_id,
staff_category. UTF-8 (with or without BOM) or Big5, as Excel saves it in
Taiwan. Every row is checked here first, by the server's rules, and the
server checks them again and writes them in one transaction: one wrong row
and nothing is imported. With --replace-all the file is the whole directory,
and people missing from it leave (they can no longer open cases).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc

from eap.matcher.v1 import matcher_pb2 as pb
from eap.matcher.v1 import matcher_pb2_grpc
from services.matcher.registry.staff import MAX_PEOPLE, StaffMember, check_people
from services.office_calendar.dgpa_csv import CalendarFileError, decode
from services.runtime.fields import FieldChecker
from services.runtime.tls import client_channel

COLUMNS = ("employee_id", "agency_id", "staff_category")


def parse(content: bytes) -> tuple[list[pb.Person], list[str]]:
    """The people of the file, and what is wrong with it, row by row (line
    numbers as a spreadsheet shows them)."""
    try:
        text = decode(content)
    except CalendarFileError:
        return [], ["the file is neither UTF-8 nor Big5 text"]
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        return [], [f"line 1: missing columns: {', '.join(missing)}"]
    people: list[pb.Person] = []
    for row in reader:
        if len(people) >= MAX_PEOPLE:
            return [], [f"more than {MAX_PEOPLE:,} rows; the directory is larger than allowed"]
        people.append(pb.Person(**{c: (row.get(c) or "").strip() for c in COLUMNS}))
    checker = FieldChecker()
    check_people(
        [StaffMember(p.employee_id, p.agency_id, p.staff_category) for p in people], checker
    )
    problems = []
    for violation in checker.violations:
        # "people[3].agency_id": the fourth row, on line 5 under the header.
        index, _, field = violation.field.removeprefix("people[").partition("].")
        line = int(index) + 2 if index.isdigit() else 1
        problems.append(f"line {line}: {field}: {_lines(violation.description)}")
    return people, problems


def _lines(description: str) -> str:
    """A violation's words, with a row it names by index named by line."""
    head, found, tail = description.partition("people[")
    index, _, rest = tail.partition("]")
    return f"{head}line {int(index) + 2}{rest}" if found and index.isdigit() else description


async def _import(
    address: str, people: Sequence[pb.Person], replace_all: bool, dry_run: bool
) -> pb.ImportPeopleResponse:
    token = os.environ.get("EAP_TOKEN")
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    async with client_channel(address) as channel:
        stub = matcher_pb2_grpc.MatcherServiceStub(channel)
        answer: pb.ImportPeopleResponse = await stub.ImportPeople(
            pb.ImportPeopleRequest(people=people, replace_all=replace_all, dry_run=dry_run),
            metadata=metadata,
            timeout=60,
        )
    return answer


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="eapctl match import-people",
        description="Load the people directory (agency and staff category per employee) from CSV.",
    )
    parser.add_argument("file")
    parser.add_argument(
        "--replace-all", action="store_true", help="the file is the whole directory"
    )
    parser.add_argument("--dry-run", action="store_true", help="check and count, change nothing")
    parser.add_argument("--address", default=os.environ.get("EAP_GRPC_ADDRESS", "127.0.0.1:50051"))
    args = parser.parse_args(argv)
    try:
        content = Path(args.file).read_bytes()
    except OSError as error:
        print(f"import: cannot read {args.file}: {error.strerror}", file=sys.stderr)
        return 2
    people, problems = parse(content)
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"import: {len(problems)} problems; nothing was imported", file=sys.stderr)
        return 1
    try:
        answer = asyncio.run(_import(args.address, people, args.replace_all, args.dry_run))
    except grpc.RpcError as error:
        print(f"import: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    would = " (dry run: nothing changed)" if args.dry_run else ""
    print(
        f"{answer.added} people added, {answer.changed} changed, {answer.removed} removed, "
        f"{answer.unchanged} unchanged{would}"
    )
    return 0
