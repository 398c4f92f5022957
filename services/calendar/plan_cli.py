"""`eapctl calendar plan`: a year's programme from its TOML file, shown as
month grids in the terminal, with what could not be placed and why, and
written as iCalendar or CSV on request. What people read (the grids, the
HTML page, the calendar entries' words) is in --lang's language, else the
locale's (i18n.choose_cli_language); the CSV keeps its columns' names.

    eapctl calendar plan PROGRAM.toml [--year 2027] [--ics OUT.ics] [--csv OUT.csv]
        [--html OUT.html] [--lang zh-TW|en]
"""

from __future__ import annotations

import argparse
import calendar as month_grid
import csv
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

from services.calendar.ics import export_ics
from services.calendar.planner import Event, Plan, plan_program
from services.calendar.program_file import ProgramFileError, load_program
from services.calendar.report import render_html
from services.calendar.unplaced import solver_words
from services.office_calendar import load_shipped
from services.runtime import dates, i18n
from services.runtime.i18n import tr


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="eapctl calendar plan",
        description="Plan a year's EAP programme (meetings, trainings, group sessions).",
    )
    parser.add_argument("program", help="the programme's TOML file")
    parser.add_argument("--year", type=int, help="plan this year instead of the file's")
    parser.add_argument("--ics", help="write the plan as iCalendar to this file")
    parser.add_argument("--csv", help="write the plan as CSV to this file")
    parser.add_argument("--html", help="write the plan's month grids as an HTML page")
    parser.add_argument("--time-limit", type=float, default=20.0, help="seconds (default 20)")
    i18n.add_language_option(parser)
    args = parser.parse_args(argv)
    i18n.choose_cli_language(args.lang)
    try:
        program = load_program(args.program)
    except OSError as error:
        print(
            tr("plan: cannot read {path}: {error}", path=args.program, error=error.strerror),
            file=sys.stderr,
        )
        return 2
    except ProgramFileError as error:
        print(tr("plan: {path} has mistakes:", path=args.program), file=sys.stderr)
        for mistake in error.mistakes:
            print(f"  {mistake}", file=sys.stderr)
        return 2
    if args.year is not None:
        if not 2000 <= args.year <= 2200:
            print(tr("plan: --year must be between 2000 and 2200"), file=sys.stderr)
            return 2
        program = replace(program, year=args.year)
    plan = plan_program(program, time_limit=args.time_limit)
    print(render(plan))
    if args.ics:
        Path(args.ics).write_bytes(export_ics(plan))
        print(tr("wrote {path} ({count} events)", path=args.ics, count=len(plan.events)))
    if args.csv:
        write_csv(plan, args.csv)
        print(tr("wrote {path}", path=args.csv))
    if args.html:
        office = load_shipped()
        year = [date(program.year, 1, 1) + timedelta(days=n) for n in range(366)]
        open_days = {d for d in year if d.year == program.year and office.is_office_day(d)}
        Path(args.html).write_text(render_html(plan, open_days), encoding="utf-8")
        print(tr("wrote {path}", path=args.html))
    return 0 if not plan.unplaced else 1


def render(plan: Plan) -> str:
    """Each month with events as a grid (event days starred), then its events.
    Every cell is four columns wide: a Chinese weekday is two."""
    by_month: dict[int, list[Event]] = defaultdict(list)
    for event in plan.events:
        by_month[event.start.month].append(event)
    titles = {a.id: a.title for a in plan.program.activities}
    lines = [
        tr(
            "{name}: {placed} events placed, {unplaced} not ({status}, {seconds} s)",
            name=plan.program.name,
            placed=len(plan.events),
            unplaced=len(plan.unplaced),
            status=solver_words(plan.status),
            seconds=f"{plan.seconds:.1f}",
        ),
        "",
    ]
    headings = "".join(f" {name} " for name in dates.weekday_headings()).rstrip()
    for month in sorted(by_month):
        events = by_month[month]
        busy_days = {e.start.day for e in events}
        lines.append(dates.month_title(plan.program.year, month))
        lines.append(headings)
        for week in month_grid.Calendar().monthdayscalendar(plan.program.year, month):
            lines.append(
                "".join(
                    "    " if d == 0 else f"{d:>3}{'*' if d in busy_days else ' '}" for d in week
                ).rstrip()
            )
        for e in events:
            room = f", {e.room}" if e.room else ""
            lines.append(
                f"  {dates.short_date(e.start.date())} {e.start:%H:%M}-{e.end:%H:%M}  "
                f"{titles[e.activity]} ({e.activity} #{e.occurrence}{room})"
            )
        lines.append("")
    if plan.unplaced:
        lines.append(tr("Not placed:"))
        lines.extend(f"  [{u.rule}] {u.explanation}" for u in plan.unplaced)
    return "\n".join(lines)


def write_csv(plan: Plan, path: str) -> None:
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(
            ["uid", "activity", "occurrence", "start", "end", "room", "required", "optional_free"]
        )
        for e in plan.events:
            writer.writerow(
                [
                    e.uid,
                    e.activity,
                    e.occurrence,
                    e.start.isoformat(timespec="minutes"),
                    e.end.isoformat(timespec="minutes"),
                    e.room or "",
                    " ".join(e.required),
                    " ".join(e.optional_free),
                ]
            )


if __name__ == "__main__":
    sys.exit(main())
