"""The HR review report (issue 16, item 4 and acceptance 5): `eapctl review
report` run as HR against a secured suite of two counties, reading the
matcher's review, the quota's budgets and the calendar's attendance over
gRPC; the page rendered by Debian's chromium, its small cells withheld;
the CSV opened as Excel would."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.async_api import async_playwright

from eap.calendar.v1 import calendar_pb2 as cpb
from eap.calendar.v1 import calendar_pb2_grpc
from services.runtime import clock
from services.runtime.server import RunningServer
from tests import review_world
from tests.access import Keys
from tests.conftest import TAIPEI
from tests.tools import require_tool

EAPCTL = str(Path(sys.executable).with_name("eapctl"))
A, B = review_world.A, review_world.B
TRAINEES = [f"t-{n:02d}" for n in range(1, 7)]
BOARD = ["b-01", "b-02"]
PROGRAMME = f"""
[program]
name = "Review report 2027"
year = 2027
office_hours = ["08:30-12:00", "13:30-17:30"]
slot_minutes = 30
max_events_per_person_per_day = 2

[[people]]
ids = {TRAINEES!r}
roles = ["staff"]

[[people]]
ids = {BOARD!r}
roles = ["board"]

[[rooms]]
id = "room-3f"
capacity = 30

[[activities]]
id = "stress-training"
title = "Stress management training"
kind = "training"
windows = ["Jan-Feb"]
duration_minutes = 120
required = ["role:staff"]

[[activities]]
id = "board"
title = "EAP board meeting"
windows = ["Feb-Mar"]
duration_minutes = 60
required = ["role:board"]
"""


@dataclass
class County:
    made: Keys
    server: RunningServer
    plan_id: str

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def token(self, role: str, subject: str, tenant: str = A) -> str:
        return self.made.token(role, subject, tenant=tenant)


async def _plan(calendar: calendar_pb2_grpc.CalendarServiceAsyncStub) -> str:
    """The programme planned, and attendance recorded once it was held:
    every trainee came, one board member missed the meeting."""
    plan_id = (
        await calendar.PlanProgram(cpb.PlanProgramRequest(program_toml=PROGRAMME, year=2027))
    ).plan_id
    for _ in range(600):
        plan = await calendar.GetPlan(cpb.GetPlanRequest(plan_id=plan_id))
        if plan.state in (cpb.PLAN_STATE_DONE, cpb.PLAN_STATE_FAILED):
            break
        await asyncio.sleep(0.1)
    assert plan.state == cpb.PLAN_STATE_DONE, plan.error
    assert {e.activity_id for e in plan.events} == {"stress-training", "board"}, plan.unplaced
    with clock.moved_to(dt.datetime(2027, 3, 31, 18, tzinfo=TAIPEI)):
        for event in plan.events:
            people = TRAINEES if event.activity_id == "stress-training" else BOARD
            await calendar.RecordAttendance(
                cpb.RecordAttendanceRequest(
                    plan_id=plan_id,
                    event_uid=event.uid,
                    attendance=[cpb.Attendance(person_id=p, attended=p != "b-02") for p in people],
                )
            )
    return plan_id


@pytest.fixture
async def county(tmp_path: Path, march_2027: None) -> AsyncIterator[County]:
    async with review_world.two_counties(tmp_path) as world:
        plan_id = await _plan(calendar_pb2_grpc.CalendarServiceStub(world.setup))
        url = world.url(tmp_path)
        await review_world.answered(url, "P1", "psychological", [5, 4, 4, 5, 3, 4])
        await review_world.answered(url, "P2", "family", [4, 4, 4, 4])
        yield County(world.made, world.server, plan_id)


async def eapctl(county: County, token: str, *args: str) -> tuple[int, str, str]:
    """The real command in its own process (the suite keeps answering in
    this one meanwhile)."""
    env = {**os.environ, "EAP_TOKEN": token, "EAP_GRPC_ADDRESS": county.address}
    for name in ("EAP_QUOTA_ADDRESS", "EAP_CALENDAR_ADDRESS", "EAP_TLS_DIR"):
        env.pop(name, None)
    process = await asyncio.create_subprocess_exec(
        EAPCTL,
        "review",
        "report",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    return process.returncode or 0, out.decode(), err.decode()


def _sections(text: str) -> dict[str, list[list[str]]]:
    """The CSV's tables by title: each a heading row and its rows."""
    sections: dict[str, list[list[str]]] = {}
    current: list[list[str]] | None = None
    for row in csv.reader(io.StringIO(text)):
        if not row:
            current = None
        elif current is None:
            current = sections.setdefault(row[0], [])
        else:
            current.append(row)
    return sections


