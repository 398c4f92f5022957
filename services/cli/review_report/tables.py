"""The HR review report as tables of words and figures, in the reader's
language: what the HTML page and the CSV file both show, built once so the
two cannot disagree. A withheld figure is None here; each rendering marks
it the same way and says why in the same footnote."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from enum import Enum

from eap.matcher.v1 import review_pb2 as rpb
from eap.quota.v1 import quota_pb2 as qpb
from services.cli.review_report.gather import AgencyBudget, ReviewData
from services.matcher.registry.counselors import Category, Modality
from services.matcher.survey.questions import DEFAULTS
from services.runtime import dates, i18n
from services.runtime.i18n import N_, tr

Value = int | float | str | None  # None: withheld
ALL = ""  # the review's margin: all categories, modalities or providers

CATEGORIES = {
    Category.PSYCHOLOGICAL: N_("Psychological"),
    Category.LEGAL: N_("Legal"),
    Category.FINANCIAL: N_("Financial"),
    Category.FAMILY: N_("Family"),
    Category.HEALTH: N_("Health"),
    Category.MANAGEMENT: N_("Management"),
}
MODALITIES = {
    Modality.IN_PERSON: N_("In person"),
    Modality.VIDEO: N_("By video"),
    Modality.PHONE: N_("By phone"),
}
ACTIVITY_KINDS = {
    "meeting": N_("Meeting"),
    "training": N_("Training"),
    "group": N_("Group session"),
}


class Kind(Enum):
    """How a column's figures are written."""

    TEXT = "text"
    COUNT = "count"
    NTD = "ntd"
    PERCENT = "percent"
    DAYS = "days"
    HOURS = "hours"  # given in minutes
    MEAN = "mean"


@dataclass(frozen=True)
class Column:
    heading: str
    kind: Kind = Kind.TEXT


@dataclass(frozen=True)
class Table:
    key: str
    title: str
    columns: tuple[Column, ...]
    rows: list[tuple[Value, ...]]
    notes: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Report:
    title: str
    lines: tuple[str, ...]  # what the report covers, under its title
    tables: list[Table]
    withheld_note: str


def written(value: Value, kind: Kind, grouping: bool = True) -> str:
    """A figure as the report writes it; "—" where withheld."""
    if value is None:
        return WITHHELD
    if isinstance(value, str):
        return value
    comma = "," if grouping else ""
    if kind is Kind.PERCENT:
        return f"{value:.1%}"
    if kind is Kind.DAYS:
        return f"{value:.1f}"
    if kind is Kind.MEAN:
        return f"{value:.2f}"
    if kind is Kind.HOURS:
        return f"{value / 60:{comma}.1f}"
    return f"{int(value):{comma}d}"


WITHHELD = "—"


def _category(value: str) -> str:
    if value == ALL:
        return tr("All categories")
    try:
        return tr(CATEGORIES[Category(value)])
    except ValueError:
        return value


def _modality(value: str) -> str:
    if value == ALL:
        return tr("All")
    try:
        return tr(MODALITIES[Modality(value)])
    except ValueError:
        return value


def _ordered(values: set[str], members: Sequence[str]) -> list[str]:
    """Known ids in the registry's order, then any others, the margin last."""
    known = [m for m in members if m in values]
    return [*known, *sorted(values - set(known) - {ALL}), *([ALL] if ALL in values else [])]


def sessions_table(review: rpb.GetProgrammeReviewResponse) -> Table:
    cells = {(c.category, c.modality): c for c in review.sessions}
    categories = _ordered({c for c, _ in cells}, [c.value for c in Category])
    modalities = _ordered({m for _, m in cells}, [m.value for m in Modality])

    def figure(category: str, modality: str) -> Value:
        cell = cells.get((category, modality))
        if cell is None:
            return 0
        return None if cell.suppressed else cell.sessions

    return Table(
        "sessions",
        tr("Sessions by category and way of meeting"),
        (Column(tr("Category")), *(Column(_modality(m), Kind.COUNT) for m in modalities)),
        [(_category(c), *(figure(c, m) for m in modalities)) for c in categories],
        (tr("A group session counts once for each participant."),),
    )


