"""A self-contained HTML report of a schedule, for HR: what was served and
what was not (and why), how busy each counselor is day by day, and how much
of each agency's budget the schedule spends. Charts are inline SVG: the file
opens anywhere, offline, with nothing to load.

    eapctl match report INSTANCE.json SCHEDULE.json [-o REPORT.html]
"""

from __future__ import annotations

import argparse
import html
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import date, timedelta
from fractions import Fraction

from services.matcher.optimization import reasons
from services.matcher.optimization.instance import (
    FormatError,
    Instance,
    Schedule,
    load_instance,
    load_schedule,
)
from services.matcher.optimization.verify import verify

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
    top = max((float(b) for _, _, b in rows), default=0) or 1
    height = ROW * len(rows) + 10
    parts = [
        f'<svg class="chart" role="img" aria-label="budget use per agency" '
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
            f"NT${float(spent):,.0f} of NT${float(budget):,.0f} ({share:.0%})</text>"
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
    head = "".join(f"<th>{d:%a %d %b}</th>" for d in open_days)
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
            cells.append(
                f'<td style="background:{_heat(share)};color:{ink}" '
                f'title="{used} of {have} min">{share:.0%}</td>'
            )
        rows.append(f"<tr><th>{_esc(k.id)}</th>{''.join(cells)}</tr>")
    return f'<table class="heat"><tr><th></th>{head}</tr>{"".join(rows)}</table>'


def render(inst: Instance, schedule: Schedule) -> str:
    verdict = verify(inst, schedule)
    got = Counter(s.case for s in schedule.sessions)
    fully = sum(1 for c in inst.cases if got[c.id] >= c.sessions)
    partly = sum(1 for c in inst.cases if 0 < got[c.id] < c.sessions)
    none = len(inst.cases) - fully - partly
    served_chart = _bars(
        [
            ("fully served", fully, "#2f8f4e"),
            ("partly served", partly, "#e0a526"),
            ("not served", none, "#c0392b"),
        ],
        "cases",
        "cases by how fully they are served",
    )
    short = reasons.unserved(inst, schedule.sessions)
    by_reason = Counter(u.code for u in short)
    reason_chart = _bars(
        [(code.replace("_", " ").lower(), n, "#8e44ad") for code, n in by_reason.most_common()],
        "cases",
        "cases left short, by reason",
    )
    spent: dict[str, Fraction] = defaultdict(Fraction)  # whole NT$; Fraction for the chart
    for s in schedule.sessions:
        case = inst.case_by_id.get(s.case)
        counselor = inst.counselor_by_id.get(s.counselor)
        if case is not None and counselor is not None:
            spent[case.agency] += inst.session_cost(counselor, s.minutes)
    budget_chart = _budget_chart([(a.id, spent[a.id], a.budget_ntd) for a in inst.agencies])
    reason_rows = "".join(
        f"<tr><td>{_esc(u.case)}</td><td>{u.missing}</td><td>{_esc(u.code)}</td>"
        f"<td>{_esc(u.reason)}</td></tr>"
        for u in short
    )
    feasible = (
        "keeps every hard rule"
        if verdict.feasible
        else (f"breaks {len(verdict.violations)} hard rules")
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Matching report: {_esc(inst.name or "")}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1200px; }}
h1 {{ font-size: 1.5em; }} h2 {{ font-size: 1.15em; margin-top: 1.6em; }}
.figures {{ display: flex; gap: 2em; flex-wrap: wrap; }}
.figure {{ background: #f4f6f8; padding: .6em 1em; border-radius: 6px; }}
.figure b {{ display: block; font-size: 1.4em; }}
table {{ border-collapse: collapse; font-size: 12px; }}
td, th {{ border: 1px solid #ddd; padding: 3px 6px; text-align: left; }}
.heat td {{ text-align: center; min-width: 3.2em; }} .heat td.off {{ background: #f7f7f7; }}
</style></head><body>
<h1>Matching report: {_esc(inst.name or "")}</h1>
<p>{len(inst.cases)} cases, {len(inst.counselors)} counselors, {inst.horizon.weeks} weeks from
{inst.horizon.start:%d %B %Y}. The schedule {feasible}.</p>
<div class="figures">
<div class="figure">score<b>{float(verdict.score):,.2f}</b></div>
<div class="figure">sessions<b>{verdict.sessions}</b></div>
<div class="figure">crisis cases served<b>{verdict.crisis_cases_served} of
{verdict.crisis_cases}</b></div>
<div class="figure">with their anchor counselor<b>{verdict.continuity_sessions}</b></div>
<div class="figure">days waited<b>{float(verdict.wait_days):,.1f}</b></div>
<div class="figure">cost<b>NT${float(verdict.cost_ntd):,.0f}</b></div>
</div>
<h2>Served and not served</h2>
{served_chart}
<h2>Why cases were left short</h2>
{reason_chart}
<h2>Budget use per agency</h2>
{budget_chart}
<h2>Counselor utilization by day</h2>
<p>Booked minutes as a share of each counselor's available minutes that day.</p>
{_utilization(inst, schedule)}
<h2>Every case left short</h2>
<details><summary>{len(short)} cases</summary>
<table><tr><th>case</th><th>missing</th><th>reason</th><th>in plain words</th></tr>
{reason_rows}</table></details>
</body></html>
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="eapctl match report", description="A self-contained HTML report of a schedule."
    )
    parser.add_argument("instance")
    parser.add_argument("schedule")
    parser.add_argument("-o", "--output", help="HTML file (default: stdout)")
    args = parser.parse_args(argv)
    try:
        inst = load_instance(args.instance)
        schedule = load_schedule(args.schedule, inst)
    except (OSError, FormatError) as error:
        print(f"report: cannot read input: {error}", file=sys.stderr)
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
