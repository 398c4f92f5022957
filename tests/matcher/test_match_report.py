"""The HTML report of a schedule: self-contained, with its charts, and (where
headless Chromium is installed) rendered by a real browser."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

from services.matcher.optimization import greedy
from services.matcher.optimization.generate import generate
from services.matcher.optimization.instance import dump_schedule, load_instance
from services.matcher.optimization.report import render
from tests.tools import require_tool

EAPCTL = str(Path(sys.executable).with_name("eapctl"))
GREEN = (0x2F, 0x8F, 0x4E)  # "fully served" bars
BLUE = (0x2C, 0x6F, 0xAD)  # budget spent


def _report(tmp_path: Path) -> Path:
    inst = load_instance(generate("S", 1))
    page = render(inst, greedy.solve(inst))
    path = tmp_path / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def test_the_report_carries_its_charts_and_needs_nothing_else(tmp_path: Path) -> None:
    page = _report(tmp_path).read_text(encoding="utf-8")
    assert page.count("<svg") == 3  # served, reasons, budgets
    assert 'class="heat"' in page  # utilization by counselor and day
    assert "NO_QUALIFIED_COUNSELOR" in page or "OUTCOMPETED" in page
    # Self-contained: no scripts, stylesheets or images fetched from anywhere.
    for outside in ("<script", "<link", "src=", "http://", "https://"):
        assert outside not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")


def _pixels(png: bytes) -> tuple[int, int, int, bytes]:
    """Width, height, bytes per pixel and raw rows of an 8-bit PNG."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    at, data = 8, b""
    width = height = channels = 0
    while at < len(png):
        (size,) = struct.unpack(">I", png[at : at + 4])
        kind, body = png[at + 4 : at + 8], png[at + 8 : at + 8 + size]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour in (2, 6), (depth, colour)
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            data += body
        at += 12 + size
    raw, stride = zlib.decompress(data), width * channels
    rows, previous = bytearray(), bytearray(stride)
    for y in range(height):
        kind, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for x in range(stride):
            left = line[x - channels] if x >= channels else 0
            up, corner = previous[x], previous[x - channels] if x >= channels else 0
            if kind == 1:
                line[x] = (line[x] + left) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + up) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 0xFF
            elif kind == 4:
                guess = left + up - corner
                nearest = min(
                    (abs(guess - left), 0, left),
                    (abs(guess - up), 1, up),
                    (abs(guess - corner), 2, corner),
                )[2]
                line[x] = (line[x] + nearest) & 0xFF
        rows += line
        previous = line
    return width, height, channels, bytes(rows)


def test_a_browser_renders_the_charts(tmp_path: Path) -> None:
    browser = require_tool("chromium", "it renders the report", override="EAP_CHROMIUM")
    page, shot = _report(tmp_path), tmp_path / "report.png"
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1280,1400",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=90,
        check=True,
    )
    width, height, channels, rows = _pixels(shot.read_bytes())
    assert (width, height) == (1280, 1400)
    counts = {GREEN: 0, BLUE: 0}
    for at in range(0, len(rows), channels):
        colour = (rows[at], rows[at + 1], rows[at + 2])
        if colour in counts:
            counts[colour] += 1
    # Bars are drawn: hundreds of pixels of each chart's colour.
    assert counts[GREEN] > 500 and counts[BLUE] > 500, counts


def test_eapctl_writes_the_report_in_traditional_chinese(tmp_path: Path) -> None:
    """HR's words (and a Minguo date) in Chinese, declared so for screen
    readers and fonts; ids and reason codes as the JSON has them."""
    instance, schedule = tmp_path / "s1.json", tmp_path / "s1.greedy.json"
    instance.write_text(json.dumps(generate("S", 1)))
    schedule.write_text(json.dumps(dump_schedule(greedy.solve(load_instance(generate("S", 1))))))
    pages = {}
    for language in ("zh-TW", "en"):
        out = tmp_path / f"report.{language}.html"
        subprocess.run(
            [
                EAPCTL,
                "match",
                "report",
                str(instance),
                str(schedule),
                "--lang",
                language,
                "-o",
                out,
            ],
            capture_output=True,
            check=True,
            timeout=120,
        )
        pages[language] = out.read_text(encoding="utf-8")
    chinese, english = pages["zh-TW"], pages["en"]
    assert '<html lang="zh-Hant-TW">' in chinese and '<html lang="en">' in english
    for words in ("<title>媒合報告：", "已服務與未服務", "各機關預算使用情形", "諮商師每日使用率"):
        assert words in chinese, words
    assert "116年3月1日（一）" in chinese  # the horizon's first day, on a Minguo form
    assert "（一）</th>" in chinese  # the utilization table's days
    assert "Matching report" not in chinese and "Matching report" in english
    assert "Mon 1 Mar 2027" in english
    # Reason codes stay codes; their words are translated beside them.
    assert "OUTCOMPETED" in chinese or "NO_QUALIFIED_COUNSELOR" in chinese
    assert "合格諮商師的空檔已排給其他個案" in chinese or "沒有諮商師能以個案" in chinese
