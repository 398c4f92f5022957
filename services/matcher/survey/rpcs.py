"""gRPC translation of the satisfaction survey (survey.proto): the link's
two methods, which nobody signs in to (policy.LINK_METHODS), and the
tenant's questions."""

from __future__ import annotations

from typing import Any

from grpc import aio

from eap.matcher.v1 import survey_pb2 as spb
from services.matcher.survey.answering import Answer, Survey
from services.matcher.survey.questions import Question, QuestionKind
from services.runtime.fields import FieldChecker, timestamp

Context = aio.ServicerContext[Any, Any]

_KIND_PB: dict[QuestionKind, spb.SurveyQuestionKind.ValueType] = {
    QuestionKind.SCORE: spb.SURVEY_QUESTION_KIND_SCORE,
    QuestionKind.TEXT: spb.SURVEY_QUESTION_KIND_TEXT,
}
_KIND = {v: k for k, v in _KIND_PB.items()}


def question_pb(question: Question) -> spb.SurveyQuestion:
    return spb.SurveyQuestion(
        question_id=question.question_id, kind=_KIND_PB[question.kind], prompt=question.shown()
    )


class SurveyRpcs:
    """These MatcherService RPCs (MatcherServicer inherits them)."""

    _survey: Survey

    async def GetSurvey(
        self, request: spb.GetSurveyRequest, context: Context
    ) -> spb.GetSurveyResponse:
        opened = await self._survey.open(request.token)
        return spb.GetSurveyResponse(
            questions=[question_pb(q) for q in opened.questions],
            expires_at=timestamp(opened.expires_at),
        )

    async def SubmitSurvey(
        self, request: spb.SubmitSurveyRequest, context: Context
    ) -> spb.SubmitSurveyResponse:
        answers = [Answer(a.question_id, a.score, a.text) for a in request.answers]
        return spb.SubmitSurveyResponse(answers=await self._survey.submit(request.token, answers))

    async def SetSurveyQuestions(
        self, request: spb.SetSurveyQuestionsRequest, context: Context
    ) -> spb.SetSurveyQuestionsResponse:
        checker = FieldChecker()
        for i, q in enumerate(request.questions):
            checker.require(q.kind in _KIND, f"questions[{i}].kind", "score or text")
        asked = [
            Question(q.question_id, _KIND.get(q.kind, QuestionKind.SCORE), q.prompt)
            for q in request.questions
        ]
        kept = await self._survey.set_questions(asked, checker)
        return spb.SetSurveyQuestionsResponse(questions=[question_pb(q) for q in kept])
