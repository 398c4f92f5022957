"""The survey page (services/edge/page/survey.html) in a real browser, as
the booking page's tests run it (test_booking_page.py: Debian's chromium
through the Envoy edge, the suite on PostgreSQL and Redis in jwt mode): the
one-time link of an attended session opens it without signing in, the
person answers, the answers are kept apart from the session, and a link
that cannot be answered (any more) says why."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Iterator

import grpc
from playwright.async_api import Browser, Page, Request, expect
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import async_sessionmaker

from eap.matcher.v1 import matcher_pb2 as mpb
from eap.matcher.v1 import matcher_pb2_grpc
from eap.matcher.v1 import survey_pb2 as spb
from services.matcher.notices.rows import NoticeRow
from services.matcher.service import MatcherService
from services.matcher.survey import links
from services.runtime import clock
from tests.access import Metadata, bearer
from tests.conftest import MONDAY, at, during
from tests.edge.test_booking_page import (  # noqa: F401 (its fixtures)
    EMPLOYEE,
    UNLABELLED,
    Suite,
    browser,
    origins,
    suite,
)

SURVEY = "/survey.html"
HELPFUL = "這次會談對您有幫助嗎？"  # the server's words for the default questions, in zh-TW
RECOMMEND = "您有多大可能向同事推薦本方案？"
EASY = "預約這次會談容易嗎？"
ANYTHING = "還有其他想告訴我們的嗎？"
COMMENT = "預約很方便，時間也準時。"
THANKS = "已收到您的回答。這個連結已經用過，您可以關閉這個頁面。"
ANSWERED = "這個連結已經填答過，或不是有效的連結。"  # a used link is told as unknown
CLOSED = "這份問卷已截止，仍感謝您的參與。"  # the server's explanation of SURVEY_EXPIRED
PROVIDERS = {"C001": "P1", "C002": "P2"}  # test_booking_page's counselors' firms
# What an onlooker must not read on the page: what the appointment was.
GIVE_AWAY = ("諮商", "輔導", "counsel")


def matcher_of(running: Suite) -> MatcherService:
    (service,) = [s for s in running.server.services if isinstance(s, MatcherService)]
    return service


@contextlib.asynccontextmanager
async def as_admin(
    running: Suite,
) -> AsyncIterator[tuple[matcher_pb2_grpc.MatcherServiceAsyncStub, Metadata]]:
    """The matcher, straight over gRPC, and an administrator's metadata."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.server.port}") as channel:
        yield (
            matcher_pb2_grpc.MatcherServiceStub(channel),
            bearer(running.made.token("admin", "eap-admin")),
        )


def case() -> mpb.Case:
    """EMPLOYEE's request, named K1 (an administrator may name a case): one
    session by video, on MONDAY."""
    return mpb.Case(
        case_id="K1",
        employee_id=EMPLOYEE,
        agency_id="PT-HR",
        staff_category="official",
        category=mpb.CATEGORY_PSYCHOLOGICAL,
        kind=mpb.CASE_KIND_GENERAL,
        sessions_wanted=1,
        minutes=60,
        modalities=[mpb.MODALITY_VIDEO],
        availability=[mpb.TimeRange(start=at(MONDAY, 9), end=at(MONDAY, 17))],
        time_off=mpb.TIME_OFF_OFFICIAL_LEAVE,
    )


async def attended(running: Suite) -> mpb.Booking:
    """K1's first free session on MONDAY, booked and completed as attended."""
    async with as_admin(running) as (matcher, admin):
        await matcher.SubmitCase(mpb.SubmitCaseRequest(case=case()), metadata=admin)
        window = mpb.FindSlotsRequest(
            case_id="K1", window_start=at(MONDAY, 0), window_end=at(MONDAY, 23)
        )
        slot = (await matcher.FindSlots(window, metadata=admin)).slots[0]
        held = await matcher.HoldSlot(
            mpb.HoldSlotRequest(case_id="K1", counselor_id=slot.counselor_id, start=slot.start),
            metadata=admin,
        )
        request = mpb.ConfirmBookingRequest(booking_id=held.booking.booking_id)
        booking = (await matcher.ConfirmBooking(request, metadata=admin)).booking
        with during(booking.start, minutes=70):
            await matcher.CompleteSession(
                mpb.CompleteSessionRequest(
                    booking_id=booking.booking_id, outcome=mpb.ATTENDANCE_ATTENDED
                ),
                metadata=admin,
            )
    return booking


