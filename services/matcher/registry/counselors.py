"""Counselors as the matcher sees them: what they offer, when they work,
and the leave and extra hours that change it. Free of storage: the
registry (registry.py) keeps them."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from enum import StrEnum
from typing import TypeVar

from services.runtime.fields import FieldChecker


class Category(StrEnum):
    PSYCHOLOGICAL = "psychological"
    LEGAL = "legal"
    FINANCIAL = "financial"
    FAMILY = "family"
    HEALTH = "health"
    MANAGEMENT = "management"


class Modality(StrEnum):
    IN_PERSON = "in_person"
    VIDEO = "video"
    PHONE = "phone"


# What Taiwan's spreadsheets call each category and modality: the CSV
# imports read these as well as the values themselves (`named`).
CATEGORY_WORDS: dict[Category, tuple[str, ...]] = {
    Category.PSYCHOLOGICAL: ("心理", "心理諮商"),
    Category.LEGAL: ("法律", "法律諮詢"),
    Category.FINANCIAL: ("財務", "財務諮詢", "理財"),
    Category.FAMILY: ("家庭", "家庭諮商", "婚姻家庭"),
    Category.HEALTH: ("健康", "醫療", "健康諮詢"),
    Category.MANAGEMENT: ("管理", "管理諮詢"),
}
MODALITY_WORDS: dict[Modality, tuple[str, ...]] = {
    Modality.IN_PERSON: ("面談", "實體", "面對面", "當面"),
    Modality.VIDEO: ("視訊", "線上視訊"),
    Modality.PHONE: ("電話",),
}


E = TypeVar("E", bound=StrEnum)


def named(kind: type[E], words: dict[E, tuple[str, ...]], word: str) -> E | None:
    """The member of `kind` that `word` names, by its value (any case, `-`
    or a space for `_`) or one of its `words`; None for anything else."""
    wanted = word.strip().lower().replace("-", "_").replace(" ", "_")
    for member in kind:
        if wanted == member.value or word.strip() in words.get(member, ()):
            return member
    return None


@dataclass(frozen=True)
class WeeklyWindow:
    weekday: int  # ISO: 1 Monday ... 7 Sunday
    start: time
    end: time


class ExceptionKind(StrEnum):
    LEAVE = "leave"  # the range is taken out of the counselor's hours
    EXTRA = "extra"  # the range is added, holiday or not


@dataclass(frozen=True)
class AvailabilityException:
    kind: ExceptionKind
    start: datetime  # timezone-aware
    end: datetime
    note: str = ""


MAX_EXCEPTIONS = 200
LONGEST_EXCEPTION = timedelta(days=31)


@dataclass(frozen=True)
class Counselor:
    counselor_id: str
    provider_id: str
    display_name: str
    specialties: tuple[Category, ...]
    modalities: tuple[Modality, ...]
    location: str
    max_sessions_per_day: int
    weekly_availability: tuple[WeeklyWindow, ...]
    exceptions: tuple[AvailabilityException, ...] = ()
    # The languages the counselor holds sessions in, as BCP 47 tags ("zh-TW",
    # "nan" for Taiwanese, "hak" for Hakka, "en"); empty where not recorded.
    languages: tuple[str, ...] = ()
    # The address of the counselor's video room, for video sessions (an
    # https:// link of the provider's service, never a personal account).
    video_link: str = ""


LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*")
MAX_LANGUAGES = 10


def validate(counselor: Counselor, checker: FieldChecker, prefix: str = "counselor") -> None:
    checker.identifier(counselor.counselor_id, f"{prefix}.counselor_id")
    checker.identifier(counselor.provider_id, f"{prefix}.provider_id")
    checker.require(
        0 < len(counselor.display_name) <= 200, f"{prefix}.display_name", "1-200 characters"
    )
    checker.require(bool(counselor.specialties), f"{prefix}.specialties", "at least one")
    checker.require(bool(counselor.modalities), f"{prefix}.modalities", "at least one")
    checker.require(len(counselor.location) <= 200, f"{prefix}.location", "at most 200 characters")
    checker.require(
        len(counselor.languages) <= MAX_LANGUAGES,
        f"{prefix}.languages",
        f"at most {MAX_LANGUAGES}",
    )
    for n, language in enumerate(counselor.languages):
        checker.require(
            LANGUAGE_TAG.fullmatch(language) is not None,
            f"{prefix}.languages[{n}]",
            'a language tag, e.g. "zh-TW", "nan", "en"',
        )
    checker.require(
        not counselor.video_link
        or (counselor.video_link.startswith("https://") and len(counselor.video_link) <= 500),
        f"{prefix}.video_link",
        "an https:// link, at most 500 characters",
    )
    checker.require(
        1 <= counselor.max_sessions_per_day <= 12, f"{prefix}.max_sessions_per_day", "1 to 12"
    )
    checker.require(
        len(counselor.weekly_availability) <= 50,
        f"{prefix}.weekly_availability",
        "at most 50 windows",
    )
    checker.require(
        len(counselor.exceptions) <= MAX_EXCEPTIONS,
        f"{prefix}.exceptions",
        f"at most {MAX_EXCEPTIONS}",
    )
    for n, exception in enumerate(counselor.exceptions):
        field = f"{prefix}.exceptions[{n}]"
        checker.require(exception.start < exception.end, f"{field}.range.end", "after start")
        checker.require(
            exception.end - exception.start <= LONGEST_EXCEPTION,
            f"{field}.range",
            "at most 31 days long",
        )
        checker.text(exception.note, f"{field}.note", 200)
    by_day: dict[int, list[WeeklyWindow]] = {}
    for n, window in enumerate(counselor.weekly_availability):
        field = f"{prefix}.weekly_availability[{n}]"
        checker.require(1 <= window.weekday <= 7, f"{field}.weekday", "1 (Monday) to 7 (Sunday)")
        checker.require(window.start < window.end, f"{field}.end_time", "after start_time")
        by_day.setdefault(window.weekday, []).append(window)
    for windows in by_day.values():
        windows.sort(key=lambda w: w.start)
        for earlier, later in itertools.pairwise(windows):
            if later.start < earlier.end:
                n = counselor.weekly_availability.index(later)
                checker.require(
                    False,
                    f"{prefix}.weekly_availability[{n}]",
                    "overlaps another window on the same weekday",
                )
