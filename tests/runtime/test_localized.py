"""Words in the reader's language (issue 15, item 5): every refusal
carries a google.rpc.LocalizedMessage, Traditional Chinese unless the
caller's accept-language asks for English; and every word marked for
people (N_ and tr, services/runtime/i18n.py) has its zh_TW: the catalogs
are up to date with the code, and nothing marked escapes extraction."""

from __future__ import annotations

import ast
import re
import shlex
import string
import subprocess
import sys
from pathlib import Path

import grpc
from babel.messages.pofile import read_po

from eap.matcher.v1 import matcher_pb2 as pb
from services.rules.codes import RuleCode
from services.rules.explanations import EXPLANATIONS
from services.runtime import i18n
from tests.conftest import Suite
from tests.matcher.test_booking import book, case, local, slots, submit
from tests.quota.test_rpcs import details, refused

ROOT = Path(__file__).resolve().parents[2]
LOCALE = ROOT / "services/runtime/locale"
MARKS = ("N_", "tr")  # what make messages extracts (i18n.py)
CHINESE = re.compile("[\u4e00-\u9fff]")


def _extracted(tmp_path: Path) -> set[str]:
    """The message ids `make messages` would write now: its own pybabel
    extract command, read from the Makefile, into a scratch template."""
    recipe = next(
        line.strip()
        for line in (ROOT / "Makefile").read_text().splitlines()
        if "pybabel extract" in line
    )
    command = shlex.split(recipe.replace("$(BIN)/", str(Path(sys.executable).parent) + "/"))
    out = command.index("-o") + 1
    command[out] = str(tmp_path / "eap.pot")
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    return _ids(tmp_path / "eap.pot")


def _ids(path: Path) -> set[str]:
    with path.open("rb") as file:
        return {str(m.id) for m in read_po(file) if m.id}


def _placeholders(text: str) -> list[str]:
    return sorted(f or "" for _, f, _, _ in string.Formatter().parse(text) if f is not None)


def test_the_catalogs_hold_every_marked_message_in_traditional_chinese(tmp_path: Path) -> None:
    marked = _extracted(tmp_path)
    assert set(EXPLANATIONS.values()) | set(i18n.REFUSALS.values()) <= marked
    # The template is what the code marks: run `make messages` after marking.
    assert _ids(LOCALE / "eap.pot") == marked
    untranslated = []
    for message in sorted(marked):
        chinese = i18n.translate(message, "zh_TW")
        if chinese == message or not CHINESE.search(chinese):
            untranslated.append(message)
            continue
        # A translation fills the same {placeholders} (or .format fails).
        assert _placeholders(chinese) == _placeholders(message), message
        assert i18n.translate(message, "en") == message
    assert not untranslated, f"no zh_TW msgstr in {LOCALE}/zh_TW: {untranslated}"
    # Every rule a refusal can name is explained.
    refusing = set(RuleCode) - {RuleCode.OUTCOMPETED}
    assert refusing <= set(EXPLANATIONS)


def test_nothing_marked_escapes_extraction(tmp_path: Path) -> None:
    """Babel reads no call inside an f-string (before Python 3.12), and
    joins both arms of `tr("a" if x else "b")` into one id: each literal
    given to N_ or tr must be one the extraction found."""
    marked = _extracted(tmp_path)
    missed = []
    for path in sorted((ROOT / "services").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            if node.func.id not in MARKS or not node.args:
                continue
            first = node.args[0]
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            if isinstance(first, ast.IfExp | ast.JoinedStr | ast.BinOp):
                missed.append(f"{where}: mark each literal on its own (N_), not an expression")
            elif isinstance(first, ast.Constant) and first.value not in marked:
                missed.append(f"{where}: {first.value!r} is not extracted")
    assert not missed, missed


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
    week = local(first.start).isocalendar()[:2]
    same_week = next(
        s
        for s in found
        if s.start.seconds - first.start.seconds >= 7200
        and local(s.start).isocalendar()[:2] == week
    )
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
