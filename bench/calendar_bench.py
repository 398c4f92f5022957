"""Calendar benchmark: plan a year for 2,000 people with 300 events.

A deterministic generator (`program_text`) writes a county-sized programme
file: 2,000 people in 40 departments, each with weekly commitments and a
few one-off busy days; 20 rooms; activities of every cadence (quarterly
circles, monthly groups, twice-yearly reviews, trainings by audience,
one-off meetings) adding up to 300 occurrences, each with 2-6 required
attendees drawn so that department heads and conveners sit in many, and
optional attendees by role. `eapctl calendar plan` then plans it in its own
process; the bench records wall time, peak memory (the child's maximum
resident set), events placed and the solver's status. Target (issue 4):
under 30 s on this machine.

Usage:  .venv/bin/python bench/calendar_bench.py [--seed 1] [--no-write]
Writes its section of bench/RESULTS.md (between calendar-bench markers)
unless --no-write is given.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results import header, marks, write_section

PEOPLE = 2000
DEPARTMENTS = 40
ROOMS = 20
TARGET_SECONDS = 30.0
EAPCTL = str(Path(sys.executable).with_name("eapctl"))
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri")


def program_text(seed: int, year: int = 2027) -> tuple[str, int]:
    """The programme file, and how many occurrences it asks for."""
    rng = random.Random(seed)
    lines = [
        "[program]",
        f'name = "Benchmark county {seed}"',
        f"year = {year}",
        'office_hours = ["08:30-12:00", "13:30-17:30"]',
        "max_events_per_person_per_day = 2",
        "",
    ]
    people = [f"p{n:04d}" for n in range(PEOPLE)]
    heads = people[:DEPARTMENTS]  # one head per department, in many meetings
    for n, person in enumerate(people):
        department = n % DEPARTMENTS
        roles = [f"dept-{department:02d}"]
        if n < DEPARTMENTS:
            roles.append("head")
        elif n < DEPARTMENTS * 3:
            roles.append("volunteer")
        weekly = [
            f'"{day} {start}"'
            for day, start in rng.sample(
                [(d, s) for d in WEEKDAYS for s in ("08:30-10:00", "10:30-12:00", "14:00-16:00")],
                rng.randint(1, 3),
            )
        ]
        busy = []
        for _ in range(rng.randint(2, 6)):
            day = dt.date(year, 1, 1) + dt.timedelta(days=rng.randrange(365))
            busy.append(f'"{day} 08:30/17:30"')
        lines += [
            "[[people]]",
            f'id = "{person}"',
            f"roles = [{', '.join(repr(r).replace(chr(39), chr(34)) for r in roles)}]",
            f"weekly_busy = [{', '.join(weekly)}]",
            f"busy = [{', '.join(busy)}]",
            "",
        ]
    for n in range(ROOMS):
        lines += [
            "[[rooms]]",
            f'id = "room-{n:02d}"',
            f"capacity = {rng.choice([12, 20, 40, 80])}",
            "",
        ]
    cadences = [("quarterly", 4), ("monthly", 12), ("twice-a-year", 2), (3, 3), ("once", 1)]
    occurrences = 0
    number = 0
    while occurrences < 300:
        cadence, count = rng.choice(cadences)
        if occurrences + count > 300:
            cadence, count = "once", 1
        required = rng.sample(heads, rng.randint(1, 3)) + rng.sample(people, rng.randint(1, 3))
        windows = '["Jan-Dec"]'
        if cadence == "twice-a-year":
            windows = '["Jan-Jun", "Jul-Dec"]'
        elif cadence == "once" or isinstance(cadence, int):
            first = rng.randrange(1, 11)
            months = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov")
            windows = f'["{months[first - 1]}-{months[min(first + 1, 10)]}"]'
        cadence_value = cadence if isinstance(cadence, int) else f'"{cadence}"'
        lines += [
            "[[activities]]",
            f'id = "activity-{number:03d}"',
            f"cadence = {cadence_value}",
            f"windows = {windows}",
            f"duration_minutes = {rng.choice([60, 90, 120])}",
            f"required = [{', '.join(chr(34) + p + chr(34) for p in dict.fromkeys(required))}]",
            f'optional = ["role:dept-{rng.randrange(DEPARTMENTS):02d}"]',
            "",
        ]
        if isinstance(cadence, int):
            lines.insert(-1, "min_gap_days = 14")
        occurrences += count
        number += 1
    return "\n".join(lines), occurrences


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    text, occurrences = program_text(args.seed)
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "program.toml"
        path.write_text(text)
        began = time.monotonic()
        run = subprocess.run(
            [EAPCTL, "calendar", "plan", str(path), "--time-limit", "20"],
            capture_output=True,
            text=True,
        )
        wall = time.monotonic() - began
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if run.returncode not in (0, 1):
        print(run.stdout, run.stderr, file=sys.stderr)
        return 1
    summary = run.stdout.splitlines()[0]
    met = wall < TARGET_SECONDS
    print(f"{summary}; wall {wall:.1f} s, peak {peak_mib:.0f} MiB: {'met' if met else 'missed'}")
    if args.no_write:
        return 0
    start_mark, end_mark = marks("calendar-bench")
    section = "\n".join(
        [
            start_mark,
            *header(
                "Calendar: a year for 2,000 people with 300 events",
                ".venv/bin/python bench/calendar_bench.py",
                "bench-calendar",
                started,
            ),
            f"Method: `program_text(seed={args.seed})` in the bench writes a programme of "
            f"{PEOPLE:,} people ({DEPARTMENTS} departments, weekly commitments and one-off busy "
            f"days), {ROOMS} rooms and activities of every cadence adding up to {occurrences} "
            "occurrences; `eapctl calendar plan FILE --time-limit 20` plans it in its own "
            "process (wall time includes reading the file, working out each occurrence's "
            "allowed starts, solving and printing). Peak memory is that process's maximum "
            "resident set.",
            "",
            "| people | occurrences | result | wall s | peak MiB | target |",
            "|---:|---:|---|---:|---:|---|",
            f"| {PEOPLE:,} | {occurrences} | {summary.split(': ', 1)[1]} | {wall:.1f} | "
            f"{peak_mib:.0f} | {'met' if met else '**missed**'} (< {TARGET_SECONDS:.0f} s) |",
            "",
            end_mark,
        ]
    )
    write_section("calendar-bench", section)
    print("wrote bench/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
