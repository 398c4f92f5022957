"""Answering the survey a link opens, and the tenant's questions.

The answers are written in the transaction that uses the token up (the
invitation's one step, state.py), so that a link is answered once, or not
at all. Each answer gets the invitation's keys (week, provider, category)
and a random id, and nothing else: not the token, not the moment.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from services.matcher.survey import links, questions, state
from services.matcher.survey.questions import Question, QuestionKind
from services.matcher.survey.rows import AnswerRow, InvitationRow
from services.matcher.survey.state import InvitationState
from services.rules.codes import RuleCode
from services.rules.survey import MAX_SCORE, MAX_TEXT_CHARS, MIN_SCORE, valid_score
from services.runtime import clock
from services.runtime.errors import FailedPrecondition, NotFound
from services.runtime.fields import FieldChecker


@dataclass(frozen=True)
class Answer:
    question_id: str
    score: int = 0  # a score question's
    text: str = ""  # a text question's


@dataclass(frozen=True)
class OpenSurvey:
    questions: tuple[Question, ...]
    expires_at: datetime


def _refusal(found: InvitationState) -> Exception:
    if found is InvitationState.EXPIRED:
        return FailedPrecondition(
            RuleCode.SURVEY_EXPIRED, "survey", "SURVEY_EXPIRED: this link has closed"
        )
    # A used link leaves nothing behind (state.py): it is told as unknown.
    return NotFound("no such link, or it has been answered")


def check_answers(answers: Sequence[Answer], asked: Sequence[Question]) -> list[Answer]:
    """The answers worth keeping (a text left empty is no answer), or
    INVALID_ARGUMENT naming every wrong field."""
    kinds = {q.question_id: q.kind for q in asked}
    checker = FieldChecker()
    checker.require(bool(answers), "answers", "answer at least one question")
    seen: set[str] = set()
    kept = []
    for i, answer in enumerate(answers):
        field = f"answers[{i}]"
        kind = kinds.get(answer.question_id)
        if kind is None:
            checker.require(False, f"{field}.question_id", "not a question of this survey")
            continue
        checker.require(answer.question_id not in seen, f"{field}.question_id", "answered twice")
        seen.add(answer.question_id)
        if kind is QuestionKind.SCORE:
            checker.require(
                valid_score(answer.score), f"{field}.score", f"{MIN_SCORE} to {MAX_SCORE}"
            )
            checker.require(not answer.text, f"{field}.text", "this question takes a score")
        else:
            checker.require(answer.score == 0, f"{field}.score", "this question takes a text")
            checker.require(
                len(answer.text) <= MAX_TEXT_CHARS,
                f"{field}.text",
                f"at most {MAX_TEXT_CHARS} characters",
            )
            if not answer.text.strip():
                continue
        kept.append(answer)
    checker.raise_if_any()
    return kept


class Survey:
    def __init__(self, engine: AsyncEngine) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def open(self, token: str) -> OpenSurvey:
        """The questions an open link asks; NOT_FOUND or the rule that
        closed it otherwise."""
        async with self._sessions() as session:
            found, row = await state.state_of(session, links.token_hash(token), clock.now())
            if found is not InvitationState.OPEN or row is None:
                raise _refusal(found)
            return OpenSurvey(await questions.load(session), row.expires_at)

    async def submit(self, token: str, answers: Sequence[Answer]) -> int:
        """Keeps the answers and uses the link up, both or neither; how
        many answers were kept."""
        now = clock.now()
        async with self._sessions() as session, session.begin():
            found, row = await state.state_of(session, links.token_hash(token), now)
            if found is not InvitationState.OPEN or row is None:
                raise _refusal(found)
            kept = check_answers(answers, await questions.load(session))
            if not await state.use(session, row, now):
                # Another submission with this link got there first.
                raise _refusal(InvitationState.USED)
            session.add_all(_answer_row(row, answer) for answer in kept)
        return len(kept)

    async def set_questions(
        self, asked: Sequence[Question], checker: FieldChecker | None = None
    ) -> tuple[Question, ...]:
        """The tenant's questions become `asked` (none: the defaults), or
        INVALID_ARGUMENT naming every wrong field, `checker`'s too."""
        questions.check(asked, checker or FieldChecker())
        async with self._sessions() as session, session.begin():
            await questions.replace(session, asked)
            return await questions.load(session)


def _answer_row(invitation: InvitationRow, answer: Answer) -> AnswerRow:
    return AnswerRow(
        answer_id=uuid.uuid4().hex,
        iso_week=invitation.iso_week,
        provider_id=invitation.provider_id,
        category=invitation.category,
        question_id=answer.question_id,
        score=answer.score or None,
        text=answer.text.strip() or None,
    )
