"""The satisfaction survey over gRPC (issue 16, item 4; acceptance 5): an
attended session's completion writes a one-time link and the notice that
brings it; the link opens the survey without signing in, takes one set of
answers, and then says it was used; a missed session asks nothing; the
tenant's own questions; the refusals. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt

import grpc
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from eap.matcher.v1 import matcher_pb2 as pb
from eap.matcher.v1 import survey_pb2 as spb
from services.matcher.notices.rows import NoticeRow
from services.matcher.service import MatcherService
from services.matcher.survey import links
from services.matcher.survey.rows import AnswerRow, InvitationRow
from services.runtime import clock, i18n
from tests.conftest import MONDAY, Suite, during
from tests.matcher.test_booking import case, submit
from tests.matcher.test_notice_rules import booked_on
from tests.quota.test_rpcs import details, refused


def matcher_of(suite: Suite) -> MatcherService:
    assert suite.server is not None
    (service,) = [s for s in suite.server.services if isinstance(s, MatcherService)]
    return service


async def survey_notices(suite: Suite) -> list[NoticeRow]:
    sessions = async_sessionmaker(matcher_of(suite).engine, expire_on_commit=False)
    async with sessions() as session:
        rows = await session.scalars(select(NoticeRow).where(NoticeRow.kind == "survey"))
        return list(rows)


async def attended(suite: Suite, case_id: str = "K1") -> pb.Booking:
    """A session of `case_id` booked and completed as attended."""
    booking = await booked_on(suite, MONDAY, case_id)
    request = pb.CompleteSessionRequest(
        booking_id=booking.booking_id, outcome=pb.ATTENDANCE_ATTENDED
    )
    with during(booking.start, minutes=70):
        await suite.matcher.CompleteSession(request)
        await suite.matcher.CompleteSession(request)  # a retry invites once
    return booking


async def token_of(suite: Suite) -> str:
    """The link's token, as the notifier opens it from the notice."""
    (notice,) = await survey_notices(suite)
    token = links.unseal(notice.place, matcher_of(suite).bookings._data_keys)
    assert token is not None
    return token


async def test_an_attended_session_brings_one_link_answered_once(suite: Suite) -> None:
    await submit(suite, case())
    booking = await attended(suite)
    (notice,) = await survey_notices(suite)
    assert notice.booking_id == booking.booking_id and notice.state == "pending"
    token = await token_of(suite)
    assert token.startswith(f"{suite_tenant(suite)}.") and len(token) > 40
    assert token not in notice.place  # sealed

    opened = await suite.matcher.GetSurvey(spb.GetSurveyRequest(token=token))
    assert [q.question_id for q in opened.questions] == [
        "helpfulness",
        "recommend",
        "ease_of_booking",
        "comments",
    ]
    assert opened.questions[0].prompt == i18n.translate(
        "How helpful was the session to you?", "zh_TW"
    )  # the page asks in zh-TW by default
    answers = [
        spb.SurveyAnswer(question_id="helpfulness", score=5),
        spb.SurveyAnswer(question_id="recommend", score=4),
        spb.SurveyAnswer(question_id="comments", text="  "),  # left empty: no answer
    ]
    done = await suite.matcher.SubmitSurvey(spb.SubmitSurveyRequest(token=token, answers=answers))
    assert done.answers == 2
    for call in (
        suite.matcher.SubmitSurvey(spb.SubmitSurveyRequest(token=token, answers=answers)),
        suite.matcher.GetSurvey(spb.GetSurveyRequest(token=token)),
    ):
        used = await refused(call)
        # A used link leaves nothing behind: it is as unknown as a guess.
        assert used.code() == grpc.StatusCode.NOT_FOUND
    sessions = async_sessionmaker(matcher_of(suite).engine, expire_on_commit=False)
    async with sessions() as session:
        kept = list(await session.scalars(select(AnswerRow)))
        assert list(await session.scalars(select(InvitationRow))) == []
    assert sorted((a.question_id, a.score) for a in kept) == [("helpfulness", 5), ("recommend", 4)]
    (provider,) = {a.provider_id for a in kept}
    assert provider and {a.category for a in kept} == {"psychological"}


def suite_tenant(suite: Suite) -> str:
    return matcher_of(suite).tenant