def waiting_table(review: rpb.GetProgrammeReviewResponse) -> Table:
    rows = {w.category: w for w in review.waiting}
    return Table(
        "waiting",
        tr("Waiting from request to first session"),
        (
            Column(tr("Category")),
            Column(tr("Cases"), Kind.COUNT),
            Column(tr("Median, days"), Kind.DAYS),
            Column(tr("90th percentile, days"), Kind.DAYS),
        ),
        [
            (_category(c), None, None, None)
            if rows[c].suppressed
            else (_category(c), rows[c].cases, rows[c].median_days, rows[c].p90_days)
            for c in _ordered(set(rows), [c.value for c in Category])
        ],
        (tr("Cases whose first session was in the period."),),
    )


def attendance_table(review: rpb.GetProgrammeReviewResponse) -> Table:
    rows = {a.category: a for a in review.attendance}

    def row(category: str) -> tuple[Value, ...]:
        a = rows[category]
        if a.suppressed:
            return (_category(category), None, None, None, None, None)
        return (
            _category(category),
            a.appointments,
            a.no_shows,
            a.no_show_rate,
            a.late_cancellations,
            a.late_cancellation_rate,
        )

    return Table(
        "attendance",
        tr("No-shows and late cancellations"),
        (
            Column(tr("Category")),
            Column(tr("Appointments"), Kind.COUNT),
            Column(tr("No-shows"), Kind.COUNT),
            Column(tr("No-show rate"), Kind.PERCENT),
            Column(tr("Late cancellations"), Kind.COUNT),
            Column(tr("Late cancellation rate"), Kind.PERCENT),
        ),
        [row(c) for c in _ordered(set(rows), [c.value for c in Category])],
    )


def _band_note(balances: Sequence[qpb.Balance], unit: str, min_people: int) -> tuple[str, ...]:
    if not any(b.band for b in balances):
        return ()
    return (
        tr(
            "Figures marked ≥ are rounded down to their band ({unit}): an exact one would "
            "stand for fewer than {min} people.",
            unit=unit,
            min=min_people,
        ),
    )


def _spent(balance: qpb.Balance, value: int, kind: Kind) -> Value:
    """A banded figure says so: "≥ 40,000" reads as rounded down, not exact."""
    return f"≥ {written(value, kind)}" if balance.band else value


def _through(through_month: int, year: int) -> str:
    # A Minguo year for Chinese readers (116年度), as the county's budget has it.
    named = dates.roc_year_words(year) if i18n.current_language() == "zh_TW" else str(year)
    if not through_month:
        return tr("Fiscal year {year}, to date.", year=named)
    return tr(
        "Fiscal year {year}, months 1 to {month} (closed months only).",
        year=named,
        month=through_month,
    )


def _period(agency: AgencyBudget) -> tuple[Value, Value]:
    return agency.period_sessions, agency.period_ntd


def agencies_table(data: ReviewData, year: int) -> Table:
    rows: list[tuple[Value, ...]] = []
    for agency in data.agencies:
        b = agency.balance
        if b is None:
            rows.append(
                (agency.agency_id, agency.name, tr("no budget"), "", "", "", *_period(agency))
            )
            continue
        rows.append(
            (
                agency.agency_id,
                agency.name,
                b.entitled,
                _spent(b, b.spent, Kind.NTD),
                None if b.band else b.left,
                None if b.band or not b.entitled else b.spent / b.entitled,
                *_period(agency),
            )
        )
    return Table(
        "agencies",
        tr("Budget execution by agency"),
        (
            Column(tr("Agency")),
            Column(tr("Name")),
            Column(tr("Budget, NT$"), Kind.NTD),
            Column(tr("Spent, NT$"), Kind.NTD),
            Column(tr("Left, NT$"), Kind.NTD),
            Column(tr("Executed"), Kind.PERCENT),
            Column(tr("Sessions in the period"), Kind.COUNT),
            Column(tr("NT$ in the period"), Kind.NTD),
        ),
        rows,
        (
            _through(data.through_month, year),
            *_band_note(
                [b for a in data.agencies if (b := a.balance) is not None],
                "NT$",
                data.review.min_cell_people,
            ),
        ),
    )


