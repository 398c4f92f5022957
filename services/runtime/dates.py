"""Dates written the way their readers write them, in one place.

Traditional Chinese follows Taiwan's government forms: the Minguo (民國)
year, which is the Gregorian year less 1911 (2026 is 115年; 1912 is 1年,
and years before it are counted back as 民國前N年), and the weekday as one
character in full-width parentheses: `115年12月3日（四）`. English is
`Thu 3 Dec 2026`. Weekday and month names come from Babel's CLDR data
(zh_Hant_TW, en); Babel has no Minguo calendar, hence `roc_year`.
"""

from __future__ import annotations

from datetime import date, datetime

from babel.dates import format_date, get_day_names

from services.runtime.i18n import current_language

MINGUO_OFFSET = 1911  # 1912, the first year of the Republic, is 民國1年
_LOCALES = {"zh_TW": "zh_Hant_TW", "en": "en"}


def roc_year(year: int) -> int:
    """The Minguo year of a Gregorian year: 2026 -> 115. Zero or less
    before 1912 (see `roc_year_words`)."""
    return year - MINGUO_OFFSET


def roc_year_words(year: int) -> str:
    """`115年`, or for a year before 1912 `民國前1年` (1911)."""
    minguo = roc_year(year)
    return f"{minguo}年" if minguo > 0 else f"民國前{1 - minguo}年"


def weekday(day: date, language: str | None = None) -> str:
    """`四` or `Thu`."""
    language = language or current_language()
    if language == "zh_TW":
        return str(get_day_names("short", locale="zh_Hant_TW")[day.weekday()])
    return str(get_day_names("abbreviated", locale=_LOCALES[language])[day.weekday()])


def weekday_headings(language: str | None = None) -> list[str]:
    """A month grid's column heads, Monday first: `一 ... 日` or `Mo ... Su`."""
    names = get_day_names("short", locale=_LOCALES[language or current_language()])
    return [str(names[n]) for n in range(7)]


def long_date(day: date, language: str | None = None) -> str:
    """`115年12月3日（四）` or `Thu 3 Dec 2026`: a report's dates."""
    language = language or current_language()
    if language == "zh_TW":
        return f"{roc_year_words(day.year)}{day.month}月{day.day}日（{weekday(day, language)}）"
    return str(format_date(day, "EEE d MMM y", locale=_LOCALES[language]))


def short_date(day: date, language: str | None = None) -> str:
    """`12月3日（四）` or `Thu 3 Dec`: a date whose year the page names."""
    language = language or current_language()
    if language == "zh_TW":
        return f"{day.month}月{day.day}日（{weekday(day, language)}）"
    return str(format_date(day, "EEE d MMM", locale=_LOCALES[language]))


def day_and_time(moment: datetime, language: str | None = None) -> str:
    """`4月20日（二）13:30` or `Tue 20 Apr 13:30`."""
    language = language or current_language()
    gap = "" if language == "zh_TW" else " "
    return f"{short_date(moment.date(), language)}{gap}{moment:%H:%M}"


def month_title(year: int, month: int, language: str | None = None) -> str:
    """`116年1月` or `January 2027`: a month grid's heading."""
    language = language or current_language()
    if language == "zh_TW":
        return f"{roc_year_words(year)}{month}月"
    return str(format_date(date(year, month, 1), "MMMM y", locale=_LOCALES[language]))


def weekday_number(word: str) -> int | None:
    """The ISO weekday (1 Monday ... 7 Sunday) a spreadsheet's word names:
    `Mon`, `monday`, `週一`, `星期一`, `周一`, `禮拜一`, `一`; Sunday also
    `星期天`, `禮拜天`. None for anything else."""
    return _WEEKDAY_WORDS.get(word.strip().lower())


def _weekday_words() -> dict[str, int]:
    words: dict[str, int] = {}
    for width in ("wide", "abbreviated"):
        for n, name in get_day_names(width, locale="en").items():
            words[str(name).lower()] = n + 1
    for n, name in get_day_names("short", locale="zh_Hant_TW").items():
        one = str(name)  # 一 ... 日
        for say in ("日", "天") if one == "日" else (one,):
            for before in ("", "週", "周", "星期", "禮拜"):
                words[before + say] = n + 1
    return words


_WEEKDAY_WORDS = _weekday_words()
