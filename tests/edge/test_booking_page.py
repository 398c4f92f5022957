"""The reference booking page (services/edge/page) in a real browser:
Playwright drives Debian's chromium (never a downloaded one) through the
Envoy edge, against the suite on PostgreSQL and Redis in jwt mode, as an
employee who reads Traditional Chinese."""

from __future__ import annotations

import datetime as dt
import http.server
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import pytest
import redis
from playwright.async_api import Browser, Page, async_playwright, expect

from eap.matcher.v1 import matcher_pb2 as mpb
from eap.matcher.v1 import matcher_pb2_grpc
from eap.quota.v1 import quota_pb2_grpc
from services.edge.config import local
from services.edge.process import EdgeProcess
from services.edge.static import PAGE_DIR
from services.matcher.service import MatcherService
from services.quota.service import QuotaService
from services.runtime.config import Settings
from services.runtime.server import RunningServer, start
from tests import stores
from tests.access import AsAdmin, Keys, bearer, make_keys, secured
from tests.conftest import MONDAY, TAIPEI, at
from tests.county import counselor, enrol, seed
from tests.tools import require_tool

NOW = dt.datetime(2027, 3, 8, 8, tzinfo=TAIPEI)  # the march_2027 clock, for the browser too
EMPLOYEE = "E1"
CLIENTS = PAGE_DIR / "clients.js"
WEEKLY_REASON = "每人每週以一次諮商為限：該週已有一次諮商。"


@dataclass
class Suite:
    made: Keys
    server: RunningServer
    edge: EdgeProcess
    origins: Origins

    def token(self, subject: str = EMPLOYEE) -> str:
        return self.made.token("employee", subject)


@dataclass
class Origins:
    allowed: str  # a page of the county's, on a server of its own
    other: str  # anybody's: not on the edge's allowlist


class _CountyPage(http.server.BaseHTTPRequestHandler):
    """A frontend team's own page, which bundles the generated clients."""

    def do_GET(self) -> None:
        if self.path == "/clients.js":
            body, kind = CLIENTS.read_bytes(), "text/javascript"
        else:
            body, kind = b"<!doctype html><title>page</title>", "text/html"
        self.send_response(200)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def origins() -> Iterator[Origins]:
    """Two real page servers on the loopback (a page the browser made up
    would be of no address space, and Chrome's local network access rules
    would refuse it before CORS had its say)."""
    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CountyPage) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield Origins(*(f"http://127.0.0.1:{s.server_address[1]}" for s in servers))
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
async def suite(tmp_path: Path, march_2027: None, origins: Origins) -> AsyncIterator[Suite]:
    """Quota and matcher on PostgreSQL and Redis, tokens checked, the test
    county seeded, and the edge in front, allowing one other page origin."""
    made = make_keys(tmp_path / "keys")
    with stores.fresh_postgres_database() as url:
        await stores.sign_audit_heads(url, made.audit)
        redis_url = stores.redis_url()
        redis.Redis.from_url(redis_url).flushdb()
        settings = secured(
            Settings(
                grpc_address="127.0.0.1:0",
                metrics_port=0,
                database_url=url,
                redis_url=redis_url,
                edge_allowed_origins=(origins.allowed,),
            ),
            made,
        )
        server = await start([QuotaService(), MatcherService()], settings)
        address = f"127.0.0.1:{server.port}"
        admin = bearer(made.token("admin", "eap-admin"))
        async with grpc.aio.insecure_channel(address, interceptors=[AsAdmin(admin)]) as setup:
            await seed(quota_pb2_grpc.QuotaServiceStub(setup))
            matcher = matcher_pb2_grpc.MatcherServiceStub(setup)
            await enrol(matcher)
            for number, name in ((1, "林諮商師"), (2, "陳諮商師")):
                named = counselor(f"C00{number}", provider=f"P{number}", display_name=name)
                await matcher.UpsertCounselor(mpb.UpsertCounselorRequest(counselor=named))
        edge = EdgeProcess(
            replace(local(settings, address, "127.0.0.1:0"), allow_loopback_origins=False)
        )
        await edge.start()
        try:
            yield Suite(made, server, edge, origins)
        finally:
            await edge.stop()
            await server.stop(0)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    chromium = require_tool("chromium", "the booking page's tests", override="EAP_CHROMIUM")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=chromium, args=["--no-sandbox"], headless=True
        )
        yield launched
        await launched.close()


async def signed_in_page(browser: Browser, suite: Suite) -> Page:
    page = await browser.new_page(locale="zh-TW", timezone_id="Asia/Taipei")
    await page.clock.set_fixed_time(NOW)
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    await page.goto(f"{suite.edge.url}/#token={suite.token()}")
    await expect(page.get_by_role("heading", name="我需要的諮商")).to_be_visible()
    assert "#token" not in page.url  # out of the address bar and the history
    assert not problems, problems
    return page