async def test_hr_gets_the_quarter_in_chinese_with_its_small_cells_withheld(
    county: County, tmp_path: Path
) -> None:
    chromium = require_tool("chromium", "it renders the review report", override="EAP_CHROMIUM")
    page_file, csv_file = tmp_path / "review.html", tmp_path / "review.csv"
    code, out, err = await eapctl(
        county,
        county.token("hr", "pt-hr"),
        "--period",
        review_world.PERIOD,
        "--plan",
        county.plan_id,
        "--html",
        str(page_file),
        "--csv",
        str(csv_file),
        "--lang",
        "zh-TW",
    )
    assert code == 0, err
    assert str(page_file) in out and str(csv_file) in out

    # The page, as a browser lays it out.
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium, args=["--no-sandbox"], headless=True
        )
        try:
            page = await browser.new_page(locale="zh-TW")
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            await page.goto(page_file.as_uri())
            assert requests == [page_file.as_uri()]  # self-contained: nothing else loads
            assert await page.locator("html").get_attribute("lang") == "zh-Hant-TW"
            headings = await page.locator("h2").all_inner_texts()
            assert headings == [
                "各類別與會談方式之場次",
                "自申請至首次會談之等候時間",
                "未出席與逾時取消",
                "各機關預算執行情形",
                "各服務機構時數上限",
                "各服務機構與類別之滿意度",
                "會議、訓練與團體活動",
            ]
            sessions = page.locator("#sessions table")
            header = await sessions.locator("thead th").all_inner_texts()
            assert header[0] == "類別" and "視訊" in header and "面談" in header
            rows = {
                (await r.locator("td").first.inner_text()): await r.locator("td").all_inner_texts()
                for r in await sessions.locator("tbody tr").all()
            }
            video = header.index("視訊")
            assert rows["心理"][video] == "6"
            # Two people's family sessions by video: withheld, and marked so.
            assert rows["家庭"][video].startswith("—")
            assert await page.locator("#sessions td.withheld").count() >= 2  # and its complement
            footer = await page.locator("footer").inner_text()
            assert "少於 5 人" in footer
            # Ten answers on the whole (mean 4.1), four of them P2's: P2's
            # rows are withheld, and P1's with them (ten less six is four).
            satisfaction = page.locator("#satisfaction tbody tr")
            overall = await satisfaction.filter(has_text="全部服務機構").last.inner_text()
            assert overall.split("\t")[-2:] == ["10", "4.10"]
            for provider in ("P1", "P2"):
                for row in await satisfaction.filter(has_text=provider).all_inner_texts():
                    assert row.split("\t")[-2:] == ["—*", "—*"], row
            agencies = await page.locator("#agencies tbody").inner_text()
            assert "PT-HR" in agencies and "100,000" in agencies
            activities = page.locator("#activities tbody tr")
            training = await activities.filter(has_text="Stress management").inner_text()
            assert "訓練" in training and "100.0%" in training
            board = await activities.filter(has_text="EAP board meeting").inner_text()
            assert "—" in board  # two people
            shot = await page.screenshot(full_page=True)
            assert len(shot) > 20_000
            # Nothing runs off the side of a laptop's screen.
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= 1280
        finally:
            await browser.close()

    # The same tables in the CSV, Excel's way: a byte-order mark, then UTF-8.
    raw = csv_file.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    sections = _sections(raw.decode("utf-8-sig"))
    table = sections["各類別與會談方式之場次"]
    heading, body = table[0], {r[0]: r for r in table[1:]}
    assert body["心理"][heading.index("視訊")] == "6"
    assert body["家庭"][heading.index("視訊")] == "—"
    waiting = sections["自申請至首次會談之等候時間"]
    assert waiting[0] == ["類別", "個案數", "中位數（日）", "第 90 百分位（日）"]
    assert {r[0]: r[1] for r in waiting[1:] if len(r) > 1}["全部類別"] == "20"
    budgets = sections["各機關預算執行情形"]
    assert [row[:3] for row in budgets[1:3]] == [
        ["PT-EDU", "PT-EDU", "100000"],
        ["PT-HR", "PT-HR", "100000"],
    ]
    # Nobody named: no employee id, no case id, no attendee of the calendar.
    text = page_file.read_text(encoding="utf-8") + raw.decode("utf-8-sig")
    for someone in ("E100", "RV-00", *TRAINEES, *BOARD, "pt-hr"):
        assert someone not in text, someone


async def test_another_countys_hr_reads_nothing_of_this_one(county: County, tmp_path: Path) -> None:
    out_file = tmp_path / "theirs.csv"
    code, _, err = await eapctl(
        county,
        county.token("hr", "ml-hr", tenant=B),
        "--period",
        review_world.PERIOD,
        "--csv",
        str(out_file),
        "--lang",
        "en",
    )
    assert code == 0, err
    sections = _sections(out_file.read_bytes().decode("utf-8-sig"))
    sessions = sections["Sessions by category and way of meeting"]
    assert all(cell in ("—", "0") for row in sessions[1:] for cell in row[1:])
    assert "PT-HR" not in out_file.read_text(encoding="utf-8")
    assert len(sections["Budget execution by agency"]) == 2  # a heading and its note


async def test_an_employee_is_refused_in_words_and_nothing_is_written(
    county: County, tmp_path: Path
) -> None:
    out_file = tmp_path / "mine.html"
    code, _, err = await eapctl(
        county,
        county.token("employee", "E100"),
        "--period",
        review_world.PERIOD,
        "--html",
        str(out_file),
        "--lang",
        "en",
    )
    assert code == 1 and err.startswith("PERMISSION_DENIED"), err
    assert not out_file.exists()
    code, _, err = await eapctl(
        county, county.token("hr", "pt-hr"), "--period", "2027-Q5", "--csv", str(out_file)
    )
    assert code == 1 and err.startswith("INVALID_ARGUMENT"), err