async def test_bad_answers_are_refused_naming_each_field_and_keep_the_link_open(
    suite: Suite,
) -> None:
    await submit(suite, case())
    await attended(suite)
    token = await token_of(suite)
    bad = [
        spb.SurveyAnswer(question_id="helpfulness", score=6),
        spb.SurveyAnswer(question_id="helpfulness", score=3),
        spb.SurveyAnswer(question_id="mood", score=3),
        spb.SurveyAnswer(question_id="comments", text="x" * 1001),
        spb.SurveyAnswer(question_id="recommend", text="yes"),
    ]
    error = await refused(
        suite.matcher.SubmitSurvey(spb.SubmitSurveyRequest(token=token, answers=bad))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = {v.field for v in details(error)["BadRequest"].field_violations}  # type: ignore[attr-defined]
    assert fields == {
        "answers[0].score",
        "answers[1].question_id",
        "answers[2].question_id",
        "answers[3].text",
        "answers[4].score",
        "answers[4].text",
    }
    none = await refused(suite.matcher.SubmitSurvey(spb.SubmitSurveyRequest(token=token)))
    assert none.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Nothing was used up: the link still opens.
    assert (await suite.matcher.GetSurvey(spb.GetSurveyRequest(token=token))).questions


async def test_unknown_and_expired_links(suite: Suite) -> None:
    await submit(suite, case())
    booking = await attended(suite)
    token = await token_of(suite)
    for guess in (
        "",
        "nonsense",
        f"{suite_tenant(suite)}.{links.new_secret()}",
        "other." + "a" * 43,
    ):
        missing = await refused(suite.matcher.GetSurvey(spb.GetSurveyRequest(token=guess)))
        assert missing.code() == grpc.StatusCode.NOT_FOUND, guess
    start = booking.start.ToDatetime(tzinfo=dt.UTC)
    with clock.moved_to(start + dt.timedelta(weeks=6)):  # past the fourth week after
        closed = await refused(suite.matcher.GetSurvey(spb.GetSurveyRequest(token=token)))
    assert closed.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(closed)["PreconditionFailure"].violations[0].type == "SURVEY_EXPIRED"  # type: ignore[attr-defined]


async def test_a_missed_session_asks_nothing(suite: Suite) -> None:
    await submit(suite, case())
    booking = await booked_on(suite, MONDAY)
    with during(booking.start, minutes=30):
        await suite.matcher.CompleteSession(
            pb.CompleteSessionRequest(booking_id=booking.booking_id, outcome=pb.ATTENDANCE_NO_SHOW)
        )
    assert await survey_notices(suite) == []


async def test_the_tenants_own_questions(suite: Suite) -> None:
    own = [
        spb.SurveyQuestion(
            question_id="clear", kind=spb.SURVEY_QUESTION_KIND_SCORE, prompt="說明清楚嗎？"
        ),
        spb.SurveyQuestion(
            question_id="more", kind=spb.SURVEY_QUESTION_KIND_TEXT, prompt="其他建議"
        ),
    ]
    set_ = await suite.matcher.SetSurveyQuestions(spb.SetSurveyQuestionsRequest(questions=own))
    assert list(set_.questions) == own
    await submit(suite, case())
    await attended(suite)
    token = await token_of(suite)
    opened = await suite.matcher.GetSurvey(spb.GetSurveyRequest(token=token))
    assert list(opened.questions) == own
    bad = await refused(
        suite.matcher.SetSurveyQuestions(
            spb.SetSurveyQuestionsRequest(
                questions=[
                    spb.SurveyQuestion(question_id="Bad Id", prompt=""),
                    spb.SurveyQuestion(
                        question_id="x", kind=spb.SURVEY_QUESTION_KIND_TEXT, prompt="?"
                    ),
                    spb.SurveyQuestion(
                        question_id="x", kind=spb.SURVEY_QUESTION_KIND_TEXT, prompt="?"
                    ),
                ]
            )
        )
    )
    fields = {v.field for v in details(bad)["BadRequest"].field_violations}  # type: ignore[attr-defined]
    assert fields == {
        "questions[0].kind",
        "questions[0].question_id",
        "questions[0].prompt",
        "questions[2].question_id",
    }
    back = await suite.matcher.SetSurveyQuestions(spb.SetSurveyQuestionsRequest())
    assert back.questions[0].question_id == "helpfulness"  # the defaults again


async def test_two_submissions_racing_with_one_link_keep_one_set_of_answers(
    suite: Suite,
) -> None:
    await submit(suite, case())
    await attended(suite)
    token = await token_of(suite)
    answers = [spb.SurveyAnswer(question_id="helpfulness", score=3)]
    request = spb.SubmitSurveyRequest(token=token, answers=answers)
    outcomes = await asyncio.gather(
        *(suite.matcher.SubmitSurvey(request) for _ in range(4)), return_exceptions=True
    )
    kept = [o for o in outcomes if isinstance(o, spb.SubmitSurveyResponse)]
    lost = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(kept) == 1 and [e.code() for e in lost] == [grpc.StatusCode.NOT_FOUND] * 3
    sessions = async_sessionmaker(matcher_of(suite).engine, expire_on_commit=False)
    async with sessions() as session:
        assert len(list(await session.scalars(select(AnswerRow)))) == 1
