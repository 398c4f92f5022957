"""The survey's results, in aggregate only, through the disclosure rule
(services/rules/disclosure.py): the one way answers leave the database.

For each question, a table of providers by categories, with its margins:
each provider over all its categories (category ALL), each category over
all providers (provider ALL), and the whole (both ALL). A cell standing
for fewer than MIN_CELL_PEOPLE responses is suppressed: no count, no mean.
And since a margin minus the cells shown beside it would give a
suppressed cell back (its count, and its mean by the sums), suppression is
complementary: in every row and column (and in the margins' own row and
column), the hidden figures are none, or at least two, and when the total
is shown the hidden cells together stand for at least MIN_CELL_PEOPLE
responses, so that neither one of them nor their sum gives a small group
away. What is hidden next is the smallest figure shown in that line (the
total itself when no cell is left). Repeated until every line holds.

A response is one session's survey, not one person: the answers cannot
tell (that is the point), so a person with several sessions of one
provider and category in the period may stand for several responses of a
cell. The threshold counts responses for want of people.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.matcher.survey.rows import AnswerRow
from services.rules.disclosure import MIN_CELL_PEOPLE

ALL = ""  # a margin's provider or category: all of them
WEEK = re.compile(r"\d{4}-W\d{2}")

Key = tuple[str, str]  # (provider_id, category)


@dataclass(frozen=True)
class SatisfactionCell:
    provider_id: str  # ALL in a category's margin and the total
    category: str  # ALL in a provider's margin and the total
    question_id: str
    responses: int | None  # None when suppressed
    mean: float | None  # None when suppressed, and for a free-text question
    suppressed: bool


@dataclass
class _Figure:
    responses: int
    score_sum: int | None  # None: a free-text question
    hidden: bool = False


async def satisfaction(
    engine_or_sessions: AsyncEngine | async_sessionmaker[AsyncSession],
    first_week: str,
    last_week: str,
) -> list[SatisfactionCell]:
    """The cells of every question answered in the ISO weeks from
    `first_week` to `last_week` ("2027-W01", both included), margins
    included, ordered by question, provider and category (ALL first)."""
    for week in (first_week, last_week):
        if WEEK.fullmatch(week) is None:
            raise ValueError(f"an ISO week is written like 2027-W01, not {week!r}")
    sessions = (
        async_sessionmaker(engine_or_sessions)
        if isinstance(engine_or_sessions, AsyncEngine)
        else engine_or_sessions
    )
    async with sessions() as session:
        rows = await session.execute(
            select(
                AnswerRow.question_id,
                AnswerRow.provider_id,
                AnswerRow.category,
                func.count(),
                func.sum(AnswerRow.score),
            )
            .where(AnswerRow.iso_week >= first_week, AnswerRow.iso_week <= last_week)
            .group_by(AnswerRow.question_id, AnswerRow.provider_id, AnswerRow.category)
        )
        counted = rows.all()
    by_question: dict[str, dict[Key, _Figure]] = {}
    for question_id, provider_id, category, responses, score_sum in counted:
        cells = by_question.setdefault(question_id, {})
        total = None if score_sum is None else int(score_sum)
        cells[(provider_id, category)] = _Figure(int(responses), total)
    answer: list[SatisfactionCell] = []
    for question_id in sorted(by_question):
        table = suppress(with_margins(by_question[question_id]))
        for (provider_id, category), figure in sorted(table.items()):
            answer.append(_cell(question_id, provider_id, category, figure))
    return answer


def _cell(question_id: str, provider_id: str, category: str, figure: _Figure) -> SatisfactionCell:
    if figure.hidden:
        return SatisfactionCell(provider_id, category, question_id, None, None, True)
    mean = None if figure.score_sum is None else figure.score_sum / figure.responses
    return SatisfactionCell(provider_id, category, question_id, figure.responses, mean, False)


def with_margins(cells: dict[Key, _Figure]) -> dict[Key, _Figure]:
    """The cells with each provider's, each category's and the whole's sums."""
    table = dict(cells)
    for (provider_id, category), figure in cells.items():
        for key in ((provider_id, ALL), (ALL, category), (ALL, ALL)):
            margin = table.setdefault(key, _Figure(0, None if figure.score_sum is None else 0))
            margin.responses += figure.responses
            if figure.score_sum is not None:
                margin.score_sum = (margin.score_sum or 0) + figure.score_sum
    return table


def lines(table: dict[Key, _Figure]) -> list[tuple[Key, list[Key]]]:
    """Every sum the table shows, as (its total, the figures it adds up)."""
    cells = [k for k in table if ALL not in k]
    providers = sorted({p for p, _ in cells})
    categories = sorted({c for _, c in cells})
    found: list[tuple[Key, list[Key]]] = []
    found += [((p, ALL), [k for k in cells if k[0] == p]) for p in providers]
    found += [((ALL, c), [k for k in cells if k[1] == c]) for c in categories]
    found.append(((ALL, ALL), [(p, ALL) for p in providers]))
    found.append(((ALL, ALL), [(ALL, c) for c in categories]))
    return found


def suppress(table: dict[Key, _Figure]) -> dict[Key, _Figure]:
    """Hides the small cells, then what would give them back (the module's
    docstring says the rule)."""
    for figure in table.values():
        figure.hidden = figure.responses < MIN_CELL_PEOPLE
    changed = True
    while changed:
        changed = False
        for total, members in lines(table):
            if _exposes(table, total, members):
                _hide_next(table, total, members)
                changed = True
    return table


def _exposes(table: dict[Key, _Figure], total: Key, members: Iterable[Key]) -> bool:
    """Whether a line, as it stands, gives a hidden figure (or a small sum
    of them) away by subtraction."""
    hidden = [k for k in (total, *members) if table[k].hidden]
    if not hidden:
        return False
    if len(hidden) < 2:
        return True
    if table[total].hidden:
        return False
    return sum(table[k].responses for k in hidden) < MIN_CELL_PEOPLE


def _hide_next(table: dict[Key, _Figure], total: Key, members: Iterable[Key]) -> None:
    shown = [k for k in members if not table[k].hidden]
    if shown:
        table[min(shown, key=lambda k: (table[k].responses, k))].hidden = True
    else:
        table[total].hidden = True
