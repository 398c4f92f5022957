"""Refusals in the reader's language (issue 15, item 5): every refusal
carries a google.rpc.LocalizedMessage, Traditional Chinese unless the
caller's accept-language asks for English; every word has its zh_TW."""

from __future__ import annotations

from pathlib import Path

import grpc
from babel.messages.extract import extract_from_dir

from eap.matcher.v1 import matcher_pb2 as pb
from services.rules.codes import RuleCode
from services.rules.explanations import EXPLANATIONS
from services.runtime import i18n
from tests.conftest import Suite
from tests.matcher.test_booking import book, case, slots, submit
from tests.quota.test_rpcs import details, refused

ROOT = Path(__file__).resolve().parents[2]


def test_every_marked_message_has_a_traditional_chinese_translation() -> None:
    marked = {
        message
        for _, _, message, _, _ in extract_from_dir(
            str(ROOT / "services"), method_map=[("**.py", "python")], keywords={"N_": None}
        )
    }
    assert set(EXPLANATIONS.values()) | set(i18n.REFUSALS.values()) <= marked
    for message in marked:
        chinese = i18n.translate(message, "zh_TW")
        assert chinese != message and any("\u4e00" <= ch <= "\u9fff" for ch in chinese), message
        assert i18n.translate(message, "en") == message
    # Every rule a refusal can name is explained.
    refusing = set(RuleCode) - {RuleCode.OUTCOMPETED}
    assert refusing <= set(EXPLANATIONS)


def test_the_language_asked_for_wins_and_taiwan_is_the_default() -> None:
    for asked, language in (
        (None, "zh_TW"),
        ("en", "en"),
        ("en-US,en;q=0.9", "en"),
        ("zh-Hant-TW", "zh_TW"),
        ("zh-TW;q=0.5, en;q=0.8", "en"),
        ("zh-CN, en;q=0.3", "en"),  # simplified Chinese is not ours: English then
        ("fr, de", "zh_TW"),
        ("en;q=0", "zh_TW"),
        ("garbage;;", "zh_TW"),
    ):
        assert i18n.negotiate(asked) == language, asked


async def test_a_weekly_limit_refusal_says_why_in_chinese(suite: Suite) -> None:
    await submit(suite, case())
    found = await slots(suite)
    first = await book(suite, found[0])
    same_week = next(s for s in found if s.start.seconds - first.start.seconds >= 7200)
    request = pb.HoldSlotRequest(
        case_id="K1", counselor_id=same_week.counselor_id, start=same_week.start
    )
    error = await refused(suite.matcher.HoldSlot(request))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    words = details(error)["LocalizedMessage"]
    assert (words.locale, words.message) == ("zh-TW", "每人每週以一次諮商為限：該週已有一次諮商。")  # type: ignore[attr-defined]
    english = await refused(suite.matcher.HoldSlot(request, metadata=(("accept-language", "en"),)))
    assert details(english)["LocalizedMessage"].message.startswith("One session a week")  # type: ignore[attr-defined]


async def test_field_refusals_name_the_fields_in_chinese(suite: Suite) -> None:
    error = await refused(suite.matcher.SubmitCase(pb.SubmitCaseRequest(case=case(minutes=45))))
    words = details(error)["LocalizedMessage"]
    assert words.message == "以下欄位有誤：case.minutes。"  # type: ignore[attr-defined]
    missing = await refused(suite.matcher.GetCase(pb.GetCaseRequest(case_id="K404")))
    assert details(missing)["LocalizedMessage"].message == "找不到您要的資料。"  # type: ignore[attr-defined]
