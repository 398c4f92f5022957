"""A self-contained HTML report of a schedule, for HR: what was served and
what was not (and why), how busy each counselor is day by day, and how much
of each agency's budget the schedule spends. Charts are inline SVG: the file
opens anywhere, offline, with nothing to load. Its words are in the
reader's language (Traditional Chinese, with Minguo dates, or English);
ids and reason codes stay as they are, so the page and the JSON agree.

    eapctl match report INSTANCE.json SCHEDULE.json [-o REPORT.html] [--lang zh-TW]
"""

from __future__ import annotations

import argparse
import html
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import date, timedelta
from fractions import Fraction

from services.matcher.optimization import booked, reasons
from services.matcher.optimization.instance import (
    FormatError,
    Instance,
    Schedule,
    format_time,
    load_instance,
    load_schedule,
)
from services.matcher.optimization.verify import verify
from services.rules.codes import RuleCode
from services.runtime import dates, i18n
from services.runtime.i18n import N_, tr

BAR_WIDTH = 420
ROW = 22


def _esc(value: object) -> str:
    return html.escape(str(value))


def _bars(rows: Sequence[tuple[str, float, str]], unit: str, title: str) -> str:
    """A horizontal bar chart: (label, value, colour) per row."""
    top = max((v for _, v, _ in rows), default=0) or 1
    height = ROW * len(rows) + 10
    parts = [
        f'<svg class="chart" role="img" aria-label="{_esc(title)}" width="{BAR_WIDTH + 260}" '
        f'height="{height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for n, (label, value, colour) in enumerate(rows):
        y = n * ROW + 5
        width = max(BAR_WIDTH * value / top, 1 if value else 0)
        parts.append(
            f'<text x="0" y="{y + 14}" font-size="12">{_esc(label)}</text>'
            f'<rect x="170" y="{y}" width="{width:.1f}" height="16" fill="{colour}"/>'
            f'<text x="{175 + width:.1f}" y="{y + 13}" font-size="11">{value:,.0f} {unit}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _budget_chart(rows: Sequence[tuple[str, Fraction, Fraction]]) -> str:
    """Per agency: spent (dark) against budget (light), NT$."""
    label = _esc(tr("budget use per agency"))
    top = max((float(b) for _, _, b in rows), default=0) or 1
    height = ROW * len(rows) + 10
    parts = [
        f'<svg class="chart" role="img" aria-label="{label}" '
        f'width="{BAR_WIDTH + 380}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for n, (agency, spent, budget) in enumerate(rows):
        y = n * ROW + 5
        whole = BAR_WIDTH * float(budget) / top
        used = BAR_WIDTH * float(spent) / top
        share = float(spent / budget) if budget else 0.0
        parts.append(
            f'<text x="0" y="{y + 14}" font-size="12">{_esc(agency)}</text>'
            f'<rect x="120" y="{y}" width="{whole:.1f}" height="16" fill="#d8e6f3"/>'
            f'<rect x="120" y="{y}" width="{used:.1f}" height="16" fill="#2c6fad"/>'
            f'<text x="{125 + whole:.1f}" y="{y + 13}" font-size="11">'
            + _esc(
                tr(
                    "NT${spent} of NT${budget} ({share})",
                    spent=f"{float(spent):,.0f}",
                    budget=f"{float(budget):,.0f}",
                    share=f"{share:.0%}",
                )
            )
            + "</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _heat(share: float) -> str:
    """White (idle) to deep green (fully booked)."""
    shade = int(235 - 170 * min(max(share, 0.0), 1.0))
    return f"rgb({shade},{min(shade + 20, 245)},{shade})"


def _utilization(inst: Instance, schedule: Schedule) -> str:
    """Booked minutes over available minutes, per counselor and day."""
    days = [inst.horizon.start.date() + timedelta(days=n) for n in range(7 * inst.horizon.weeks)]
    available: dict[tuple[str, date], int] = defaultdict(int)
    for k in inst.counselors:
        for iv in k.availability:
            available[(k.id, iv.start.date())] += int((iv.end - iv.start).total_seconds() // 60)
    booked: dict[tuple[str, date], int] = defaultdict(int)
    for s in schedule.sessions:
        booked[(s.counselor, s.start.date())] += s.minutes
    open_days = [d for d in days if any(available[(k.id, d)] for k in inst.counselors)]
    head = "".join(f"<th>{_esc(dates.short_date(d))}</th>" for d in open_days)
    rows = []
    for k in inst.counselors:
        cells = []
        for d in open_days:
            have, used = available[(k.id, d)], booked[(k.id, d)]
            if not have:
                cells.append('<td class="off"></td>')
                continue
            share = used / have
            ink = "#fff" if share > 0.6 else "#222"
            minutes = tr("{used} of {have} min", used=used, have=have)
            cells.append(
                f'<td style="background:{_heat(share)};color:{ink}" '
                f'title="{_esc(minutes)}">{share:.0%}</td>'
            )
        rows.append(f"<tr><th>{_esc(k.id)}</th>{''.join(cells)}</tr>")
    return f'<table class="heat"><tr><th></th>{head}</tr>{"".join(rows)}</table>'


def render(inst: Instance, schedule: Schedule) -> str:
    """The page, in the current language (i18n.current_language())."""
    verdict = verify(inst, schedule)
    got = Counter(s.case for s in schedule.sessions)
    fully = sum(1 for c in inst.cases if got[c.id] >= c.sessions)
    partly = sum(1 for c in inst.cases if 0 < got[c.id] < c.sessions)
    none = len(inst.cases) - fully - partly
    served_chart = _bars(
        [
            (tr("fully served"), fully, "#2f8f4e"),
            (tr("partly served"), partly, "#e0a526"),
            (tr("not served"), none, "#c0392b"),
        ],
        tr("cases"),
        tr("cases by how fully they are served"),
    )
    short = reasons.unserved(inst, schedule.sessions)
    by_reason = Counter(u.code for u in short)
    reason_chart = _bars(
        [(_label(code), n, "#8e44ad") for code, n in by_reason.most_common()],
        tr("cases"),
        tr("cases left short, by reason"),
    )
    spent: dict[str, Fraction] = defaultdict(Fraction)  # whole NT$; Fraction for the chart
    for s in schedule.sessions:
        case = inst.case_by_id.get(s.case)
        counselor = inst.counselor_by_id.get(s.counselor)
        if case is not None and counselor is not None:
            spent[case.agency] += inst.session_cost(counselor, s.minutes)
    budget_chart = _budget_chart([(a.id, spent[a.id], a.budget_ntd) for a in inst.agencies])
    # A reason's words are the catalogs' message ids (reasons.WORDS).
    reason_rows = "".join(
        f"<tr><td>{_esc(u.case)}</td><td>{u.missing}</td><td>{_esc(u.code)}</td>"
        f"<td>{_esc(tr(u.reason))}</td></tr>"
        for u in short
    )
    moves_section = _moves(inst, schedule)
    feasible = (
        tr("The schedule keeps every hard rule.")
        if verdict.feasible
        else tr("The schedule breaks {count} hard rules.", count=len(verdict.violations))
    )
    title = _esc(tr("Matching report: {name}", name=inst.name or ""))
    scope = tr(
        "{cases} cases, {counselors} counselors, {weeks} weeks from {start}.",
        cases=len(inst.cases),
        counselors=len(inst.counselors),
        weeks=inst.horizon.weeks,
        start=dates.long_date(inst.horizon.start.date()),
    )
    figures = [
        (tr("score"), f"{float(verdict.score):,.2f}"),
        (tr("sessions"), f"{verdict.sessions}"),
        (
            tr("crisis cases served"),
            tr(
                "{served} of {total}",
                served=verdict.crisis_cases_served,
                total=verdict.crisis_cases,
            ),
        ),
        (tr("with their anchor counselor"), f"{verdict.continuity_sessions}"),
        (tr("days waited"), f"{float(verdict.wait_days):,.1f}"),
        (tr("cost"), f"NT${float(verdict.cost_ntd):,.0f}"),
    ]
    words = {
        key: _esc(text)
        for key, text in (
            ("served", tr("Served and not served")),
            ("why", tr("Why cases were left short")),
            ("budget", tr("Budget use per agency")),
            ("use", tr("Counselor utilization by day")),
            (
                "use_note",
                tr("Booked minutes as a share of each counselor's available minutes that day."),
            ),
            ("short", tr("Every case left short")),
            ("count", tr("{count} cases", count=len(short))),
            ("case", tr("case")),
            ("missing", tr("missing")),
            ("reason", tr("reason")),
            ("words", tr("in plain words")),
        )
    }
    boxes = "\n".join(
        f'<div class="figure">{_esc(name)}<b>{_esc(value)}</b></div>' for name, value in figures
    )
    return f"""<!doctype html>
<html lang="{i18n.html_lang()}"><head><meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, "Noto Sans TC", "Microsoft JhengHei", sans-serif; margin: 2em;
  color: #222; max-width: 1200px; }}
h1 {{ font-size: 1.5em; }} h2 {{ font-size: 1.15em; margin-top: 1.6em; }}
.figures {{ display: flex; gap: 2em; flex-wrap: wrap; }}
.figure {{ background: #f4f6f8; padding: .6em 1em; border-radius: 6px; }}
.figure b {{ display: block; font-size: 1.4em; }}
table {{ border-collapse: collapse; font-size: 12px; }}
td, th {{ border: 1px solid #ddd; padding: 3px 6px; text-align: left; }}
.heat td {{ text-align: center; min-width: 3.2em; }} .heat td.off {{ background: #f7f7f7; }}
</style></head><body>
<h1>{title}</h1>
<p>{_esc(scope)} {_esc(feasible)}</p>
<div class="figures">
{boxes}
</div>
<h2>{words["served"]}</h2>
{served_chart}
<h2>{words["why"]}</h2>
{reason_chart}
<h2>{words["budget"]}</h2>
{budget_chart}
<h2>{words["use"]}</h2>
<p>{words["use_note"]}</p>
{_utilization(inst, schedule)}
<h2>{words["short"]}</h2>
<details><summary>{words["count"]}</summary>
<table><tr><th>{words["case"]}</th><th>{words["missing"]}</th>
<th>{words["reason"]}</th><th>{words["words"]}</th></tr>
{reason_rows}</table></details>
{moves_section}
</body></html>
"""


def _moves(inst: Instance, schedule: Schedule) -> str:
    """The booked sessions the schedule moves, each with its reason; nothing
    for a plan that had no booked sessions to move."""
    if not inst.booked:
        return ""
    planned = [m for m in booked.moves(inst, schedule.sessions) if m.to is not None]
    rows = "".join(
        f"<tr><td>{_esc(m.booked.booking)}</td><td>{_esc(m.booked.case)}</td>"
        f"<td>{_esc(m.booked.counselor)} {_esc(format_time(m.booked.start))}</td>"
        f"<td>{_esc(m.to.counselor)} {_esc(format_time(m.to.start))}</td>"
        f"<td>{_esc(tr(booked.WORDS[m.reason], case=m.for_case))}</td></tr>"
        for m in sorted(planned, key=lambda m: m.booked.start)
        if m.to is not None
    )
    heading = _esc(tr("Booked sessions moved"))
    note = _esc(
        tr(
            "{moved} of {booked} booked sessions move, each within its week; the others stay.",
            moved=len(planned),
            booked=len(inst.booked),
        )
    )
    head = "".join(
        f"<th>{_esc(tr(word))}</th>"
        for word in (N_("booking"), N_("case"), N_("now"), N_("moves to"), N_("why"))
    )
    table = f"<table><tr>{head}</tr>{rows}</table>" if rows else ""
    return f"<h2>{heading}</h2>\n<p>{note}</p>\n{table}"


def _label(code: str) -> str:
    """A reason code's few words for a chart; the code itself if unknown."""
    try:
        return tr(reasons.LABELS[RuleCode(code)])
    except (ValueError, KeyError):
        return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="eapctl match report", description="A self-contained HTML report of a schedule."
    )
    parser.add_argument("instance")
    parser.add_argument("schedule")
    parser.add_argument("-o", "--output", help="HTML file (default: stdout)")
    i18n.add_language_option(parser)
    args = parser.parse_args(argv)
    i18n.choose_cli_language(args.lang)
    try:
        inst = load_instance(args.instance)
        schedule = load_schedule(args.schedule, inst)
    except (OSError, FormatError) as error:
        print(tr("report: cannot read input: {error}", error=error), file=sys.stderr)
        return 2
    page = render(inst, schedule)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(page)
    else:
        sys.stdout.write(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
