"""The notice period and what each charge puts on whom (rules/attendance.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.rules.attendance import (
    MAX_NOTICE_HOURS,
    NOTICE_HOURS,
    Attendance,
    Charge,
    inside_notice,
    notice_hours_ok,
)
from services.rules.codes import RuleCode

START = datetime(2027, 3, 10, 9, tzinfo=UTC)


def test_cancelling_less_than_the_notice_period_before_is_late() -> None:
    assert NOTICE_HOURS == 24
    assert not inside_notice(START, START - timedelta(hours=24))
    assert inside_notice(START, START - timedelta(hours=23, minutes=59))
    assert inside_notice(START, START + timedelta(minutes=5))  # already begun
    assert not inside_notice(START, START - timedelta(hours=3), notice_hours=2)
    assert inside_notice(START, START - timedelta(hours=1), notice_hours=2)


def test_notice_hours_are_bounded() -> None:
    assert notice_hours_ok(0) and notice_hours_ok(MAX_NOTICE_HOURS)
    assert not notice_hours_ok(-1) and not notice_hours_ok(MAX_NOTICE_HOURS + 1)


def test_each_charge_says_who_pays() -> None:
    assert (Charge.FULL.pays_provider, Charge.FULL.counts_entitlement) == (True, True)
    assert (Charge.PROVIDER_PAID.pays_provider, Charge.PROVIDER_PAID.counts_entitlement) == (
        True,
        False,
    )
    assert (
        Charge.ENTITLEMENT_COUNTED.pays_provider,
        Charge.ENTITLEMENT_COUNTED.counts_entitlement,
    ) == (False, True)
    assert (Charge.NONE.pays_provider, Charge.NONE.counts_entitlement) == (False, False)


def test_each_outcome_has_its_ledger_code() -> None:
    assert Attendance.ATTENDED.rule is None
    assert Attendance.NO_SHOW.rule is RuleCode.NO_SHOW
    assert Attendance.LATE_CANCELLATION.rule is RuleCode.LATE_CANCELLATION
    assert Attendance.COUNSELOR_CANCELLED.rule is RuleCode.COUNSELOR_CANCELLED
