"""A plan as one self-contained HTML page: a month grid per month with its
events in their days, then what could not be placed and why. No scripts,
no external files: it opens from a mail attachment or a shared drive. In
the current language: Traditional Chinese with Minguo months, or English."""

from __future__ import annotations

import calendar as month_grid
from collections import defaultdict
from datetime import date
from html import escape

from services.calendar.planner import Event, Plan
from services.calendar.unplaced import solver_words
from services.runtime import dates, i18n
from services.runtime.i18n import tr

STYLE = """
body { font-family: system-ui, "Noto Sans TC", "Microsoft JhengHei", sans-serif;
  margin: 2rem; color: #222; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.1rem; margin-top: 2rem; }
table.month { border-collapse: collapse; width: 100%; table-layout: fixed; }
table.month th { background: #f0f3f7; padding: .3rem; font-weight: 600; }
table.month td { border: 1px solid #d8dde3; vertical-align: top; height: 4.5rem;
  padding: .2rem; font-size: .8rem; }
td.closed { background: #f7f7f7; color: #999; } td.other { background: #fff; border: none; }
.day { font-weight: 600; } .event { margin-top: .2rem; padding: .15rem .3rem;
  border-radius: .25rem; background: #dbeafe; }
.event.training { background: #dcfce7; } .event.group { background: #fef3c7; }
.unplaced li { margin-bottom: .4rem; } .rule { font-family: monospace; color: #a33; }
"""


def render_html(plan: Plan, open_days: set[date] | None = None) -> str:
    """The page; `open_days` marks the office days (others are greyed)."""
    program = plan.program
    kinds = {a.id: a.kind.value for a in program.activities}
    titles = {a.id: a.title for a in program.activities}
    by_day: dict[date, list[Event]] = defaultdict(list)
    for event in plan.events:
        by_day[event.start.date()].append(event)
    summary = tr(
        "{placed} events placed, {unplaced} not (solver: {status}, {seconds} s).",
        placed=len(plan.events),
        unplaced=len(plan.unplaced),
        status=solver_words(plan.status),
        seconds=f"{plan.seconds:.1f}",
    )
    parts = [
        f"<!doctype html><html lang='{i18n.html_lang()}'><meta charset='utf-8'>",
        f"<title>{escape(program.name)}</title><style>{STYLE}</style><body>",
        f"<h1>{escape(program.name)}</h1>",
        f"<p>{escape(summary)}</p>",
    ]
    headings = "".join(f"<th>{escape(name)}</th>" for name in dates.weekday_headings())
    for month in range(1, 13):
        weeks = month_grid.Calendar().monthdatescalendar(program.year, month)
        parts.append(f"<h2>{escape(dates.month_title(program.year, month))}</h2>")
        parts.append(f"<table class='month'><tr>{headings}</tr>")
        for week in weeks:
            parts.append("<tr>")
            for day in week:
                if day.month != month:
                    parts.append("<td class='other'></td>")
                    continue
                closed = open_days is not None and day not in open_days
                parts.append(f"<td class='{'closed' if closed else 'open'}'>")
                parts.append(f"<div class='day'>{day.day}</div>")
                for e in sorted(by_day.get(day, []), key=lambda e: e.start):
                    kind = kinds.get(e.activity, "meeting")
                    title = titles.get(e.activity, e.activity)
                    room = f", {escape(e.room)}" if e.room else ""
                    parts.append(
                        f"<div class='event {kind}' title='{escape(title)}'>"
                        f"{e.start:%H:%M} {escape(e.activity)} #{e.occurrence}{room}</div>"
                    )
                parts.append("</td>")
            parts.append("</tr>")
        parts.append("</table>")
    if plan.unplaced:
        heading = escape(tr("Not placed"))
        parts.append(f"<h2>{heading}</h2><ul class='unplaced'>")
        parts.extend(
            f"<li><span class='rule'>{escape(u.rule)}</span> {escape(u.explanation)}</li>"
            for u in plan.unplaced
        )
        parts.append("</ul>")
    parts.append("</body></html>")
    return "".join(parts)
