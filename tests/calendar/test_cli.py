"""eapctl calendar plan and find-time, as HR runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import icalendar

from tests.calendar.test_planning import read_in_two_libraries

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


# The example's titles as a county's HR would write them in Chinese.
CHINESE_TITLES = {
    "EAP promotion group annual meeting": "員工協助方案推動小組年度會議",
    "EAP working circle quarterly meeting": "員工協助方案工作圈季會",
    "Group counseling: stress and sleep": "團體諮商：壓力與睡眠",
}


def test_plan_in_traditional_chinese_passes_the_same_ics_checks(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    for english, chinese in CHINESE_TITLES.items():
        text = text.replace(f'title = "{english}"', f'title = "{chinese}"')
    program = tmp_path / "pingtung-zh.toml"
    program.write_text(text, encoding="utf-8")
    ics, html = tmp_path / "p.ics", tmp_path / "p.html"
    run = subprocess.run(
        [
            EAPCTL,
            "calendar",
            "plan",
            str(program),
            *("--lang", "zh-TW", "--ics", str(ics)),
            *("--html", str(html)),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert run.stdout.startswith("Pingtung County EAP 2027：已排定 19 場活動，0 場未能排入（最佳解")
    assert "116年1月\n 一  二  三  四  五  六  日" in run.stdout  # Minguo months, Chinese weekdays
    assert f"已寫入 {ics}（19 場活動）" in run.stdout
    events = icalendar.Calendar.from_ical(ics.read_bytes()).walk("VEVENT")
    assert len(read_in_two_libraries(ics.read_bytes())) == len(events) == 19
    summaries = {str(e["summary"]) for e in events}
    assert "員工協助方案工作圈季會（第 2 次，共 4 次）" in summaries
    assert "團體諮商：壓力與睡眠（第 6 次，共 6 次）" in summaries
    for event in events:
        description = str(event["description"])
        assert description.startswith("必要出席者："), description
        assert "Required" not in description and "Optional" not in description
    page = html.read_text(encoding="utf-8")
    assert page.startswith("<!doctype html><html lang='zh-Hant-TW'>")
    assert "<h2>116年3月</h2>" in page and "<th>一</th>" in page
    assert "已排定 19 場活動" in page
    # English where the reader asks for it, from the same file.
    in_english = subprocess.run(
        [EAPCTL, "--lang", "en", "calendar", "plan", str(program), "--ics", str(ics)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "19 events placed" in in_english.stdout and "January 2027" in in_english.stdout
    described = icalendar.Calendar.from_ical(ics.read_bytes()).walk("VEVENT")[0]["description"]
    assert str(described).startswith("Required: ")
