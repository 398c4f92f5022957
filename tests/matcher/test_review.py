"""The programme's review over gRPC (issue 16, item 4 and acceptance 5):
the matcher's aggregates for a quarter, right on a small world; small
cells withheld, and whatever would give one back by subtraction; another
tenant's HR sees nothing of this one; an employee is refused."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest

from eap.matcher.v1 import matcher_pb2_grpc
from eap.matcher.v1 import review_pb2 as rpb
from services.matcher.review.disclosure import Figure, Line, withhold
from services.rules.disclosure import MIN_CELL_PEOPLE
from services.runtime.server import RunningServer
from tests import review_world
from tests.access import Keys, Metadata, bearer
from tests.conftest import Backend, Suite
from tests.quota.test_rpcs import details, refused

Q1 = review_world.PERIOD


async def review(
    matcher: matcher_pb2_grpc.MatcherServiceAsyncStub, period: str = Q1, metadata: Metadata = ()
) -> rpb.GetProgrammeReviewResponse:
    request = rpb.GetProgrammeReviewRequest(period=period)
    return await matcher.GetProgrammeReview(request, metadata=metadata)


def cells(answer: rpb.GetProgrammeReviewResponse) -> dict[tuple[str, str], rpb.ReviewSessionCell]:
    return {(c.category, c.modality): c for c in answer.sessions}


async def test_the_review_counts_sessions_waits_missed_ones_and_satisfaction(
    suite: Suite, backend: Backend
) -> None:
    await review_world.build(suite.matcher)
    url = backend.settings.database_url
    await review_world.answered(url, "P1", "psychological", [5, 4, 4, 5, 3, 4])
    await review_world.answered(url, "P2", "family", [4, 4, 4, 4, 4])
    await review_world.answered(url, "P1", "psychological", [1, 2], question="ease_of_booking")
    answer = await review(suite.matcher)
    assert (answer.period, answer.first_day, answer.last_day) == (Q1, "2027-01-01", "2027-03-31")
    assert (answer.first_week, answer.last_week) == (
        "2027-W01",
        "2027-W12",
    )  # W13 has its Thursday in April
    assert answer.min_cell_people == MIN_CELL_PEOPLE
    table = cells(answer)
    # Shown: cells of five or more people, and their sums where nothing small follows.
    assert (
        table[("psychological", "video")].sessions,
        table[("psychological", "video")].people,
    ) == (6, 6)
    assert table[("psychological", "in_person")].sessions == 5  # the no-show is no session
    assert table[("psychological", "")].sessions == 11
    assert table[("family", "in_person")].sessions == 5  # the late cancellation neither
    # Two people: withheld, their figures zero.
    small = table[("family", "video")]
    assert small.suppressed and (small.sessions, small.people) == (0, 0)
    missed = {a.category: a for a in answer.attendance}
    psych = missed["psychological"]
    assert not psych.suppressed
    assert (psych.appointments, psych.no_shows, psych.late_cancellations) == (12, 1, 0)
    assert psych.no_show_rate == pytest.approx(1 / 12)
    waits = {w.category: w for w in answer.waiting}
    assert waits["psychological"].cases == 12
    assert 7 <= waits["psychological"].median_days <= waits["psychological"].p90_days < 12
    assert waits["family"].cases == 8
    assert 3 <= waits["family"].median_days < 8
    assert waits[""].cases == 20
    survey = {(s.question_id, s.provider_id, s.category): s for s in answer.satisfaction}
    helpful = survey[("helpfulness", "P1", "psychological")]
    assert (helpful.responses, helpful.has_mean) == (6, True)
    assert helpful.mean == pytest.approx(25 / 6)
    assert survey[("helpfulness", "", "")].responses == 11
    few = survey[("ease_of_booking", "P1", "psychological")]
    assert few.suppressed and (few.responses, few.has_mean) == (0, False)
    assert answer.provider_ids == ["P1", "P2"]
    # A quarter with nothing in it shows nothing, not even a total.
    empty = await review(suite.matcher, "2026-Q4")
    assert all(c.suppressed for c in empty.sessions) and not empty.satisfaction


def attack(answer: rpb.GetProgrammeReviewResponse) -> dict[str, int]:
    """What a reader works out for the family/video cell's sessions from
    the figures shown, every way subtraction offers (none must succeed)."""
    table, missed = cells(answer), {a.category: a for a in answer.attendance}
    shown = {k: c.sessions for k, c in table.items() if not c.suppressed}
    found = {}
    if {("family", ""), ("family", "in_person")} <= shown.keys():
        found["family row"] = shown[("family", "")] - shown[("family", "in_person")]
    video = [k for k in table if k[1] == "video" and k[0]]
    if ("", "video") in shown and all(k in shown for k in video if k != ("family", "video")):
        others = sum(shown[k] for k in video if k != ("family", "video"))
        found["video column"] = shown[("", "video")] - others
    family = missed["family"]
    if not family.suppressed and ("family", "in_person") in shown:
        held = family.appointments - family.no_shows - family.late_cancellations
        found["attendance row"] = held - shown[("family", "in_person")]
    if ("", "") in shown and all(
        k in shown for k in table if k[0] and k[1] and k != ("family", "video")
    ):
        inner = sum(shown[k] for k in table if k[0] and k[1] and k != ("family", "video"))
        found["grand total"] = shown[("", "")] - inner
    return found


async def test_no_margin_gives_a_withheld_cell_back(suite: Suite) -> None:
    await review_world.build(suite.matcher)
    answer = await review(suite.matcher)
    assert attack(answer) == {}
    # And no combination of everything shown does either (the rank test).
    assert not solvable(answer, ("family", "video"))


def solvable(answer: rpb.GetProgrammeReviewResponse, target: tuple[str, str]) -> bool:
    """Whether the sessions of cell `target` are a linear combination of
    the session figures shown (cells, margins, the attendance rows' sessions)."""
    inner = sorted(k for k in cells(answer) if k[0] and k[1])
    column = {k: i for i, k in enumerate(inner)}
    rows = []
    for (category, modality), cell in cells(answer).items():
        if not cell.suppressed:
            rows.append([float(category in ("", k[0]) and modality in ("", k[1])) for k in inner])
    for row in answer.attendance:
        if not row.suppressed:
            rows.append([float(row.category in ("", k[0])) for k in inner])
    goal = np.zeros(len(inner))
    goal[column[target]] = 1.0
    if not rows:
        return False
    system = np.array(rows)
    rank = np.linalg.matrix_rank(system)
    return bool(np.linalg.matrix_rank(np.vstack([system, goal])) == rank)


async def test_a_bad_period_is_refused_by_field(suite: Suite) -> None:
    for bad in ("2026-Q5", "Q4-2026", "", "1899"):
        error = await refused(review(suite.matcher, bad))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        fields = [v.field for v in details(error)["BadRequest"].field_violations]  # type: ignore[attr-defined]
        assert fields == ["period"]


# -- the disclosure rule on its own: random tables against an attacker -------------


def _random_table(rng: random.Random) -> tuple[list[Figure], list[Line], dict]:  # type: ignore[type-arg]
    """A two-way table of categories by modalities (people per cell drawn
    around the threshold), with its margins and total."""
    rows, columns = rng.randint(2, 4), rng.randint(2, 3)
    people: dict[tuple[str, ...], frozenset[str]] = {}
    for ri in range(rows):
        for ci in range(columns):
            n = rng.choice([0, 1, 2, 3, 5, 6, 8, 12])
            if n:
                people[(f"r{ri}", f"c{ci}")] = frozenset(f"{ri}.{ci}.{i}" for i in range(n))
    figures: dict[tuple[str, ...], Figure] = {}

    def figure(r: str, c: str) -> None:
        atoms = frozenset(a for a in people if r in ("", a[0]) and c in ("", a[1]))
        who = frozenset().union(*(people[a] for a in atoms))
        figures[(r, c)] = Figure((r, c), atoms, ("n",), who)

    for row, column in people:
        figure(row, column)
    row_names = sorted({a[0] for a in people})
    column_names = sorted({a[1] for a in people})
    for r in row_names:
        figure(r, "")
    for c in column_names:
        figure("", c)
    figure("", "")
    lines = [Line((r, ""), tuple(k for k in people if k[0] == r)) for r in row_names]
    lines += [Line(("", c), tuple(k for k in people if k[1] == c)) for c in column_names]
    lines.append(Line(("", ""), tuple((r, "") for r in row_names)))
    lines.append(Line(("", ""), tuple(("", c) for c in column_names)))
    return list(figures.values()), lines, people


@pytest.mark.parametrize("seed_", range(40))
def test_no_small_group_of_a_random_table_can_be_solved_for(seed_: int) -> None:
    figures, lines, people = _random_table(random.Random(seed_))
    hidden = withhold(figures, lines, people)
    atoms = sorted(people)
    shown = [f for f in figures if f.key not in hidden]
    assert all(len(f.people) >= MIN_CELL_PEOPLE for f in shown)
    system = np.array([[float(a in f.atoms) for a in atoms] for f in shown]).reshape(
        len(shown), len(atoms)
    )
    rank = np.linalg.matrix_rank(system) if shown else 0
    small = [f for f in figures if len(f.people) < MIN_CELL_PEOPLE and f.atoms]
    for f in small:
        goal = np.array([[float(a in f.atoms) for a in atoms]])
        extended = np.linalg.matrix_rank(np.vstack([system, goal])) if shown else 1
        assert extended > rank, f"{f.key} can be solved for"


# -- who may read it, in a deployment of two counties --------------------------------

A, B = review_world.A, review_world.B


@dataclass
class Counties:
    made: Keys
    server: RunningServer
    channel: grpc.aio.Channel

    def as_(self, role: str, subject: str, tenant: str) -> Metadata:
        return bearer(self.made.token(role, subject, tenant=tenant))


@pytest.fixture
async def counties(tmp_path: Path, march_2027: None) -> AsyncIterator[Counties]:
    async with (
        review_world.two_counties(tmp_path) as world,
        grpc.aio.insecure_channel(f"127.0.0.1:{world.server.port}") as channel,
    ):
        yield Counties(world.made, world.server, channel)


async def test_another_countys_hr_sees_nothing_and_an_employee_is_refused(
    counties: Counties,
) -> None:
    matcher = matcher_pb2_grpc.MatcherServiceStub(counties.channel)
    ours = await review(matcher, metadata=counties.as_("hr", "pt-hr", A))
    assert cells(ours)[("psychological", "")].sessions == 11
    audited = await review(matcher, metadata=counties.as_("auditor", "pt-audit", A))
    assert audited.sessions == ours.sessions
    theirs = await review(matcher, metadata=counties.as_("hr", "ml-hr", B))
    assert all(c.suppressed and c.sessions == 0 for c in theirs.sessions)
    assert all(w.suppressed for w in theirs.waiting) and all(
        a.suppressed for a in theirs.attendance
    )
    assert "P1" not in theirs.provider_ids and not theirs.satisfaction
    for role, subject in (("employee", "E100"), ("counselor", "C101"), ("supervisor", "S1")):
        error = await refused(review(matcher, metadata=counties.as_(role, subject, A)))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED, role
