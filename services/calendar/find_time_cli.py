"""`eapctl calendar find-time`: times for one meeting among a programme's
people, against their busy times (and, with --with-plan, the events of the
programme's plan too).

    eapctl calendar find-time PROGRAM.toml --required a,b [--optional c,d]
        --minutes 60 --from 2027-03-01 --to 2027-03-31 [--limit 5] [--with-plan]
        [--lang zh-TW|en]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import date

from services.calendar.meeting_time import MAX_WINDOW_DAYS, find_meeting_times
from services.calendar.planner import plan_program
from services.calendar.program import Span
from services.calendar.program_file import ProgramFileError, load_program
from services.office_calendar import load_shipped
from services.runtime import dates, i18n
from services.runtime.i18n import tr


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="eapctl calendar find-time",
        description="Find times for one meeting among a programme's people.",
    )
    parser.add_argument("program", help="the programme's TOML file (people, busy times, hours)")
    parser.add_argument("--required", required=True, help="ids, comma-separated")
    parser.add_argument("--optional", default="", help="ids, comma-separated")
    parser.add_argument("--minutes", type=int, default=60, help="length (default 60)")
    parser.add_argument("--from", dest="first", required=True, help="first day, YYYY-MM-DD")
    parser.add_argument("--to", dest="last", required=True, help="last day, YYYY-MM-DD")
    parser.add_argument("--limit", type=int, default=5, help="options to show (default 5)")
    parser.add_argument(
        "--with-plan",
        action="store_true",
        help="plan the programme first, so its events count as busy time",
    )
    i18n.add_language_option(parser)
    args = parser.parse_args(argv)
    i18n.choose_cli_language(args.lang)
    try:
        program = load_program(args.program)
        first, last = date.fromisoformat(args.first), date.fromisoformat(args.last)
    except OSError as error:
        print(
            tr("find-time: cannot read {path}: {error}", path=args.program, error=error.strerror),
            file=sys.stderr,
        )
        return 2
    except ProgramFileError as error:
        print(tr("find-time: {path} has mistakes:", path=args.program), file=sys.stderr)
        print(error, file=sys.stderr)
        return 2
    except ValueError:
        print(tr("find-time: --from and --to take dates, YYYY-MM-DD"), file=sys.stderr)
        return 2
    problems = []
    if not 15 <= args.minutes <= 480:
        problems.append(tr("--minutes must be 15 to 480"))
    if not (first <= last and (last - first).days < MAX_WINDOW_DAYS):
        problems.append(
            tr("--to must be on or after --from, within {days} days", days=MAX_WINDOW_DAYS)
        )
    if not 1 <= args.limit <= 100:
        problems.append(tr("--limit must be 1 to 100"))
    known = {p.id: p for p in program.people}
    wanted = [i for i in args.required.split(",") if i]
    invited = [i for i in args.optional.split(",") if i]
    unknown = [i for i in wanted + invited if i not in known]
    if unknown:
        problems.append(tr("not in the programme: {ids}", ids=", ".join(unknown)))
    if not wanted:
        problems.append(tr("--required needs at least one id"))
    if problems:
        for problem in problems:
            print(f"find-time: {problem}", file=sys.stderr)
        return 2
    if args.with_plan:
        plan = plan_program(program)
        taken: dict[str, list[Span]] = {}
        for event in plan.events:
            for person_id in event.required:
                taken.setdefault(person_id, []).append(Span(event.start, event.end))
        known = {i: replace(p, busy=p.busy + tuple(taken.get(i, ()))) for i, p in known.items()}
    options = find_meeting_times(
        [known[i] for i in wanted],
        [known[i] for i in invited],
        args.minutes,
        first,
        last,
        load_shipped(),
        program.office_hours,
        program.slot_minutes,
        args.limit,
    )
    if not options:
        print(tr("No time in that window suits every required attendee."))
        return 1
    for option in options:
        who = tr("can come: {ids}", ids=", ".join(option.can_come)) if option.can_come else ""
        away = tr("cannot: {ids}", ids=", ".join(option.cannot_come)) if option.cannot_come else ""
        # English keeps the ISO day that --from and --to take; Chinese, the Minguo date.
        day = option.start.date()
        when = dates.long_date(day) if i18n.current_language() == "zh_TW" else f"{day:%a %Y-%m-%d}"
        line = f"{when} {option.start:%H:%M}-{option.end:%H:%M}"
        print("  ".join(part for part in (line, who, away) if part))
    return 0


if __name__ == "__main__":
    sys.exit(main())