async def token_of(running: Suite) -> str:
    """The link's token, as the notifier opens it from the SURVEY notice."""
    matcher = matcher_of(running)
    sessions = async_sessionmaker(matcher.engine, expire_on_commit=False)
    async with sessions() as session:
        (notice,) = await session.scalars(select(NoticeRow).where(NoticeRow.kind == "survey"))
    token = links.unseal(notice.place, matcher.bookings._data_keys)
    assert token is not None
    return token


async def table(running: Suite, name: str) -> tuple[list[str], list[tuple[object, ...]]]:
    """A table of the matcher's database as an attacker with it reads it:
    its columns and every row."""
    async with matcher_of(running).engine.connect() as connection:
        result = await connection.execute(text(f"SELECT * FROM {name}"))
        return list(result.keys()), [tuple(row) for row in result]


@contextlib.contextmanager
def next_day(booking: mpb.Booking) -> Iterator[None]:
    """The services' clock the day after the session: when its link is read."""
    with during(booking.start, minutes=24 * 60):
        yield


def link(running: Suite, token: str, query: str = "") -> str:
    return f"{running.edge.url}{SURVEY}{query}#token={token}"


async def new_page(
    chromium: Browser, locale: str = "zh-TW", phone: bool = False
) -> tuple[Page, list[str]]:
    page = await chromium.new_page(
        locale=locale,
        timezone_id="Asia/Taipei",
        viewport={"width": 360, "height": 740} if phone else None,
        is_mobile=phone,
        has_touch=phone,
    )
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    return page, problems


async def discreet(page: Page) -> None:
    """Nothing on the page or in its title says what the appointment was."""
    shown = f"{await page.title()}\n{await page.locator('body').inner_text()}"
    assert not [word for word in GIVE_AWAY if word in shown.lower()], shown


