"""The check across services as a pure comparison (booking/consistency.py):
each kind of problem, and what it must not mistake for one."""

from __future__ import annotations

import datetime as dt

from services.matcher.booking.consistency import Charge, Session, compare
from services.matcher.booking.state import CHARGED
from services.matcher.booking.state import BookingState as S
from services.rules.cost import session_cost_ntd

TAIPEI = dt.timezone(dt.timedelta(hours=8))
MONDAY = dt.datetime(2027, 3, 8, 9, tzinfo=TAIPEI)
RATE = 1335  # NT$ an hour: 90 minutes cost NT$2,002.5, charged 2,003


def session(booking_id: str, state: S = S.BOOKED, **changes: object) -> Session:
    values: dict[str, object] = {
        "booking_id": booking_id,
        "state": state,
        "employee_id": "E1",
        "start": MONDAY,
        "minutes": 90,
        "funded": state in CHARGED,
    }
    values.update(changes)
    return Session(**values)  # type: ignore[arg-type]


def charge(hold_id: str, booking_ref: str, **changes: object) -> Charge:
    values: dict[str, object] = {
        "hold_id": hold_id,
        "booking_ref": booking_ref,
        "minutes": 90,
        "amount_ntd": session_cost_ntd(RATE, 90),
        "hourly_rate_ntd": RATE,
        "session_start": MONDAY,
    }
    values.update(changes)
    return Charge(**values)  # type: ignore[arg-type]


def rules(problems: list[object]) -> list[str]:
    return sorted(str(p).split(":")[0] for p in problems)


def test_a_session_charged_once_at_its_cost_is_fine() -> None:
    assert compare([session("B1")], [charge("H1", "B1")]) == []


def test_each_kind_of_problem_is_named_by_its_row() -> None:
    problems = compare(
        [
            session("B1"),  # no charge
            session("B2", start=MONDAY + dt.timedelta(days=14)),  # charged twice
            session("B3", employee_id="E3", start=MONDAY + dt.timedelta(days=28)),  # wrong amount
            session("B4", S.CANCELLED),  # cancelled, still charged
        ],
        [
            charge("H2", "B2"),
            charge("H2b", "B2"),
            charge("H3", "B3", amount_ntd=2002),  # rounded down: NT$1 short
            charge("H4", "B4"),
        ],
    )
    text = [str(p) for p in problems]
    assert rules(problems) == [
        "CHARGED_TWICE",
        "CHARGE_WITHOUT_SESSION",
        "UNCHARGED",
        "WRONG_CHARGE",
    ]
    assert any(p.startswith("UNCHARGED: booking B1") for p in text)
    assert any(p.startswith("CHARGED_TWICE: booking B2") and "H2b" in p for p in text)
    assert any(p.startswith("WRONG_CHARGE: hold H3") and "NT$2003" in p for p in text)
    assert any(p.startswith("CHARGE_WITHOUT_SESSION: hold H4") for p in text)


def test_two_sessions_in_one_iso_week_break_the_weekly_limit() -> None:
    problems = compare(
        [session("B1"), session("B2", start=MONDAY + dt.timedelta(days=4))],
        [charge("H1", "B1"), charge("H2", "B2", session_start=MONDAY + dt.timedelta(days=4))],
    )
    assert [str(p) for p in problems] == [
        "WEEKLY_LIMIT: bookings B1, B2: one employee's 2 sessions in ISO week 2027-W10"
    ]


def test_a_group_place_is_charged_its_share() -> None:
    cost = session_cost_ntd(RATE, 90)  # 2,003 among three: 668, 668, 667
    places = [session(f"B{i}", employee_id=f"E{i}") for i in range(3)]
    shares = [
        charge(f"H{i}", f"B{i}", amount_ntd=amount, group_size=3, group_index=i)
        for i, amount in enumerate((668, 668, 667))
    ]
    assert sum(c.amount_ntd for c in shares) == cost
    assert compare(places, shares) == []
    wrong = [*shares[:2], charge("H2", "B2", amount_ntd=668, group_size=3, group_index=2)]
    assert rules(compare(places, wrong)) == ["WRONG_CHARGE"]


def test_steps_under_way_and_unsettled_rows_are_not_judged() -> None:
    sessions = [
        session("B1", S.CONFIRMING),  # charged, not yet written down as booked
        session("B2", S.CANCELLING),  # written down as cancelling, not yet given back
        session("B3"),  # booked after the charges were read
        session("B4", S.CANCELLED, employee_id="E4"),  # cancelled after they were read
    ]
    charges = [charge("H1", "B1"), charge("H2", "B2"), charge("H4", "B4")]
    assert compare(sessions, charges, unsettled={"B3", "B4"}) == []
    assert rules(compare(sessions, charges)) == ["CHARGE_WITHOUT_SESSION", "UNCHARGED"]


def test_a_charge_whose_booking_retention_purged_is_not_missed() -> None:
    old = charge("H1", "gone", session_start=MONDAY - dt.timedelta(days=2000))
    recent = charge("H2", "gone too")
    cutoff = MONDAY - dt.timedelta(days=1825)
    assert [str(p) for p in compare([], [old, recent], purged_before=cutoff)] == [
        "CHARGE_WITHOUT_SESSION: hold H2: charges no booking"
    ]


def test_missed_sessions_are_judged_by_what_they_were_charged() -> None:
    sessions = [
        # Cancelled late and charged in full: the charge stays, and the week.
        session("late", S.CANCELLED, funded=True, attendance="late_cancellation"),
        # A no-show charged nothing: its hold went back.
        session("gone", S.COMPLETED, funded=False, start=MONDAY + dt.timedelta(days=7)),
        # Counted toward the entitlement only: the provider is not paid.
        session("counted", S.COMPLETED, start=MONDAY + dt.timedelta(days=14)),
    ]
    charges = [
        charge("H1", "late"),
        charge("H3", "counted", amount_ntd=0, pays_provider=False),
    ]
    assert compare(sessions, charges) == []
    # The late one's week is still taken; the charged-nothing one's is not.
    again = session("again", start=MONDAY + dt.timedelta(days=1))
    assert [p.rule for p in compare([*sessions, again], [*charges, charge("H4", "again")])] == [
        "WEEKLY_LIMIT"
    ]
    assert (
        compare(
            [*sessions, session("fresh", start=MONDAY + dt.timedelta(days=8))],
            [*charges, charge("H5", "fresh")],
        )
        == []
    )
    # A charge for the one charged nothing, or money where none is due, is found.
    wrong = compare(
        sessions,
        [charge("H1", "late"), charge("H2", "gone"), charge("H3", "counted", pays_provider=False)],
    )
    assert sorted(p.rule for p in wrong) == ["CHARGE_WITHOUT_SESSION", "WRONG_CHARGE"]
