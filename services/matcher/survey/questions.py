"""The survey's questions: the tenant's own, or the defaults, modelled on
common EAP satisfaction questionnaires (how helpful the session was,
whether one would recommend the programme, how easy booking was, each
1-5, and a free text)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.matcher.survey.rows import QuestionRow
from services.rules.survey import MAX_QUESTIONS
from services.runtime.fields import FieldChecker
from services.runtime.i18n import N_, tr

QUESTION_ID = re.compile(r"[a-z0-9_]{1,32}")
MAX_PROMPT_CHARS = 300


class QuestionKind(StrEnum):
    SCORE = "score"  # 1 (not at all) to 5 (very much)
    TEXT = "text"  # free text, optional


@dataclass(frozen=True)
class Question:
    question_id: str
    kind: QuestionKind
    prompt: str  # a message id for the defaults; the tenant's words otherwise
    default: bool = False

    def shown(self) -> str:
        """The prompt in the reader's language (a tenant's own as written)."""
        return tr(self.prompt) if self.default else self.prompt


DEFAULTS = (
    Question("helpfulness", QuestionKind.SCORE, N_("How helpful was the session to you?"), True),
    Question(
        "recommend",
        QuestionKind.SCORE,
        N_("How likely are you to recommend the programme to a colleague?"),
        True,
    ),
    Question(
        "ease_of_booking", QuestionKind.SCORE, N_("How easy was it to book the session?"), True
    ),
    Question(
        "comments", QuestionKind.TEXT, N_("Is there anything else you would like to tell us?"), True
    ),
)


async def load(session: AsyncSession) -> tuple[Question, ...]:
    rows = (await session.scalars(select(QuestionRow).order_by(QuestionRow.position))).all()
    if not rows:
        return DEFAULTS
    return tuple(Question(r.question_id, QuestionKind(r.kind), r.prompt) for r in rows)


async def replace(session: AsyncSession, questions: Sequence[Question]) -> None:
    """The tenant's questions become `questions`; none: the defaults again."""
    await session.execute(delete(QuestionRow))
    session.add_all(
        QuestionRow(question_id=q.question_id, position=i, kind=q.kind.value, prompt=q.prompt)
        for i, q in enumerate(questions)
    )


def check(questions: Sequence[Question], checker: FieldChecker) -> None:
    """INVALID_ARGUMENT naming every wrong field of a tenant's questions
    (and whatever `checker` noted before)."""
    checker.require(len(questions) <= MAX_QUESTIONS, "questions", f"at most {MAX_QUESTIONS}")
    seen: set[str] = set()
    for i, question in enumerate(questions):
        field = f"questions[{i}]"
        checker.require(
            QUESTION_ID.fullmatch(question.question_id) is not None,
            f"{field}.question_id",
            "1-32 lowercase letters, digits or _",
        )
        checker.require(question.question_id not in seen, f"{field}.question_id", "used twice")
        seen.add(question.question_id)
        checker.require(
            0 < len(question.prompt.strip()) <= MAX_PROMPT_CHARS,
            f"{field}.prompt",
            f"1 to {MAX_PROMPT_CHARS} characters",
        )
    checker.raise_if_any()