async def ask_for(page: Page, sessions: int = 1) -> None:
    await page.get_by_label("諮商類別").select_option(label="心理")
    await page.get_by_label("希望的次數（每週最多一次）").fill(str(sessions))
    await page.get_by_role("button", name="找可預約的時段").click()
    await expect(page.get_by_role("heading", name="可預約的時段")).to_be_focused()


async def test_an_employee_books_reschedules_and_cancels_in_chinese(
    suite: Suite, browser: Browser
) -> None:
    page = await signed_in_page(browser, suite)
    assert await page.locator("html").get_attribute("lang") == "zh-Hant-TW"
    await ask_for(page, sessions=2)
    slots = page.get_by_role("button", name="預約這個時段")
    assert await slots.count() > 1
    first = await page.locator("#slot-list li p").first.inner_text()
    assert "林諮商師" in first and "3月8日" in first  # Monday 8 March, in Taipei time
    assert "地點：Pingtung office 3F" in first  # where it takes place
    await slots.first.click()
    await expect(page.get_by_role("heading", name="確認預約")).to_be_focused()
    await expect(page.locator("#held-text")).to_contain_text("時段為您保留到")
    await page.get_by_role("button", name="確認預約").click()
    await expect(page.get_by_role("status")).to_contain_text("已預約：")
    bookings = page.locator("#booking-list li")
    await expect(bookings).to_have_count(1)
    await expect(bookings.first).to_contain_text("已預約")

    await page.get_by_role("button", name="改期").click()
    await expect(page.locator("#slots-for")).to_contain_text("改期：")
    await page.get_by_role("button", name="改到這個時段").nth(1).click()
    await expect(page.locator("#held-text")).to_contain_text("改到")
    await page.get_by_role("button", name="確認改期").click()
    await expect(page.get_by_role("status")).to_contain_text("已改期到")
    await expect(bookings).to_have_count(2)
    await expect(page.locator("#booking-list")).to_contain_text("已取消")  # the old time

    # Cancelling asks first, by keyboard as well as by pointer.
    await page.get_by_role("button", name="取消", exact=True).click()
    dialog = page.get_by_role("dialog", name="取消這次預約？")
    await expect(dialog).to_be_visible()
    await dialog.get_by_label("原因（可不填，只有承辦人看得到）").fill("臨時有公務")
    await dialog.get_by_role("button", name="取消預約").focus()
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("status")).to_contain_text("已取消")
    await expect(page.get_by_role("button", name="改期")).to_have_count(0)


async def test_a_booking_the_weekly_rule_refuses_shows_the_servers_chinese_reason(
    suite: Suite, browser: Browser
) -> None:
    page = await signed_in_page(browser, suite)
    await ask_for(page)
    # Meanwhile the same employee books another session of that week
    # elsewhere (their phone, say).
    async with grpc.aio.insecure_channel(f"127.0.0.1:{suite.server.port}") as channel:
        matcher = matcher_pb2_grpc.MatcherServiceStub(channel)
        me = bearer(suite.token())
        submitted = await matcher.SubmitCase(
            mpb.SubmitCaseRequest(
                request_id="on-my-phone",
                case=mpb.Case(
                    employee_id=EMPLOYEE,
                    category=mpb.CATEGORY_FAMILY,
                    kind=mpb.CASE_KIND_GENERAL,
                    sessions_wanted=1,
                    minutes=60,
                    modalities=[mpb.MODALITY_VIDEO],
                    availability=[mpb.TimeRange(start=at(MONDAY, 13), end=at(MONDAY, 18))],
                    time_off=mpb.TIME_OFF_OFFICIAL_LEAVE,
                ),
            ),
            metadata=me,
        )
        found = await matcher.FindSlots(
            mpb.FindSlotsRequest(case_id=submitted.case.case_id), metadata=me
        )
        held = await matcher.HoldSlot(
            mpb.HoldSlotRequest(
                case_id=submitted.case.case_id,
                counselor_id=found.slots[-1].counselor_id,
                start=found.slots[-1].start,
            ),
            metadata=me,
        )
        await matcher.ConfirmBooking(
            mpb.ConfirmBookingRequest(booking_id=held.booking.booking_id), metadata=me
        )
    await page.get_by_role("button", name="預約這個時段").first.click()
    alert = page.get_by_role("alert")
    await expect(alert).to_have_text(WEEKLY_REASON)
    await expect(alert).to_be_focused()  # read out at once
    await expect(page.get_by_role("heading", name="確認預約")).to_be_hidden()