async def test_an_attended_sessions_link_is_answered_once_in_chinese_without_signing_in(
    suite: Suite,  # noqa: F811 (the fixture)
    browser: Browser,  # noqa: F811 (the fixture)
) -> None:
    booking = await attended(suite)
    token = await token_of(suite)
    with next_day(booking):
        page, problems = await new_page(browser, phone=True)
        await page.goto(f"{suite.edge.url}/")
        requests: list[Request] = []
        page.on("request", lambda request: requests.append(request))
        await page.goto(link(suite, token))

        await expect(page.get_by_role("group", name=HELPFUL)).to_be_visible()
        assert token not in page.url and "#" not in page.url  # out of the address bar
        assert page.url == f"{suite.edge.url}{SURVEY}"
        # The history holds the page without its token: back is the booking
        # page, forward this page again, whose tab still knows the link.
        await page.go_back()
        assert page.url == f"{suite.edge.url}/"
        await page.go_forward()
        assert page.url == f"{suite.edge.url}{SURVEY}"
        await expect(page.get_by_role("group", name=HELPFUL)).to_be_visible()
        # Signed in to the booking page meanwhile in this tab, and reloaded:
        # the survey still sends nobody's token but the link's, in the body.
        await page.evaluate("t => sessionStorage.setItem('eap-token', t)", suite.token())
        await page.reload()
        await expect(page.get_by_role("group", name=HELPFUL)).to_be_visible()
        assert await page.title() == "服務意見調查"
        assert await page.locator("html").get_attribute("lang") == "zh-Hant-TW"
        questions = page.locator(".question")
        await expect(questions).to_have_count(4)
        await expect(questions.nth(0).locator("legend")).to_have_text(HELPFUL)
        await expect(questions.nth(1).locator("legend")).to_have_text(RECOMMEND)
        await expect(questions.nth(2).locator("legend")).to_have_text(EASY)
        comments = page.get_by_label(ANYTHING)
        assert await comments.get_attribute("maxlength") == "1000"
        # Open through the fourth week after the session's: Sunday 11 April.
        await expect(page.locator("#until")).to_contain_text("4月11日")
        for question in (HELPFUL, RECOMMEND, EASY):
            scores = page.get_by_role("group", name=question).get_by_role("radio")
            await expect(scores).to_have_count(5)
        assert await page.evaluate(UNLABELLED) == []
        assert await page.evaluate("document.documentElement.scrollWidth") <= 360  # no sideways
        await discreet(page)

        await page.get_by_role("group", name=HELPFUL).get_by_role("radio", name="5 非常").check()
        # The keyboard alone: into the group, then the arrows choose.
        easy = page.get_by_role("group", name=EASY)
        await easy.get_by_role("radio", name="1 完全不").focus()
        for _ in range(3):
            await page.keyboard.press("ArrowRight")
        await expect(easy.get_by_role("radio", name="4 相當")).to_be_checked()
        await comments.fill(COMMENT)
        await page.get_by_role("button", name="送出回答").click()
        thanks = page.get_by_role("heading", name="感謝您的填答")
        await expect(thanks).to_be_focused()
        await expect(page.locator("#thanks")).to_contain_text(THANKS)
        await expect(page.get_by_role("group", name=HELPFUL)).to_be_hidden()
        assert await page.evaluate("sessionStorage.getItem('eap-survey-token')") is None
        await discreet(page)

        calls = [r for r in requests if "/eap.matcher.v1.MatcherService/" in r.url]
        methods = [r.url.rsplit("/", 1)[1] for r in calls]
        assert set(methods[:-1]) == {"GetSurvey"} and methods[-1] == "SubmitSurvey", methods
        for request in requests:
            sent = await request.all_headers()
            assert "authorization" not in sent, (request.url, sent)
            assert token not in request.url and token not in str(sent)
        for call in calls:
            assert token.encode() in (call.post_data_buffer or b"")  # the body, and only there
            assert (await call.all_headers())["accept-language"] == "zh-TW"

        # What is kept: the three answers, with the session's week, provider
        # and category and nothing that leads back to it or the person.
        columns, rows = await table(suite, "matcher_survey_answers")
        assert set(columns) == {
            "answer_id",
            "iso_week",
            "provider_id",
            "category",
            "question_id",
            "score",
            "text",
        }
        answers = [dict(zip(columns, row, strict=True)) for row in rows]
        assert sorted((a["question_id"], a["score"], a["text"]) for a in answers) == [
            ("comments", None, COMMENT),
            ("ease_of_booking", 4, None),
            ("helpfulness", 5, None),
        ]
        assert {(a["iso_week"], a["provider_id"], a["category"]) for a in answers} == {
            ("2027-W10", PROVIDERS[booking.counselor_id], "psychological")
        }
        secret = token.split(".", 1)[1]
        for cell in (str(v) for row in rows for v in row):
            for clue in (booking.booking_id, "K1", EMPLOYEE, secret, links.token_hash(token)):
                assert clue not in cell
        assert (await table(suite, "matcher_survey_invitations"))[1] == []  # the link is gone

        # The same link again, in another tab: answered, in Chinese.
        again, _ = await new_page(browser)
        await again.goto(link(suite, token))
        alert = again.get_by_role("alert")
        await expect(alert).to_contain_text(ANSWERED)
        await expect(alert).to_be_focused()
        await expect(again.locator(".question")).to_have_count(0)
        assert token not in again.url
        await discreet(again)
        assert not problems, problems