def providers_table(data: ReviewData, year: int) -> Table:
    rows: list[tuple[Value, ...]] = []
    for provider in data.providers:
        b = provider.balance
        if b is None:
            rows.append((provider.provider_id, tr("no contract"), "", "", "", ""))
            continue
        rows.append(
            (
                provider.provider_id,
                provider.hourly_rate_ntd,
                b.entitled,
                _spent(b, b.spent, Kind.HOURS),
                None if b.band else b.left,
                None if b.band or not b.entitled else b.spent / b.entitled,
            )
        )
    balances = [p.balance for p in data.providers if p.balance is not None]
    return Table(
        "providers",
        tr("Hour caps by provider"),
        (
            Column(tr("Provider")),
            Column(tr("NT$ per hour"), Kind.NTD),
            Column(tr("Cap, hours"), Kind.HOURS),
            Column(tr("Used, hours"), Kind.HOURS),
            Column(tr("Left, hours"), Kind.HOURS),
            Column(tr("Used"), Kind.PERCENT),
        ),
        rows,
        (
            _through(data.through_month, year),
            *_band_note(balances, tr("hours"), data.review.min_cell_people),
        ),
    )


def _question(question_id: str) -> str:
    for question in DEFAULTS:
        if question.question_id == question_id:
            return tr(question.prompt)
    return question_id


def satisfaction_table(review: rpb.GetProgrammeReviewResponse) -> Table:
    order = {q.question_id: n for n, q in enumerate(DEFAULTS)}
    cells = sorted(
        review.satisfaction,
        key=lambda s: (
            order.get(s.question_id, len(order)),
            s.question_id,
            s.provider_id == ALL,
            s.provider_id,
            s.category == ALL,
            s.category,
        ),
    )
    rows: list[tuple[Value, ...]] = []
    for s in cells:
        provider = s.provider_id or tr("All providers")
        if s.suppressed:
            rows.append((_question(s.question_id), provider, _category(s.category), None, None))
        else:
            mean: Value = s.mean if s.has_mean else ""
            rows.append(
                (_question(s.question_id), provider, _category(s.category), s.responses, mean)
            )
    return Table(
        "satisfaction",
        tr("Satisfaction by provider and category"),
        (
            Column(tr("Question")),
            Column(tr("Provider")),
            Column(tr("Category")),
            Column(tr("Answers"), Kind.COUNT),
            Column(tr("Mean (1-5)"), Kind.MEAN),
        ),
        rows,
        (
            tr(
                "Answers of the ISO weeks {first} to {last}; they are kept by week, "
                "without the person or the session.",
                first=review.first_week,
                last=review.last_week,
            ),
        ),
    )


def activities_table(data: ReviewData) -> Table:
    rows: list[tuple[Value, ...]] = [
        (
            a.title,
            tr(ACTIVITY_KINDS[a.kind]) if a.kind in ACTIVITY_KINDS else a.kind,
            a.events,
            a.people,
            a.attendance_rate,
            a.full_attendance,
        )
        for a in data.activities
    ]
    notes = (
        (tr("Attendance recorded over each plan's year so far."),)
        if data.activities
        else (tr("No plan of the calendar was named (--plan), or none held events in the period."),)
    )
    return Table(
        "activities",
        tr("Meetings, trainings and group sessions"),
        (
            Column(tr("Activity")),
            Column(tr("Kind")),
            Column(tr("Held in the period"), Kind.COUNT),
            Column(tr("People recorded"), Kind.COUNT),
            Column(tr("Attendance"), Kind.PERCENT),
            Column(tr("Came to every one"), Kind.COUNT),
        ),
        rows,
        notes,
    )


def build(data: ReviewData) -> Report:
    review = data.review
    first, last = date.fromisoformat(review.first_day), date.fromisoformat(review.last_day)
    return Report(
        tr("Programme review {period}", period=review.period),
        (
            tr(
                "From {first} to {last}.",
                first=dates.long_date(first),
                last=dates.long_date(last),
            ),
        ),
        [
            sessions_table(review),
            waiting_table(review),
            attendance_table(review),
            agencies_table(data, first.year),
            providers_table(data, first.year),
            satisfaction_table(review),
            activities_table(data),
        ],
        tr(
            "— withheld: the figure stands for fewer than {min} people, or it would let "
            "such a figure be worked out from the others.",
            min=review.min_cell_people,
        ),
    )