CALLS = """
async ({ edge, token }) => {
  // Connect's JSON, by hand, as any page's fetch would send it.
  const answer = await fetch(`${edge}/eap.matcher.v1.MatcherService/ListCounselors`, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      "connect-protocol-version": "1",
      authorization: `Bearer ${token}`,
    },
    body: "{}",
  });
  const json = await answer.json();
  // gRPC-Web, with the generated client (the page's own copy).
  const web = await import("/clients.js");
  const client = web.createClient(
    web.matcher.MatcherService,
    web.createGrpcWebTransport({
      baseUrl: edge,
      interceptors: [(next) => (request) => {
        request.header.set("authorization", `Bearer ${token}`);
        return next(request);
      }],
    }),
  );
  const typed = await client.listCounselors({ pageSize: 1 });
  return {
    status: answer.status,
    json: json.counselors.map((c) => c.counselorId),
    grpcWeb: typed.counselors.map((c) => c.counselorId),
  };
}
"""

REFUSED = """
async ({ edge }) => {
  try {
    await fetch(`${edge}/eap.matcher.v1.MatcherService/ListCounselors`, {
      method: "POST",
      headers: { "content-type": "application/json", "connect-protocol-version": "1" },
      body: "{}",
    });
    return "answered";
  } catch (error) {
    return error.name;  // the browser's CORS refusal: a TypeError, nothing readable
  }
}
"""


async def page_at(browser: Browser, origin: str) -> Page:
    page = await browser.new_page()
    await page.goto(f"{origin}/")
    return page


async def test_an_allowed_origin_calls_over_connect_json_and_grpc_web_and_another_is_refused(
    suite: Suite, browser: Browser
) -> None:
    allowed = await page_at(browser, suite.origins.allowed)
    answered = await allowed.evaluate(CALLS, {"edge": suite.edge.url, "token": suite.token()})
    assert answered == {"status": 200, "json": ["C001", "C002"], "grpcWeb": ["C001"]}
    other = await page_at(browser, suite.origins.other)
    assert await other.evaluate(REFUSED, {"edge": suite.edge.url}) == "TypeError"


async def test_a_token_the_services_refuse_signs_the_person_out_with_the_reason(
    suite: Suite, browser: Browser
) -> None:
    page = await browser.new_page(locale="zh-TW")
    forged = suite.made.token("employee", EMPLOYEE, signer="stranger")
    await page.goto(f"{suite.edge.url}/#token={forged}")
    await expect(page.get_by_role("alert")).to_have_text("請重新登入。")
    await expect(page.get_by_role("heading", name="登入")).to_be_visible()
    await expect(page.get_by_role("heading", name="我需要的諮商")).to_be_hidden()
    assert await page.evaluate("sessionStorage.getItem('eap-token')") is None


UNLABELLED = """
() => [...document.querySelectorAll("input, select, textarea, button")]
  .filter((control) => control.checkVisibility())
  .filter((control) => !(control.labels?.length || control.textContent.trim()))
  .map((control) => control.outerHTML)
"""


async def test_on_a_phone_every_control_is_labelled_and_a_keyboard_alone_can_book(
    suite: Suite, browser: Browser
) -> None:
    page = await browser.new_page(
        locale="zh-TW", viewport={"width": 360, "height": 740}, is_mobile=True, has_touch=True
    )
    await page.clock.set_fixed_time(NOW)
    await page.goto(f"{suite.edge.url}/#token={suite.token()}")
    await expect(page.get_by_role("heading", name="我需要的諮商")).to_be_visible()
    assert await page.evaluate(UNLABELLED) == []
    # Nothing wider than the phone: no sideways scrolling.
    assert await page.evaluate("document.documentElement.scrollWidth") <= 360
    # Keyboard only: to the search button by Tab, Enter; the free times get
    # the focus; Tab to the first, Enter; the confirmation, Enter.
    await page.get_by_label("每次時間").focus()
    for _ in range(30):
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement.textContent") == "找可預約的時段":
            break
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name="可預約的時段")).to_be_focused()
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("button", name="預約這個時段").first).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name="確認預約")).to_be_focused()
    await page.keyboard.press("Tab")
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("status")).to_contain_text("已預約：")
    assert await page.evaluate(UNLABELLED) == []


async def test_when_nothing_can_be_offered_the_page_says_why(
    suite: Suite, browser: Browser
) -> None:
    page = await signed_in_page(browser, suite)
    await page.get_by_label("諮商類別").select_option(label="法律")  # nobody here takes legal
    await page.get_by_role("button", name="找可預約的時段").click()
    why = "沒有諮商師能以您接受的方式提供此類諮商。"  # the server's own words
    await expect(page.get_by_role("status")).to_have_text(why)
    await expect(page.get_by_role("button", name="預約這個時段")).to_have_count(0)