async def test_links_that_cannot_be_answered_say_why(
    suite: Suite,  # noqa: F811 (the fixture)
    browser: Browser,  # noqa: F811 (the fixture)
) -> None:
    page, problems = await new_page(browser)
    requests: list[Request] = []
    page.on("request", lambda request: requests.append(request))
    # A guess, of a tenant served and of one that is not.
    tenant = matcher_of(suite).tenant
    for guess in (f"{tenant}.{links.new_secret()}", f"elsewhere.{links.new_secret()}"):
        await page.goto(link(suite, guess))
        await expect(page.get_by_role("alert")).to_have_text(
            "這個連結已經填答過，或不是有效的連結。如果您已經送出回答，就不需要再填，謝謝您。"
        )
        await expect(page.get_by_role("button", name="送出回答")).to_be_hidden()
        assert guess not in page.url
        await page.goto(f"{suite.edge.url}/")  # the next goto loads the page anew
    # No link at all (the page opened by hand, or a reload once answered).
    await page.goto(f"{suite.edge.url}{SURVEY}")
    await expect(page.get_by_role("alert")).to_have_text("請從通知信裡的連結開啟這個頁面。")

    # A link past its week-level expiry: the server's own explanation.
    booking = await attended(suite)
    token = await token_of(suite)
    with clock.moved_to(booking.start.ToDatetime(tzinfo=dt.UTC) + dt.timedelta(weeks=6)):
        await page.goto(link(suite, token))
        await expect(page.get_by_role("alert")).to_have_text(CLOSED)
    await expect(page.locator(".question")).to_have_count(0)
    await discreet(page)
    for request in requests:
        assert "authorization" not in await request.all_headers()
    assert not problems, problems


async def test_a_question_withdrawn_meanwhile_is_pointed_at_and_left_out_in_english(
    suite: Suite,  # noqa: F811 (the fixture)
    browser: Browser,  # noqa: F811 (the fixture)
) -> None:
    booking = await attended(suite)
    token = await token_of(suite)
    with next_day(booking):
        page, problems = await new_page(browser, locale="en-GB")
        await page.goto(link(suite, token, "?lang=en"))
        helpful = page.get_by_role("group", name="How helpful was the session to you?")
        await expect(helpful).to_be_visible()
        assert page.url == f"{suite.edge.url}{SURVEY}?lang=en"
        assert await page.title() == "Feedback"
        await discreet(page)
        await helpful.get_by_role("radio", name="3 Moderately").check()
        recommend = page.get_by_role(
            "group", name="How likely are you to recommend the programme to a colleague?"
        )
        await recommend.get_by_role("radio", name="2 A little").check()
        send = page.get_by_role("button", name="Send my answers")
        # Meanwhile the programme asks its own questions, without "recommend".
        async with as_admin(suite) as (matcher, admin):
            own = spb.SurveyQuestion(
                question_id="helpfulness", kind=spb.SURVEY_QUESTION_KIND_SCORE, prompt="Helpful?"
            )
            request = spb.SetSurveyQuestionsRequest(questions=[own])
            await matcher.SetSurveyQuestions(request, metadata=admin)
        await send.click()
        await expect(page.get_by_role("alert")).to_have_text(
            "Some answers need changing: see the words under each question."
        )
        gone = "This question is no longer asked: it will be left out when you send."
        await expect(recommend).to_contain_text(gone)
        await expect(recommend).to_have_accessible_description(gone)
        await expect(recommend.get_by_role("radio", name="2 A little")).to_be_disabled()
        await expect(helpful.locator(".field-problem")).to_be_hidden()
        assert (await table(suite, "matcher_survey_answers"))[1] == []  # nothing kept yet

        await send.click()
        await expect(page.get_by_role("heading", name="Thank you!")).to_be_focused()
        columns, rows = await table(suite, "matcher_survey_answers")
        kept = [dict(zip(columns, row, strict=True)) for row in rows]
        assert [(a["question_id"], a["score"]) for a in kept] == [("helpfulness", 3)]
        assert not problems, problems
