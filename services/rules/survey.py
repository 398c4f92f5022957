"""The satisfaction survey's rules (issue 16, item 4; Miaoli 9: the
programme's effectiveness is reviewed through satisfaction
questionnaires): how long a link stays open and what a score may be.

A link is open through the end of the SURVEY_OPEN_WEEKS-th ISO week after
the session's week, and expires at the same moment for every session of
that week: an expiry finer than the week would say when the session was.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta

from services.rules.office_time import OFFICE_ZONE, IsoWeek

SURVEY_OPEN_WEEKS = 4
MIN_SCORE, MAX_SCORE = 1, 5
MAX_TEXT_CHARS = 1000  # a free-text answer
MAX_QUESTIONS = 20  # a tenant's survey stays short


def expiry_of(session_week: IsoWeek) -> datetime:
    """Monday 00:00, office time, of the week after the link's last open
    week: the same for every session of `session_week`."""
    monday = datetime.fromisocalendar(session_week.year, session_week.week, 1).date()
    last_open = monday + timedelta(weeks=SURVEY_OPEN_WEEKS + 1)
    return datetime.combine(last_open, time(0), OFFICE_ZONE)


def valid_score(score: int) -> bool:
    return MIN_SCORE <= score <= MAX_SCORE
