"""What the demo's steps share: the sample county, its people file, times
in Taipei, a case submitted as a frontend does, and a refusal or an amount
of hours written for the reader (in the demo's language: i18n)."""

from __future__ import annotations

import datetime as dt
import json
import unicodedata
from importlib import resources
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from eap.matcher.v1 import matcher_pb2 as mpb
from eap.matcher.v1 import matcher_pb2_grpc
from services.matcher.registry.counselors import CATEGORY_WORDS, Category
from services.rules.office_time import OFFICE_ZONE
from services.runtime import dates, i18n
from services.runtime.client_language import refusal_words
from services.runtime.fields import timestamp
from services.runtime.i18n import tr

CATEGORIES = {name.lower(): value for name, value in mpb.Category.items()}
MODALITIES = {name.lower(): value for name, value in mpb.Modality.items()}


def people_file() -> bytes:
    return resources.files("services.cli").joinpath("data/people.csv").read_bytes()


def load_county() -> dict[str, Any]:
    text = resources.files("services.cli").joinpath("data/sample_county.json").read_text()
    county: dict[str, Any] = json.loads(text)
    return county


def session(year: int, iso_week: int, weekday: int, hour: int) -> Timestamp:
    day = dt.date.fromisocalendar(year, iso_week, weekday)
    return timestamp(dt.datetime(day.year, day.month, day.day, hour, tzinfo=OFFICE_ZONE))


def refusal(error: grpc.aio.AioRpcError) -> str:
    """`CODE [RULE] words`: the code and rule as a program sees them, the
    words as the person reads them (the refusal's LocalizedMessage)."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    rule = error.code().name
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            rule = info.reason
    return f"{error.code().name} [{rule}] {refusal_words(error)}"


def pad(text: str, width: int) -> str:
    """`text` left-aligned in `width` terminal columns (a Chinese character takes two)."""
    wide = sum(unicodedata.east_asian_width(c) in "WF" for c in text)
    return text + " " * max(width - len(text) - wide, 0)


def categories(values: list[str]) -> str:
    """`psychological, family`, or in Chinese `心理、家庭` (the usual word of
    each, counselors.CATEGORY_WORDS)."""
    if i18n.current_language() != "zh_TW":
        return ", ".join(values)
    return "、".join(CATEGORY_WORDS[Category(v)][0] for v in values)


def hours(minutes: int) -> str:
    return tr("{hours} h", hours=f"{minutes / 60:g}")


def local(text: str) -> Timestamp:
    return timestamp(dt.datetime.fromisoformat(text).replace(tzinfo=OFFICE_ZONE))


def when(stamp: Timestamp) -> str:
    """`Tue 20 Apr 13:30`, `4月20日（二）13:30`: a session's time in Taipei."""
    return dates.day_and_time(stamp.ToDatetime(tzinfo=dt.UTC).astimezone(OFFICE_ZONE))


async def submit_case(matcher: matcher_pb2_grpc.MatcherServiceAsyncStub, c: Any) -> None:
    await matcher.SubmitCase(
        mpb.SubmitCaseRequest(
            case=mpb.Case(
                case_id=c["id"],
                employee_id=c["employee"],
                agency_id=c["agency"],
                staff_category=c["staff_category"],
                category=CATEGORIES[f"category_{c['category']}"],
                kind=mpb.CASE_KIND_GENERAL,
                sessions_wanted=c["sessions"],
                minutes=c["minutes"],
                modalities=[MODALITIES[f"modality_{m}"] for m in c["modalities"]],
                availability=[
                    mpb.TimeRange(start=local(a), end=local(b)) for a, b in c["available"]
                ],
                time_off=mpb.TIME_OFF_OFFICIAL_LEAVE,
                accepts_group=c.get("accepts_group", False),
            )
        )
    )


def say(text: str) -> None:
    """A line of a step, indented under its heading."""
    print(f"   {text}")
