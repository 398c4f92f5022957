"""Bulk import of counselors from a CSV file, the way an office keeps them in
a spreadsheet.

    eapctl match import-counselors COUNSELORS.csv [--dry-run] [--address HOST:PORT]

Columns (a header row names them, in English or Chinese; order free):
counselor_id (諮商師編號), provider_id (特約機構編號), display_name (姓名),
specialties (專長), modalities (方式), location (地點), max_sessions_per_day
(每日上限), weekly_hours (每週時段); and where the office keeps them,
languages (語言: BCP 47 tags such as `zh-TW;nan;en`) and video_link
(視訊連結, an https:// room of the provider's). Lists are separated by ";" or "、":
specialties `psychological;family` or `心理、家庭` (counselors.CATEGORY_WORDS),
modalities `in_person;video` or `面談、視訊`, weekly hours
`Mon 09:00-12:00; Wed 18:00-21:00` or `週一 09:00-12:00；週三 18:00~21:00`.
UTF-8 (with or without BOM) or Big5, as Excel saves it in Taiwan
(spreadsheet.py).

Every row is checked first, by the same rules the server applies; if any row
is wrong, the import says which rows and fields and changes nothing.
Otherwise each counselor is created or replaced, so running it again (after
a dropped connection, say) is safe and completes it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc

from eap.matcher.v1 import matcher_pb2 as pb
from eap.matcher.v1 import matcher_pb2_grpc
from services.matcher.messages import counselor_from_pb
from services.matcher.registry.counselors import (
    CATEGORY_WORDS,
    MODALITY_WORDS,
    Category,
    Modality,
    named,
    validate,
)
from services.matcher.registry.spreadsheet import read_table
from services.runtime import dates, i18n
from services.runtime.client_language import call_metadata, refusal_words
from services.runtime.errors import InvalidArgument
from services.runtime.fields import FieldChecker
from services.runtime.i18n import tr
from services.runtime.tls import client_channel

# Each column, and the Chinese headers an office's spreadsheet gives it.
COLUMNS = {
    "counselor_id": ("諮商師編號", "諮商師代號"),
    "provider_id": ("特約機構編號", "機構編號", "特約機構"),
    "display_name": ("姓名", "諮商師姓名"),
    "specialties": ("專長", "專長領域"),
    "modalities": ("方式", "諮商方式", "服務方式"),
    "location": ("地點", "諮商地點"),
    "max_sessions_per_day": ("每日上限", "每日場次上限", "每日最多場次"),
    "weekly_hours": ("每週時段", "每週可諮商時段", "服務時段"),
    "languages": ("語言", "使用語言", "諮商語言"),
    "video_link": ("視訊連結", "視訊會議室"),
}
OPTIONAL = frozenset({"languages", "video_link"})
MAX_ROWS = 5000
# `Mon 09:00-12:00`, `週一09:00~12:00`, `星期一 9:00至12:00` (cells are
# NFKC-normalized first, so full-width forms read as these).
WINDOW = re.compile(r"^(\S+?)\s*(\d{1,2}:\d{2})\s*(?:-|~|至|到)\s*(\d{1,2}:\d{2})$")


def _items(text: str) -> list[str]:
    return [part.strip() for part in re.split("[;、]", text) if part.strip()]


UNKNOWN = 999  # a value no enum has: the row's check names the field


def _category(value: str) -> pb.Category.ValueType:
    category = named(Category, CATEGORY_WORDS, value)
    if category is None:
        return pb.Category.ValueType(UNKNOWN)
    return pb.Category.Value(f"CATEGORY_{category.name}")


def _modality(value: str) -> pb.Modality.ValueType:
    modality = named(Modality, MODALITY_WORDS, value)
    if modality is None:
        return pb.Modality.ValueType(UNKNOWN)
    return pb.Modality.Value(f"MODALITY_{modality.name}")


def _window(text: str) -> pb.WeeklyWindow | None:
    """`Mon 09:00-12:00`, or None when it does not read like that."""
    found = WINDOW.match(text.strip())
    if found is None:
        return None
    day, start, end = found.groups()
    weekday = dates.weekday_number(day) or dates.weekday_number(day[:3])
    if weekday is None:
        return None
    return pb.WeeklyWindow(weekday=weekday, start_time=start.zfill(5), end_time=end.zfill(5))


def parse(content: bytes) -> tuple[list[pb.Counselor], list[str]]:
    """The counselors of the file, and what is wrong with it, row by row
    (line numbers as a spreadsheet shows them)."""
    rows, problems = read_table(content, COLUMNS, OPTIONAL)
    if problems:
        return [], problems
    counselors: list[pb.Counselor] = []
    for n, (line, row) in enumerate(rows):
        if n >= MAX_ROWS:
            problems.append(
                tr("line {line}: more than {most} rows; split the file", line=line, most=MAX_ROWS)
            )
            break
        found: list[tuple[str, str]] = []  # (field, what is wrong with it)
        windows = []
        for part in _items(row["weekly_hours"]):
            window = _window(part)
            if window is None:
                found.append(
                    ("weekly_hours", tr("{value!r} is not like 'Mon 09:00-12:00'", value=part))
                )
            else:
                windows.append(window)
        try:
            limit = int(row["max_sessions_per_day"] or "0")
        except ValueError:
            limit = 0
        message = pb.Counselor(
            counselor_id=row["counselor_id"],
            provider_id=row["provider_id"],
            display_name=row["display_name"],
            specialties=[_category(s) for s in _items(row["specialties"])],
            modalities=[_modality(m) for m in _items(row["modalities"])],
            location=row["location"],
            max_sessions_per_day=limit,
            weekly_availability=windows,
            languages=_items(row["languages"]),
            video_link=row["video_link"],
        )
        try:
            checker = FieldChecker()
            validate(counselor_from_pb(message), checker)
            checker.raise_if_any()
        except InvalidArgument as error:
            # The checks' own words are the server's, in English (its API's).
            found += [(v.field.removeprefix("counselor."), v.description) for v in error.violations]
        problems += [
            tr("line {line}: {field}: {problem}", line=line, field=field, problem=problem)
            for field, problem in found
        ]
        if not found:
            counselors.append(message)
    ids = [c.counselor_id for c in counselors]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    problems += [tr("counselor_id {id} appears more than once", id=i) for i in twice]
    return counselors, problems


async def _upsert(address: str, counselors: Sequence[pb.Counselor]) -> tuple[int, int]:
    metadata = call_metadata()
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
    counselors, problems = parse(content)
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        print(
            tr("import: {count} problems; nothing was imported", count=len(problems)),
            file=sys.stderr,
        )
        return 1
    if args.dry_run:
        print(tr("{count} counselors would be created or replaced", count=len(counselors)))
        return 0
    try:
        created, replaced = asyncio.run(_upsert(args.address, counselors))
    except grpc.RpcError as error:
        print(f"import: {error.code().name}: {refusal_words(error)}", file=sys.stderr)
        return 1
    print(
        tr("{created} counselors created, {replaced} replaced", created=created, replaced=replaced)
    )
    return 0
