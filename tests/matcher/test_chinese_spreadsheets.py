"""The counselor and people imports read spreadsheets as Taiwan's offices
keep them: Chinese headers (諮商師編號, 員工編號 ...), Chinese values (心理,
面談, 週一), full-width forms from a Chinese input method, Big5 or UTF-8."""

from __future__ import annotations

from eap.matcher.v1 import matcher_pb2 as pb
from services.matcher.registry import counselor_csv, people_csv
from services.matcher.registry.counselors import (
    CATEGORY_WORDS,
    MODALITY_WORDS,
    Category,
    Modality,
    named,
)
from services.runtime import i18n

COUNSELORS_BIG5 = (
    "諮商師編號,特約機構編號,姓名,專長,方式,地點,每日上限,每週時段,備註\n"
    "C-LIN,mind-care-assoc,林美華,心理、家庭,面談、視訊,屏東縣政府3樓,5,"
    '"週一 09:00-12:00；週三 13:30~17:00",資深\n'
    "C-WU,harbour-law,吳志明,法律,電話,,3,星期五 14:00-16:00,\n"
)


def _full_width(text: str) -> str:
    """ASCII digits and punctuation as a Chinese input method types them."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def test_counselors_from_a_big5_file_with_chinese_headers_and_values() -> None:
    counselors, problems = counselor_csv.parse(COUNSELORS_BIG5.encode("big5"))
    assert problems == []
    lin, wu = counselors
    assert (lin.counselor_id, lin.provider_id, lin.display_name) == (
        "C-LIN",
        "mind-care-assoc",
        "林美華",
    )
    assert list(lin.specialties) == [pb.CATEGORY_PSYCHOLOGICAL, pb.CATEGORY_FAMILY]
    assert list(lin.modalities) == [pb.MODALITY_IN_PERSON, pb.MODALITY_VIDEO]
    assert [(w.weekday, w.start_time, w.end_time) for w in lin.weekly_availability] == [
        (1, "09:00", "12:00"),
        (3, "13:30", "17:00"),
    ]
    assert (list(wu.specialties), list(wu.modalities)) == ([pb.CATEGORY_LEGAL], [pb.MODALITY_PHONE])
    assert [(w.weekday, w.start_time) for w in wu.weekly_availability] == [(5, "14:00")]


def test_counselors_from_utf8_with_full_width_forms_and_english_mixed_in() -> None:
    text = (
        "\ufeff諮商師編號,特約機構編號,display_name,專長,方式,地點,每日上限,每週時段\n"
        # Full-width digits, colon, tilde and semicolon, as a Chinese input method types them.
        f"C-CHEN,south-clinic,陳怡君,financial；健康,實體;video,,{_full_width('4')},"
        f"週二 {_full_width('09:00~12:00;')}禮拜四 9:00-11:30\n"
    )
    (chen,), problems = counselor_csv.parse(text.encode("utf-8"))
    assert problems == []
    assert list(chen.specialties) == [pb.CATEGORY_FINANCIAL, pb.CATEGORY_HEALTH]
    assert list(chen.modalities) == [pb.MODALITY_IN_PERSON, pb.MODALITY_VIDEO]
    assert chen.max_sessions_per_day == 4
    assert [(w.weekday, w.start_time, w.end_time) for w in chen.weekly_availability] == [
        (2, "09:00", "12:00"),
        (4, "09:00", "11:30"),
    ]


def test_counselors_languages_and_video_room_where_the_office_keeps_them() -> None:
    text = (
        "諮商師編號,特約機構編號,姓名,專長,方式,地點,每日上限,每週時段,語言,視訊連結\n"
        "C-LIN,mind-care-assoc,林美華,心理,視訊,,5,週一 09:00-12:00,"
        "zh-TW、nan,https://meet.mind-care.example/lin\n"
    )
    (lin,), problems = counselor_csv.parse(text.encode("utf-8"))
    assert problems == []
    assert (list(lin.languages), lin.video_link) == (
        ["zh-TW", "nan"],
        "https://meet.mind-care.example/lin",
    )
    bad = text.replace("https://", "http://")
    assert [p for p in counselor_csv.parse(bad.encode("utf-8"))[1] if "video_link" in p]


def test_wrong_chinese_rows_are_named_by_line_in_the_reader_s_language() -> None:
    text = (
        "諮商師編號,特約機構編號,姓名,專長,方式,地點,每日上限,每週時段\n"
        "C-LIN,mind-care-assoc,林美華,占卜,面談,,5,週一 09:00-12:00\n"
        "C-WU,harbour-law,吳志明,法律,電話,,3,某天 09:00-12:00\n"
    )
    with i18n.speaking("en"):
        _, english = counselor_csv.parse(text.encode("utf-8"))
    assert "line 2: specialties[0]: a known category" in english
    assert "line 3: weekly_hours: '某天 09:00-12:00' is not like 'Mon 09:00-12:00'" in english
    with i18n.speaking("zh_TW"):
        _, chinese = counselor_csv.parse(text.encode("utf-8"))
        _, twice = counselor_csv.parse("姓名,display_name\n林美華,林美華\n".encode())
    assert "第2行：specialties[0]：a known category" in chinese
    assert any(p.startswith("第3行：weekly_hours：'某天 09:00-12:00' 的格式應如") for p in chinese)
    assert twice[0] == "第1行：有兩個欄位都是 display_name (姓名)"
    assert twice[1].startswith("第1行：缺少欄位：counselor_id (諮商師編號), provider_id")


def test_people_from_chinese_exports_in_big5_and_utf8() -> None:
    text = "員工編號,姓名,機關代碼,人員類別\nE1,王小明,PT-HR,official\nE2,林美玲,PT-EDU,teacher\n"
    for content in (text.encode("big5"), ("\ufeff" + text).encode("utf-8")):
        people, problems = people_csv.parse(content)
        assert problems == []
        assert [(p.employee_id, p.agency_id, p.staff_category) for p in people] == [
            ("E1", "PT-HR", "official"),
            ("E2", "PT-EDU", "teacher"),
        ]
        assert "王小明" not in str(people)  # names are not read into the directory
    with i18n.speaking("zh_TW"):
        _, problems = people_csv.parse("員工編號,機關\nE1,PT-HR\n".encode("big5"))
    assert problems == ["第1行：缺少欄位：staff_category (人員類別)"]


def test_each_category_and_modality_has_its_chinese_words_once() -> None:
    assert set(CATEGORY_WORDS) == set(Category) and set(MODALITY_WORDS) == set(Modality)
    for words in (CATEGORY_WORDS, MODALITY_WORDS):
        said = [w for ws in words.values() for w in ws]
        assert len(said) == len(set(said)), said
    for category, its in CATEGORY_WORDS.items():
        assert all(named(Category, CATEGORY_WORDS, w) is category for w in its)
        assert named(Category, CATEGORY_WORDS, category.value.upper()) is category
    for modality, its in MODALITY_WORDS.items():
        assert all(named(Modality, MODALITY_WORDS, w) is modality for w in its)
    assert named(Modality, MODALITY_WORDS, "in-person") is Modality.IN_PERSON
    assert named(Category, CATEGORY_WORDS, "占卜") is None
