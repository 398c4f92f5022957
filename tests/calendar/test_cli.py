"""eapctl calendar plan and find-time, as HR runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import icalendar

EAPCTL = str(Path(sys.executable).with_name("eapctl"))
EXAMPLE = Path(__file__).resolve().parents[2] / "services/calendar/examples/pingtung-2027.toml"


def test_plan_writes_grids_ics_csv_and_html(tmp_path: Path) -> None:
    ics, csv, html = tmp_path / "p.ics", tmp_path / "p.csv", tmp_path / "p.html"
    run = subprocess.run(
        [
            EAPCTL,
            "calendar",
            "plan",
            str(EXAMPLE),
            "--ics",
            str(ics),
            "--csv",
            str(csv),
            "--html",
            str(html),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert run.stdout.startswith("Pingtung County EAP 2027: 19 events placed, 0 not")
    assert " Mo  Tu  We  Th  Fr  Sa  Su" in run.stdout
    assert len(icalendar.Calendar.from_ical(ics.read_bytes()).walk("VEVENT")) == 19
    assert len(csv.read_text().splitlines()) == 20
    page = html.read_text()
    assert page.count("class='event") == 19
    # New Year's Day and the Lunar New Year days are greyed as closed.
    assert page.count("class='closed'") > 100


def test_find_time_lists_only_times_everyone_required_can_make() -> None:
    run = subprocess.run(
        [
            EAPCTL,
            "calendar",
            "find-time",
            str(EXAMPLE),
            "--required",
            "secretary-general,deputy-personnel",
            "--minutes",
            "90",
            "--from",
            "2027-05-03",
            "--to",
            "2027-06-04",
            "--limit",
            "3",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = run.stdout.splitlines()
    assert len(lines) == 3
    # The secretary-general sits in the council session 3-28 May.
    assert all(line.startswith(("Mon 2027-05-31", "Tue 2027-06-01")) for line in lines), lines


def test_find_time_refuses_bad_arguments() -> None:
    run = subprocess.run(
        [
            EAPCTL,
            "calendar",
            "find-time",
            str(EXAMPLE),
            "--required",
            "nobody",
            "--from",
            "2027-05-03",
            "--to",
            "2027-05-01",
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2
    assert "not in the programme: nobody" in run.stderr
    assert "--to must be on or after --from" in run.stderr
