"""The people directory from the CSV file HR keeps, the way an office
exports it from its personnel system.

    eapctl match import-people PEOPLE.csv [--replace-all] [--dry-run] [--address HOST:PORT]

Columns (a header row names them, in English or Chinese; order free):
employee_id (員工編號), agency_id (機關代碼), staff_category (人員類別); others,
such as 姓名, are not read: the directory keeps ids only. Staff categories
are the ids the entitlement policies name (`teacher`). UTF-8 (with or
without BOM) or Big5, as Excel saves it in Taiwan (spreadsheet.py). Every
row is checked here first, by the server's rules, and the server checks
them again and writes them in one transaction: one wrong row and nothing
is imported. With --replace-all the file is the whole directory,
and people missing from it leave (they can no longer open cases).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc

from eap.matcher.v1 import matcher_pb2 as pb
from eap.matcher.v1 import matcher_pb2_grpc
from services.matcher.registry.spreadsheet import read_table
from services.matcher.registry.staff import MAX_PEOPLE, StaffMember, check_people
from services.runtime import i18n
from services.runtime.client_language import call_metadata, refusal_words
from services.runtime.fields import FieldChecker
from services.runtime.i18n import tr
from services.runtime.tls import client_channel

# Each column, and the Chinese headers HR's exports give it.
COLUMNS = {
    "employee_id": ("員工編號", "員工代號", "人員編號"),
    "agency_id": ("機關代碼", "機關", "機關代號", "服務機關"),
    "staff_category": ("人員類別", "身分類別"),
}


def parse(content: bytes) -> tuple[list[pb.Person], list[str]]:
    """The people of the file, and what is wrong with it, row by row (line
    numbers as a spreadsheet shows them)."""
    rows, problems = read_table(content, COLUMNS)
    if problems:
        return [], problems
    if len(rows) > MAX_PEOPLE:
        return [], [
            tr(
                "more than {most} rows; the directory is larger than allowed",
                most=f"{MAX_PEOPLE:,}",
            )
        ]
    people = [pb.Person(**row) for _, row in rows]
    lines = [line for line, _ in rows]
    checker = FieldChecker()
    check_people(
        [StaffMember(p.employee_id, p.agency_id, p.staff_category) for p in people], checker
    )
    for violation in checker.violations:
        # "people[3].agency_id": the fourth row read, on its line of the file.
        index, _, field = violation.field.removeprefix("people[").partition("].")
        line = lines[int(index)] if index.isdigit() else 1
        words = _lines(violation.description, lines)
        problems.append(
            tr("line {line}: {field}: {problem}", line=line, field=field, problem=words)
        )
    return people, problems


def _lines(description: str, lines: Sequence[int]) -> str:
    """A violation's words, with a row it names by index named by line (in
    English, as the checks' words are: the server's, shared with its API)."""
    head, found, tail = description.partition("people[")
    index, _, rest = tail.partition("]")
    if not (found and index.isdigit()):
        return description
    return f"{head}line {lines[int(index)]}{rest}"


async def _import(
    address: str, people: Sequence[pb.Person], replace_all: bool, dry_run: bool
) -> pb.ImportPeopleResponse:
    metadata = call_metadata()
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
    i18n.add_language_option(parser)
    args = parser.parse_args(argv)
    i18n.choose_cli_language(args.lang)
    try:
        content = Path(args.file).read_bytes()
    except OSError as error:
        print(
            tr("import: cannot read {path}: {error}", path=args.file, error=error.strerror),
            file=sys.stderr,
        )
        return 2
    people, problems = parse(content)
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        print(
            tr("import: {count} problems; nothing was imported", count=len(problems)),
            file=sys.stderr,
        )
        return 1
    try:
        answer = asyncio.run(_import(args.address, people, args.replace_all, args.dry_run))
    except grpc.RpcError as error:
        print(f"import: {error.code().name}: {refusal_words(error)}", file=sys.stderr)
        return 1
    counted = tr(
        "{added} people added, {changed} changed, {removed} removed, {unchanged} unchanged",
        added=answer.added,
        changed=answer.changed,
        removed=answer.removed,
        unchanged=answer.unchanged,
    )
    print(tr("{counted} (dry run: nothing changed)", counted=counted) if args.dry_run else counted)
    return 0
