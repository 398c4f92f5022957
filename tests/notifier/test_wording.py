"""What a notification says: the time, the place or the link, in the
reader's language, and nothing that tells an onlooker what it is about."""

from __future__ import annotations

import datetime as dt

import pytest

from services.matcher.notices.writer import NoticeKind
from services.notifier.wording import (
    NEVER_SHOWN,
    SUBJECTS,
    DayItem,
    Notice,
    calendar_title,
    compose,
    compose_day,
)
from services.runtime.i18n import LANGUAGES

TAIPEI = dt.timezone(dt.timedelta(hours=8))
START = dt.datetime(2027, 3, 9, 10, 0, tzinfo=TAIPEI)


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", list(SUBJECTS))  # every kind about one session
@pytest.mark.parametrize("modality", ["in_person", "video", "phone"])
def test_no_subject_or_preview_says_what_the_appointment_is_about(
    language: str, kind: NoticeKind, modality: str
) -> None:
    notice = Notice(
        kind,
        START,
        modality,
        place="Pingtung office 3F",
        video_link="https://meet.example/abc",
        hold_until=START - dt.timedelta(days=1),
        page="https://eap.county.example/",
    )
    words = compose(notice, language)
    for shown in (words.subject, words.preview, calendar_title(language)):
        assert not [w for w in NEVER_SHOWN if w in shown.lower()], shown


def test_the_words_are_traditional_chinese_with_the_roc_calendars_weekday() -> None:
    words = compose(Notice(NoticeKind.CONFIRMED, START, "in_person", place="三樓"), "zh_TW")
    assert words.subject == "您的預約已確認"
    assert words.preview == "您的預約時間為3月9日（二）10:00。"
    assert "地點：三樓" in words.text and "方式：面談" in words.text
    link = "https://m.example/x"
    video = compose(Notice(NoticeKind.REMINDER, START, "video", video_link=link), "en")
    assert video.subject == "Reminder: your appointment on Tue 9 Mar 10:00"
    assert "Video link: https://m.example/x" in video.text


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_counselors_day_lists_times_and_ways_and_nothing_else(language: str) -> None:
    items = [
        DayItem(START, 60, "in_person", "三樓"),
        DayItem(START + dt.timedelta(hours=2), 90, "video", "https://m.example/x"),
    ]
    words = compose_day(items, "https://eap.county.example/", language)
    assert not [w for w in NEVER_SHOWN if w in words.subject.lower() + words.preview.lower()]
    if language == "zh_TW":
        assert words.subject == "您3月9日（二）的預約"
        assert words.preview == "您在3月9日（二）有 2 個預約："
        assert "10:00-11:00 面談 三樓" in words.text
        assert "12:00-13:30 視訊 https://m.example/x" in words.text


def test_a_survey_notice_brings_its_link_and_says_nothing_of_what_it_was() -> None:
    closes = dt.datetime(2027, 4, 12, 0, 0, tzinfo=TAIPEI)
    notice = Notice(
        NoticeKind.SURVEY,
        START,
        "video",
        hold_until=closes,
        page="https://eap.county.example/book/",
        survey_token="pingtung.s3cr3t",
    )
    words = compose(notice, "zh_TW")
    assert words.subject == "關於您3月9日（二）預約的簡短問卷"
    assert words.preview == "感謝您3月9日（二）10:00的預約。這次的感受如何？"
    assert "https://eap.county.example/book/survey.html#token=pingtung.s3cr3t" in words.text
    assert "4月12日" in words.text and "不具名" in words.text
    english = compose(notice, "en")
    assert english.subject == "A short question about your appointment on Tue 9 Mar"
    for shown in (words.text, english.text):
        assert not [w for w in NEVER_SHOWN if w in shown.lower()], shown
