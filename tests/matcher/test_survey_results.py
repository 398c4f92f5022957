"""The survey's aggregates (survey/results.py): small cells suppressed,
and whatever would give one back by subtraction from a margin."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.matcher.survey.results import ALL, SatisfactionCell, satisfaction
from services.matcher.survey.rows import AnswerRow
from services.rules.disclosure import MIN_CELL_PEOPLE
from services.runtime.database import create_engine
from tests import stores

N = MIN_CELL_PEOPLE


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    made = create_engine(stores.migrated_sqlite(tmp_path / "eap.db"))
    yield made
    await made.dispose()


async def answered(
    engine: AsyncEngine, provider: str, category: str, scores: list[int], week: str = "2027-W10"
) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            AnswerRow.__table__.insert(),
            [
                {
                    "answer_id": uuid.uuid4().hex,
                    "iso_week": week,
                    "provider_id": provider,
                    "category": category,
                    "question_id": "helpfulness",
                    "score": score,
                    "text": None,
                }
                for score in scores
            ],
        )


def table(cells: list[SatisfactionCell]) -> dict[tuple[str, str], SatisfactionCell]:
    return {(c.provider_id, c.category): c for c in cells}


def derivable(cells: dict[tuple[str, str], SatisfactionCell]) -> list[tuple[str, str]]:
    """The hidden cells a reader could compute from one line's total and
    the figures shown beside it: must be none."""
    keys = [k for k in cells if ALL not in k]
    providers = {p for p, _ in keys}
    categories = {c for _, c in keys}
    lines = [((p, ALL), [k for k in keys if k[0] == p]) for p in providers]
    lines += [((ALL, c), [k for k in keys if k[1] == c]) for c in categories]
    lines += [((ALL, ALL), [(p, ALL) for p in providers])]
    lines += [((ALL, ALL), [(ALL, c) for c in categories])]
    found = []
    for total, members in lines:
        hidden = [k for k in (total, *members) if cells[k].suppressed]
        if len(hidden) == 1:
            found.append(hidden[0])
    return found


async def test_cells_of_enough_responses_show_their_mean(engine: AsyncEngine) -> None:
    await answered(engine, "P1", "psychological", [5] * N)
    await answered(engine, "P1", "legal", [3] * N)
    cells = table(await satisfaction(engine, "2027-W01", "2027-W52"))
    assert cells[("P1", "psychological")].mean == 5.0
    assert cells[("P1", "psychological")].responses == N
    assert cells[("P1", ALL)].mean == 4.0
    assert cells[("P1", ALL)].responses == 2 * N
    assert not any(c.suppressed for c in cells.values())


async def test_a_small_cell_and_what_would_give_it_back_are_suppressed(
    engine: AsyncEngine,
) -> None:
    await answered(engine, "P1", "psychological", [5] * (N + 3))
    await answered(engine, "P1", "legal", [1])  # one person: never shown
    await answered(engine, "P2", "psychological", [4] * (N + 1))
    await answered(engine, "P2", "legal", [2] * (N + 2))
    cells = table(await satisfaction(engine, "2027-W10", "2027-W10"))
    small = cells[("P1", "legal")]
    assert small.suppressed and small.mean is None and small.responses is None
    assert derivable(cells) == []
    # P1's total minus its psychological cell would be the small one: so
    # the next smallest figure of its row (and of its column) goes too.
    assert cells[("P1", "psychological")].suppressed or cells[("P1", ALL)].suppressed
    assert cells[("P2", "legal")].suppressed or cells[(ALL, "legal")].suppressed
    assert not cells[(ALL, ALL)].suppressed


async def test_no_suppressed_cell_is_derivable_in_any_table(engine: AsyncEngine) -> None:
    sizes = itertools.cycle([1, 7, 2, 9, 5, 3, 12, 4, 6])
    for provider, category in itertools.product(["P1", "P2", "P3"], ["a", "b", "c", "d"]):
        await answered(engine, provider, category, [3] * next(sizes))
    cells = table(await satisfaction(engine, "2027-W10", "2027-W10"))
    assert derivable(cells) == []
    for cell in cells.values():
        if not cell.suppressed:
            assert cell.responses is not None and cell.responses >= N
    # Two hidden cells of one line, with the total shown, stand for enough people.
    hidden_pairs = [k for k, c in cells.items() if c.suppressed and ALL not in k and k[0] == "P1"]
    assert len(hidden_pairs) != 1


async def test_weeks_outside_the_range_do_not_count(engine: AsyncEngine) -> None:
    await answered(engine, "P1", "legal", [5] * N, week="2027-W09")
    await answered(engine, "P1", "legal", [1] * N, week="2027-W11")
    cells = table(await satisfaction(engine, "2027-W10", "2027-W11"))
    assert cells[("P1", "legal")].mean == 1.0
    with pytest.raises(ValueError):
        await satisfaction(engine, "2027-10", "2027-W11")
