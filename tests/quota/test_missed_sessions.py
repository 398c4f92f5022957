"""A booked session that did not take place (a no-show, a late
cancellation), settled over gRPC as the tenant's policy charges it: the
accounts keep what the charge puts on them, the ledger records it under
the outcome's code, and the usage summary counts it (rules/attendance.py)."""

from __future__ import annotations

import grpc
import pytest

from eap.quota.v1 import quota_pb2 as pb
from tests.conftest import QuotaClient
from tests.county import RATE, YEAR, account, reserve_request, seed
from tests.quota.test_rpcs import AGENCY, EMPLOYEE, PROVIDER, balance, details, refused

NO_SHOW = pb.SESSION_OUTCOME_NO_SHOW
LATE = pb.SESSION_OUTCOME_LATE_CANCELLATION


async def booked(quota: QuotaClient, key: str, employee: str = "E1", n_week: int = 10) -> pb.Hold:
    hold = (
        await quota.stub.Reserve(reserve_request(key, employee=employee, n_week=n_week, minutes=90))
    ).hold
    return (await quota.stub.Commit(pb.CommitRequest(hold_id=hold.hold_id))).hold


def missed(hold_id: str, outcome: int, charge: int) -> pb.CommitRequest:
    return pb.CommitRequest(hold_id=hold_id, completed=True, outcome=outcome, charge=charge)


async def spent(quota: QuotaClient) -> tuple[int, int, int]:
    return (
        (await balance(quota, EMPLOYEE, "E1")).spent,
        (await balance(quota, PROVIDER, "P1")).spent,
        (await balance(quota, AGENCY, "PT-HR")).spent,
    )


COST = RATE * 90 // 60


@pytest.mark.parametrize(
    ("outcome", "charge", "kept"),
    [
        (NO_SHOW, pb.CHARGE_FULL, (90, 90, COST)),
        (NO_SHOW, pb.CHARGE_PROVIDER_PAID, (0, 90, COST)),
        (LATE, pb.CHARGE_ENTITLEMENT_COUNTED, (90, 0, 0)),
        (LATE, pb.CHARGE_FULL, (90, 90, COST)),
    ],
)
async def test_a_missed_session_keeps_what_its_charge_says(
    quota: QuotaClient, outcome: int, charge: int, kept: tuple[int, int, int]
) -> None:
    await seed(quota.stub)
    hold = await booked(quota, "m1")
    assert await spent(quota) == (90, 90, COST)
    settled = (await quota.stub.Commit(missed(hold.hold_id, outcome, charge))).hold
    assert (settled.state, settled.outcome, settled.charge) == (
        pb.HOLD_STATE_COMPLETED,
        outcome,
        charge,
    )
    assert settled.amount_ntd == kept[2]
    assert await spent(quota) == kept
    # Settled twice (a retry): the same answer, nothing more moves.
    again = (await quota.stub.Commit(missed(hold.hold_id, outcome, charge))).hold
    assert again.state == pb.HOLD_STATE_COMPLETED and await spent(quota) == kept
    # The ledger names why: each account's give-back under the outcome's code.
    code = "NO_SHOW" if outcome == NO_SHOW else "LATE_CANCELLATION"
    entries = (
        await quota.stub.ListLedger(pb.ListLedgerRequest(account=account(AGENCY, "PT-HR")))
    ).entries
    assert [e.reason for e in entries if e.reference == hold.hold_id][-1] == code
    # A settled session is final: it cannot be released nor settled otherwise.
    error = await refused(quota.stub.Release(pb.ReleaseRequest(hold_id=hold.hold_id)))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_charged_nothing_the_hold_goes_back_and_the_week_is_free(
    quota: QuotaClient,
) -> None:
    await seed(quota.stub)
    hold = await booked(quota, "m1")
    settled = (await quota.stub.Commit(missed(hold.hold_id, LATE, pb.CHARGE_NONE))).hold
    assert (settled.state, settled.outcome, settled.charge) == (
        pb.HOLD_STATE_RELEASED,
        LATE,
        pb.CHARGE_NONE,
    )
    assert await spent(quota) == (0, 0, 0)
    again = (await quota.stub.Commit(missed(hold.hold_id, LATE, pb.CHARGE_NONE))).hold
    assert again.state == pb.HOLD_STATE_RELEASED
    await booked(quota, "m2")  # the same week, booked again


async def test_only_a_booked_session_is_missed_and_the_fields_are_checked(
    quota: QuotaClient,
) -> None:
    await seed(quota.stub)
    held = (await quota.stub.Reserve(reserve_request("h", n_week=3))).hold
    error = await refused(quota.stub.Commit(missed(held.hold_id, NO_SHOW, pb.CHARGE_FULL)))
    assert details(error)["ErrorInfo"].reason == "NOT_BOOKED"  # type: ignore[attr-defined]
    hold = await booked(quota, "b")
    for request, fields in (
        (
            pb.CommitRequest(hold_id=hold.hold_id, outcome=NO_SHOW, charge=pb.CHARGE_FULL),
            {"completed"},
        ),
        (missed(hold.hold_id, NO_SHOW, pb.CHARGE_UNSPECIFIED), {"charge"}),
        (pb.CommitRequest(hold_id=hold.hold_id, completed=True, charge=pb.CHARGE_FULL), {"charge"}),
        (
            pb.CommitRequest(
                hold_id=hold.hold_id, completed=True, minutes=60, outcome=NO_SHOW, charge=1
            ),
            {"minutes"},
        ),
        (pb.CommitRequest(hold_id=hold.hold_id, completed=True, outcome=99), {"outcome"}),
    ):
        error = await refused(quota.stub.Commit(request))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        violations = details(error)["BadRequest"].field_violations  # type: ignore[attr-defined]
        assert {v.field for v in violations} == fields
    assert (await balance(quota, AGENCY, "PT-HR")).spent == COST  # nothing moved


async def test_the_usage_summary_counts_missed_sessions_apart(quota: QuotaClient) -> None:
    await seed(quota.stub)
    for n in range(6):  # six officials with a session in January (ISO week 2)
        hold = await booked(quota, f"o{n}", employee=f"E{n}", n_week=2)
        if n == 0:
            await quota.stub.Commit(missed(hold.hold_id, NO_SHOW, pb.CHARGE_FULL))
        elif n == 1:
            await quota.stub.Commit(missed(hold.hold_id, LATE, pb.CHARGE_NONE))
        elif n == 2:
            await quota.stub.Commit(missed(hold.hold_id, LATE, pb.CHARGE_ENTITLEMENT_COUNTED))
    request = pb.GetUsageSummaryRequest(fiscal_year=YEAR)
    (row,) = (await quota.stub.GetUsageSummary(request)).rows
    assert (row.people, row.sessions, row.no_shows, row.late_cancellations) == (6, 3, 1, 2)
    # The money is what was charged: four sessions paid (three held, one
    # no-show charged in full); the late cancellations nothing.
    assert row.amount_ntd == 4 * COST and row.minutes == 4 * 90
