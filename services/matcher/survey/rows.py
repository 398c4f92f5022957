"""The satisfaction survey's tables (migration 0021). What each keeps, and
what it leaves out so that an answer cannot be joined to a person or a
session, is the package's docstring (survey/__init__.py).

The invitations and the answers are SQLite tables WITHOUT
ROWID: an ordinary SQLite table numbers its rows in insertion order, and
that order (or the gap a deleted row leaves) would line an invitation up
with the session completed, or an answer with the invitation used, at the
same moment. Without a rowid the rows are kept in the order of their
primary keys, which are random.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from services.matcher.orm import Base
from services.runtime.columns import UtcDateTime

NO_ROWID = {"sqlite_with_rowid": False}


class InvitationRow(Base):
    """An open link: the sha256 of its token and the keys its answers will
    carry. No employee, booking or case; no moment but the week's end it
    expires at. Deleted when it is used, leaving nothing behind: a used
    token is as unknown as one never made (state.py says why)."""

    __tablename__ = "matcher_survey_invitations"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    iso_week: Mapped[str] = mapped_column(String(8))  # the session's: "2027-W10"
    provider_id: Mapped[str] = mapped_column(String(64))
    category: Mapped[str] = mapped_column(String(32))  # the case's category
    # The same for every session of its week (rules/survey.py), so that it
    # says nothing finer than the week.
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())

    __table_args__ = NO_ROWID


class AnswerRow(Base):
    """One answer to one question: a random id, the week, provider and
    category of the session it is about, and a score or a text. Nothing
    ties an answer to the invitation it used. (On PostgreSQL the answers of
    one submission share a transaction id: they can be told to be one
    person's, never whose.)"""

    __tablename__ = "matcher_survey_answers"
    answer_id: Mapped[str] = mapped_column(String(32), primary_key=True)  # random
    iso_week: Mapped[str] = mapped_column(String(8))
    provider_id: Mapped[str] = mapped_column(String(64))
    category: Mapped[str] = mapped_column(String(32))
    question_id: Mapped[str] = mapped_column(String(32))
    score: Mapped[int | None] = mapped_column(Integer, nullable=True)  # 1-5
    text: Mapped[str | None] = mapped_column(String(1000), nullable=True)

    __table_args__ = NO_ROWID


class QuestionRow(Base):
    """A question of the tenant's own survey; none: the defaults
    (survey/questions.py)."""

    __tablename__ = "matcher_survey_questions"
    question_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(8))  # questions.QuestionKind
    prompt: Mapped[str] = mapped_column(String(300))  # as the tenant wrote it
