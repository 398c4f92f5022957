"""Alerts, dashboard and metrics, checked by Prometheus's own tools: the
rules pass `promtool check rules` and their unit tests (every alert fires
and clears); every alert has a runbook entry; the dashboard is well-formed
Grafana JSON whose every expression Prometheus parses; the metrics endpoint
passes `promtool check metrics`; and a real Prometheus server scraping the
suite finds the metrics with the expected labels and values."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from services.quota.service import QuotaService
from tests.conftest import Suite
from tests.matcher.test_booking import book, case, slots, submit
from tests.suite.test_service_metrics import enough_people
from tests.tools import require_tool

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "k8s" / "base" / "monitoring"
ALERT_TESTS = Path(__file__).parents[1] / "monitoring" / "alerts_test.yaml"


def _groups() -> dict[str, Any]:
    rule = yaml.safe_load((MONITORING / "prometheus-rules.yaml").read_text())
    assert rule["kind"] == "PrometheusRule"
    return {"groups": rule["spec"]["groups"]}


def _alerts() -> list[dict[str, Any]]:
    return [r for g in _groups()["groups"] for r in g["rules"] if "alert" in r]


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((MONITORING / "dashboard.json").read_text())
    return loaded


def _expressions() -> list[str]:
    found = [str(t["expr"]) for p in _dashboard()["panels"] for t in p["targets"]]
    return found + [str(a["expr"]) for a in _alerts()]


def test_rules_pass_promtool_and_every_alert_fires_and_clears(tmp_path: Path) -> None:
    promtool = require_tool("promtool", "it checks and unit-tests the alert rules")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(_groups(), sort_keys=False))
    shutil.copy(ALERT_TESTS, tmp_path / "alerts_test.yaml")
    check = subprocess.run(
        [promtool, "check", "rules", "rules.yaml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    unit = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert unit.returncode == 0, unit.stdout + unit.stderr
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    fired = {c["alertname"] for t in tests for c in t["alert_rule_test"] if c.get("exp_alerts")}
    cleared = {
        c["alertname"] for t in tests for c in t["alert_rule_test"] if c.get("exp_alerts") == []
    }
    names = {a["alert"] for a in _alerts()}
    assert fired == names and cleared == names


def test_every_alert_has_a_runbook_entry() -> None:
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    headings = set(re.findall(r"^## (\w+)$", runbook, re.M))
    for alert in _alerts():
        assert alert["alert"] in headings
        anchor = alert["annotations"]["runbook_url"].rsplit("#", 1)[1]
        assert anchor == alert["alert"].lower()


def test_dashboard_is_well_formed_grafana_json() -> None:
    board = _dashboard()
    schema = json.loads(
        (Path(__file__).parents[1] / "monitoring/grafana-dashboard.schema.json").read_text()
    )
    jsonschema.validate(board, schema)
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in board["templating"]["list"]}
    for panel in board["panels"]:
        assert panel["type"] in ("timeseries", "barchart", "stat", "gauge", "table")
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert panel["gridPos"]["x"] >= 0 and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert panel["datasource"]["uid"].strip("${}") in variables
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs))
        assert all(t["expr"].strip() for t in panel["targets"])
    titles = " ".join(p["title"].lower() for p in board["panels"])
    for topic in ("traffic", "errors", "latency", "burn-down", "match jobs", "unserved"):
        assert topic in titles


def test_prometheus_parses_every_expression(tmp_path: Path) -> None:
    promtool = require_tool("promtool", "it parses the dashboard's and alerts' expressions")
    rules = {
        "groups": [
            {
                "name": "parse-only",
                "rules": [
                    {"record": f"eap:parse_check:{n}", "expr": expr}
                    for n, expr in enumerate(_expressions())
                ],
            }
        ]
    }
    (tmp_path / "exprs.yaml").write_text(yaml.safe_dump(rules))
    check = subprocess.run(
        [promtool, "check", "rules", "exprs.yaml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr


async def _body(suite: Suite) -> str:
    assert suite.server is not None
    url = f"http://127.0.0.1:{suite.server.metrics_port}/metrics"
    return await asyncio.to_thread(lambda: urllib.request.urlopen(url).read().decode())


async def _traffic(suite: Suite) -> None:
    await submit(suite, case())
    await book(suite, (await slots(suite))[0])


async def test_the_metrics_endpoint_passes_promtool(suite: Suite) -> None:
    promtool = require_tool("promtool", "it lints the metrics endpoint")
    await _traffic(suite)
    body = await _body(suite)
    check = await asyncio.to_thread(
        subprocess.run,
        [promtool, "check", "metrics"],
        input=body,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.strip() == "" and check.stderr.strip() == "", check.stdout + check.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _query(port: int, expr: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url) as answer:
        loaded: dict[str, Any] = json.load(answer)
    return loaded


@pytest.fixture
async def prometheus(suite: Suite, tmp_path: Path) -> AsyncIterator[int]:
    """A real Prometheus on loopback, scraping the suite every second."""
    binary = require_tool("prometheus", "a real server scrapes the suite")
    assert suite.server is not None
    port = _free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "eap",
                "static_configs": [{"targets": [f"127.0.0.1:{suite.server.metrics_port}"]}],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    process = await asyncio.to_thread(
        subprocess.Popen,
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ready = f"http://127.0.0.1:{port}/-/ready"
    try:
        for _ in range(100):
            try:
                await asyncio.to_thread(urllib.request.urlopen, ready)
                break
            except OSError:
                await asyncio.sleep(0.1)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


async def _scraped(port: int, expr: str, seconds: float = 20) -> list[dict[str, Any]]:
    """The query's result once it has one (scrapes come every second)."""
    deadline = time.monotonic() + seconds
    while True:
        answer = await asyncio.to_thread(_query, port, expr)
        assert answer["status"] == "success", answer
        if answer["data"]["result"] or time.monotonic() > deadline:
            result: list[dict[str, Any]] = answer["data"]["result"]
            return result
        await asyncio.sleep(0.5)


async def test_a_real_prometheus_scrapes_the_suite(suite: Suite, prometheus: int) -> None:
    assert suite.server is not None
    await _traffic(suite)
    await enough_people(suite)  # or the balances are not exported
    (quota,) = [s for s in suite.server.services if isinstance(s, QuotaService)]
    await quota.reads.refresh_metrics(2027)
    handled = await _scraped(
        prometheus,
        'grpc_server_handled_total{grpc_service="eap.matcher.v1.MatcherService",'
        'grpc_method="ConfirmBooking",grpc_code="OK"}',
    )
    assert handled and float(handled[0]["value"][1]) >= 1
    assert handled[0]["metric"]["grpc_type"] == "unary" and handled[0]["metric"]["job"] == "eap"
    spent = await _scraped(
        prometheus, 'eap_quota_agency_budget_ntd{agency="PT-HR",fiscal_year="2027",state="spent"}'
    )
    assert spent and float(spent[0]["value"][1]) > 0
    booked = await _scraped(prometheus, 'eap_matcher_bookings_total{outcome="booked"}')
    assert booked and float(booked[0]["value"][1]) >= 1
    # Every expression of the dashboard and the alerts runs on the server.
    for expr in _expressions():
        answer = await asyncio.to_thread(_query, prometheus, expr)
        assert answer["status"] == "success", (expr, answer)
