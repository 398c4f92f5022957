"""Bulk import of counselors from a CSV file, the way an office keeps them in
a spreadsheet.

    eapctl match import-counselors COUNSELORS.csv [--dry-run] [--address HOST:PORT]

Columns (a header row names them; order free): counselor_id, provider_id,
display_name, specialties, modalities, location, max_sessions_per_day,
weekly_hours. Lists are separated by ";": specialties `psychological;family`,
modalities `in_person;video`, weekly hours `Mon 09:00-12:00; Wed 18:00-21:00`.
UTF-8 (with or without BOM) or Big5, as Excel saves it in Taiwan.

Every row is checked first, by the same rules the server applies; if any row
is wrong, the import says which rows and fields and changes nothing.
Otherwise each counselor is created or replaced, so running it again (after
a dropped connection, say) is safe and completes it.
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
from services.matcher.messages import counselor_from_pb
from services.matcher.registry.counselors import validate
from services.office_calendar.dgpa_csv import CalendarFileError, decode
from services.runtime.errors import InvalidArgument
from services.runtime.fields import FieldChecker
from services.runtime.tls import client_channel

COLUMNS = (
    "counselor_id",
    "provider_id",
    "display_name",
    "specialties",
    "modalities",
    "location",
    "max_sessions_per_day",
    "weekly_hours",
)
WEEKDAYS = {"mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6, "sun": 7}
MAX_ROWS = 5000


def _items(text: str) -> list[str]:
    return [part.strip() for part in text.split(";") if part.strip()]


UNKNOWN = 999  # a value no enum has: the row's check names the field


CATEGORIES = dict(pb.Category.items())
MODALITIES = dict(pb.Modality.items())


def _category(value: str) -> pb.Category.ValueType:
    name = f"CATEGORY_{value.strip().upper()}"
    return CATEGORIES.get(name, pb.Category.ValueType(UNKNOWN))


def _modality(value: str) -> pb.Modality.ValueType:
    name = f"MODALITY_{value.strip().upper()}"
    return MODALITIES.get(name, pb.Modality.ValueType(UNKNOWN))


def _window(text: str) -> pb.WeeklyWindow | None:
    """`Mon 09:00-12:00`, or None when it does not read like that."""
    day, _, hours = text.partition(" ")
    start, _, end = hours.strip().partition("-")
    weekday = WEEKDAYS.get(day.strip().lower()[:3])
    if weekday is None or not start or not end:
        return None
    return pb.WeeklyWindow(weekday=weekday, start_time=start.strip(), end_time=end.strip())


def parse(content: bytes) -> tuple[list[pb.Counselor], list[str]]:
    """The counselors of the file, and what is wrong with it, row by row
    (line numbers as a spreadsheet shows them)."""
    try:
        text = decode(content)
    except CalendarFileError:
        return [], ["the file is neither UTF-8 nor Big5 text"]
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        return [], [f"line 1: missing columns: {', '.join(missing)}"]
    counselors: list[pb.Counselor] = []
    problems: list[str] = []
    for line, row in enumerate(reader, start=2):
        if len(counselors) + len(problems) >= MAX_ROWS:
            problems.append(f"line {line}: more than {MAX_ROWS} rows; split the file")
            break
        found: list[str] = []
        windows = []
        for part in _items(row["weekly_hours"] or ""):
            window = _window(part)
            if window is None:
                found.append(f"weekly_hours: {part!r} is not like 'Mon 09:00-12:00'")
            else:
                windows.append(window)
        try:
            limit = int(row["max_sessions_per_day"] or "0")
        except ValueError:
            limit = 0
        message = pb.Counselor(
            counselor_id=(row["counselor_id"] or "").strip(),
            provider_id=(row["provider_id"] or "").strip(),
            display_name=(row["display_name"] or "").strip(),
            specialties=[_category(s) for s in _items(row["specialties"] or "")],
            modalities=[_modality(m) for m in _items(row["modalities"] or "")],
            location=(row["location"] or "").strip(),
            max_sessions_per_day=limit,
            weekly_availability=windows,
        )
        try:
            checker = FieldChecker()
            validate(counselor_from_pb(message), checker)
            checker.raise_if_any()
        except InvalidArgument as error:
            found += [
                f"{v.field.removeprefix('counselor.')}: {v.description}" for v in error.violations
            ]
        if found:
            problems += [f"line {line}: {problem}" for problem in found]
        else:
            counselors.append(message)
    ids = [c.counselor_id for c in counselors]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    problems += [f"counselor_id {i} appears more than once" for i in twice]
    return counselors, problems


async def _upsert(address: str, counselors: Sequence[pb.Counselor]) -> tuple[int, int]:
    token = os.environ.get("EAP_TOKEN")
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    created = replaced = 0
    async with client_channel(address) as channel:
        stub = matcher_pb2_grpc.MatcherServiceStub(channel)
        for counselor in counselors:
            answer = await stub.UpsertCounselor(
                pb.UpsertCounselorRequest(counselor=counselor), metadata=metadata, timeout=10
            )
            if answer.created:
                created += 1
            else:
                replaced += 1
    return created, replaced


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="eapctl match import-counselors", description="Create or replace counselors from CSV."
    )
    parser.add_argument("file")
    parser.add_argument("--dry-run", action="store_true", help="check the file, change nothing")
    parser.add_argument("--address", default=os.environ.get("EAP_GRPC_ADDRESS", "127.0.0.1:50051"))
    args = parser.parse_args(argv)
    try:
        content = Path(args.file).read_bytes()
    except OSError as error:
        print(f"import: cannot read {args.file}: {error.strerror}", file=sys.stderr)
        return 2
    counselors, problems = parse(content)
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"import: {len(problems)} problems; nothing was imported", file=sys.stderr)
        return 1
    if args.dry_run:
        print(f"{len(counselors)} counselors would be created or replaced")
        return 0
    try:
        created, replaced = asyncio.run(_upsert(args.address, counselors))
    except grpc.RpcError as error:
        print(f"import: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    print(f"{created} counselors created, {replaced} replaced")
    return 0
