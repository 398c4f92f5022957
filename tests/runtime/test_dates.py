"""Dates as their readers write them: the Minguo year on Chinese forms,
weekday names, and the year boundaries where an off-by-one would show."""

from __future__ import annotations

from datetime import date, datetime

from services.runtime import dates


def test_minguo_years_across_boundaries() -> None:
    assert dates.roc_year(2026) == 115
    assert dates.roc_year(1912) == 1
    assert dates.roc_year_words(1912) == "1年"
    assert dates.roc_year_words(1911) == "民國前1年"  # no 民國0年
    assert dates.roc_year_words(1900) == "民國前12年"
    # New Year's Eve and Day fall in two Minguo years.
    assert dates.long_date(date(2026, 12, 31), "zh_TW") == "115年12月31日（四）"
    assert dates.long_date(date(2027, 1, 1), "zh_TW") == "116年1月1日（五）"
    assert dates.long_date(date(2024, 2, 29), "zh_TW") == "113年2月29日（四）"


def test_long_and_short_dates_in_both_languages() -> None:
    day = date(2026, 12, 3)
    assert dates.long_date(day, "zh_TW") == "115年12月3日（四）"
    assert dates.long_date(day, "en") == "Thu 3 Dec 2026"
    assert dates.short_date(day, "zh_TW") == "12月3日（四）"
    assert dates.short_date(day, "en") == "Thu 3 Dec"
    moment = datetime(2027, 4, 20, 13, 30)
    assert dates.day_and_time(moment, "zh_TW") == "4月20日（二）13:30"
    assert dates.day_and_time(moment, "en") == "Tue 20 Apr 13:30"
    assert dates.month_title(2027, 1, "zh_TW") == "116年1月"
    assert dates.month_title(2027, 1, "en") == "January 2027"


def test_weekday_names_monday_first() -> None:
    assert dates.weekday_headings("zh_TW") == ["一", "二", "三", "四", "五", "六", "日"]
    assert dates.weekday_headings("en") == ["Mo", "Tu", "We", "Th", "Fr", "Sa", "Su"]
    week = [date(2027, 1, 4 + n) for n in range(7)]  # Monday 4 January to Sunday 10
    assert "".join(dates.weekday(d, "zh_TW") for d in week) == "一二三四五六日"
    assert [dates.weekday(d, "en") for d in week][::6] == ["Mon", "Sun"]
