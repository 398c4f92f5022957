"""What a session is and how often a person may have one (Miaoli 5; the
crisis deadline from the Pingtung plan). These are the seeds' values; a
programme that sets others passes them through configuration (the crisis
deadline: EAP_CRISIS_DEADLINE_HOURS) or an instance's `rules`, whose
defaults are these."""

from __future__ import annotations

from datetime import datetime

MIN_SESSION_MINUTES = 60  # "each session 1 to 2 hours"
MAX_SESSION_MINUTES = 120
SLOT_MINUTES = 30  # sessions start on the half hour and last whole half hours
WEEKLY_SESSION_LIMIT = 1  # "one session per person per week"
CRISIS_DEADLINE_HOURS = 72  # a crisis case's first session starts within this

SESSION_LENGTH_TEXT = f"a session lasts {MIN_SESSION_MINUTES} to {MAX_SESSION_MINUTES} minutes"
BOOKABLE_LENGTH_TEXT = (
    f"{MIN_SESSION_MINUTES} to {MAX_SESSION_MINUTES}, a multiple of {SLOT_MINUTES}"
)


def session_length_ok(minutes: int) -> bool:
    """One to two hours (what the ledger accepts)."""
    return MIN_SESSION_MINUTES <= minutes <= MAX_SESSION_MINUTES


def bookable_length(minutes: int) -> bool:
    """One to two hours in whole half hours (what a booking may ask for)."""
    return session_length_ok(minutes) and minutes % SLOT_MINUTES == 0


def within_weekly_limit(sessions_that_week: int, limit: int = WEEKLY_SESSION_LIMIT) -> bool:
    """Whether a person with `sessions_that_week` sessions in an ISO week may
    have them all."""
    return sessions_that_week <= limit


def has_started(start: datetime, now: datetime) -> bool:
    """Whether a session starting at `start` has begun by `now`: only then
    can it be recorded as having taken place."""
    return start <= now
