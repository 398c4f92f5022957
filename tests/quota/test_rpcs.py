"""Each quota RPC over real gRPC, on SQLite and on PostgreSQL + Redis."""

from __future__ import annotations

import asyncio
import datetime as dt
from datetime import timedelta

import grpc
import pytest
import redis
import redis.asyncio as redis_asyncio
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from eap.quota.v1 import quota_pb2 as pb
from services.runtime import clock, lease
from tests.conftest import Backend, QuotaClient
from tests.county import ORG, RATE, YEAR, account, reserve_request, seed

EMPLOYEE = pb.ACCOUNT_KIND_EMPLOYEE
PROVIDER = pb.ACCOUNT_KIND_PROVIDER
AGENCY = pb.ACCOUNT_KIND_AGENCY
ACCOUNTS_OF_E1 = ((EMPLOYEE, "E1"), (PROVIDER, "P1"), (AGENCY, "PT-HR"))


def details(error: grpc.aio.AioRpcError) -> dict[str, object]:
    """The google.rpc details of a refusal, by type name."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    found: dict[str, object] = {}
    for detail in status.details:
        for kind in (
            error_details_pb2.BadRequest,
            error_details_pb2.PreconditionFailure,
            error_details_pb2.ErrorInfo,
            error_details_pb2.LocalizedMessage,
        ):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                found[kind.__name__] = message
    return found


async def refused(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


async def balance(quota: QuotaClient, kind: int, owner: str) -> pb.Balance:
    return (await quota.stub.GetBalance(pb.GetBalanceRequest(account=account(kind, owner)))).balance


async def test_reserve_holds_minutes_and_money_everywhere(quota: QuotaClient) -> None:
    await seed(quota.stub)
    response = await quota.stub.Reserve(reserve_request("r1", minutes=90))
    assert response.hold.state == pb.HOLD_STATE_HELD
    assert response.hold.minutes == 90
    assert response.hold.amount_ntd == RATE * 90 // 60
    assert response.hold.iso_week == f"{YEAR}-W10"
    assert (response.employee.entitled, response.employee.held, response.employee.left) == (
        360,
        90,
        270,
    )
    assert response.provider.held == 90
    assert response.agency.held == 3000 and response.agency.unit == pb.UNIT_NTD


async def test_reserve_retry_returns_first_answer_or_already_exists(quota: QuotaClient) -> None:
    await seed(quota.stub)
    first = await quota.stub.Reserve(reserve_request("same-key"))
    again = await quota.stub.Reserve(reserve_request("same-key"))
    assert again.hold.hold_id == first.hold.hold_id
    assert (await balance(quota, AGENCY, "PT-HR")).held == first.hold.amount_ntd
    error = await refused(quota.stub.Reserve(reserve_request("same-key", minutes=120)))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_a_reservation_checked_only_answers_and_holds_nothing(quota: QuotaClient) -> None:
    await seed(quota.stub)
    checked = pb.ReserveRequest(validate_only=True)
    checked.MergeFrom(reserve_request("try", minutes=90))
    answer = await quota.stub.Reserve(checked)
    assert (answer.hold.hold_id, answer.hold.amount_ntd) == ("", RATE * 90 // 60)
    assert answer.employee.left == 360  # the account it would open, untouched
    for kind, owner in ACCOUNTS_OF_E1[1:]:
        assert (await balance(quota, kind, owner)).held == 0
    error = await refused(balance(quota, EMPLOYEE, "E1"))
    assert error.code() == grpc.StatusCode.NOT_FOUND  # not even opened
    # The key is not kept: a real reservation may use it, and then differ.
    real = await quota.stub.Reserve(reserve_request("try", minutes=120))
    assert real.hold.hold_id and real.hold.minutes == 120
    # Its refusals are Reserve's: that week is now taken; no policy for a category.
    error = await refused(quota.stub.Reserve(checked))
    assert details(error)["ErrorInfo"].reason == "WEEKLY_LIMIT"  # type: ignore[attr-defined]
    other = pb.ReserveRequest(validate_only=True)
    other.MergeFrom(reserve_request("try-2", employee="E2", category="contractor"))
    error = await refused(quota.stub.Reserve(other))
    assert details(error)["ErrorInfo"].reason == "NO_ENTITLEMENT_POLICY"  # type: ignore[attr-defined]


async def test_reserve_bad_fields_are_listed(quota: QuotaClient) -> None:
    await seed(quota.stub)
    error = await refused(
        quota.stub.Reserve(pb.ReserveRequest(idempotency_key="k", employee_id="E1", minutes=180))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = {v.field for v in details(error)["BadRequest"].field_violations}  # type: ignore[attr-defined]
    assert fields == {"agency_id", "staff_category", "provider_id", "session_start", "minutes"}
    assert (
        await quota.stub.ListLedger(pb.ListLedgerRequest(account=account(EMPLOYEE, "E1")))
    ).entries == []


@pytest.mark.parametrize("minutes", [59, 121, 0, -5])
async def test_sessions_last_one_to_two_hours(quota: QuotaClient, minutes: int) -> None:
    await seed(quota.stub)
    error = await refused(quota.stub.Reserve(reserve_request("k", minutes=minutes)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_weekly_limit(quota: QuotaClient) -> None:
    await seed(quota.stub)
    await quota.stub.Reserve(reserve_request("a", n_week=12))
    error = await refused(quota.stub.Reserve(reserve_request("b", n_week=12, provider="P2")))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = details(error)["ErrorInfo"]
    assert info.reason == "WEEKLY_LIMIT"  # type: ignore[attr-defined]
    assert "E1" not in error.details()  # no employee id in error messages
    await quota.stub.Reserve(reserve_request("c", n_week=13))


async def test_each_limit_blocks_and_says_what_is_left(quota: QuotaClient) -> None:
    await seed(quota.stub, budget=5000, cap_minutes=6000, entitlement_minutes=120)
    await quota.stub.Reserve(reserve_request("e1", n_week=1, minutes=120))
    error = await refused(quota.stub.Reserve(reserve_request("e2", n_week=2)))
    info = details(error)["ErrorInfo"]
    assert info.reason == "EMPLOYEE_ENTITLEMENT"  # type: ignore[attr-defined]
    assert info.metadata["left_minutes"] == "0"  # type: ignore[attr-defined]

    # NT$4000 of 5000 taken by E1; 90 minutes (NT$3000) do not fit in NT$1000.
    error = await refused(quota.stub.Reserve(reserve_request("a2", employee="E2", minutes=90)))
    info = details(error)["ErrorInfo"]
    assert info.reason == "AGENCY_BUDGET"  # type: ignore[attr-defined]
    assert info.metadata["left_ntd"] == "1000"  # type: ignore[attr-defined]
    violation = details(error)["PreconditionFailure"].violations[0]  # type: ignore[attr-defined]
    assert violation.type == "AGENCY_BUDGET" and violation.subject == f"agency/PT-HR/{YEAR}"


async def test_provider_cap_and_grant_beyond_it(quota: QuotaClient) -> None:
    await seed(quota.stub, cap_minutes=60)
    await quota.stub.Reserve(reserve_request("p1", employee="E1"))
    error = await refused(quota.stub.Reserve(reserve_request("p2", employee="E2")))
    assert details(error)["ErrorInfo"].reason == "PROVIDER_CAP"  # type: ignore[attr-defined]
    granted = await quota.stub.Grant(
        pb.GrantRequest(
            idempotency_key="g1",
            account=account(PROVIDER, "P1"),
            minutes=600,
            approval_reference="SA-2027-001",
            approver="personnel-head",
            reason="special approval",
        )
    )
    assert granted.balance.entitled == 660 and granted.grant_id
    await quota.stub.Reserve(reserve_request("p2", employee="E2"))


async def test_grant_to_employee_is_idempotent(quota: QuotaClient) -> None:
    await seed(quota.stub, entitlement_minutes=60)
    await quota.stub.Reserve(reserve_request("x", n_week=1))
    request = pb.GrantRequest(
        idempotency_key="g",
        account=account(EMPLOYEE, "E1"),
        minutes=120,
        approval_reference="SA-7",
        approver="hr-director",
        reason="special approval",
    )
    first = await quota.stub.Grant(request)
    second = await quota.stub.Grant(request)
    assert first.grant_id == second.grant_id and second.balance.entitled == 180
    request.minutes = 60
    error = await refused(quota.stub.Grant(request))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    missing = pb.GrantRequest(
        idempotency_key="g2",
        account=account(EMPLOYEE, "nobody"),
        minutes=60,
        approval_reference="SA-8",
        approver="hr",
        reason="special approval",
    )
    assert (await refused(quota.stub.Grant(missing))).code() == grpc.StatusCode.NOT_FOUND


async def test_commit_spends_at_most_what_was_held(quota: QuotaClient) -> None:
    await seed(quota.stub)
    hold = (await quota.stub.Reserve(reserve_request("c1", minutes=120))).hold
    booked = (await quota.stub.Commit(pb.CommitRequest(hold_id=hold.hold_id))).hold
    assert booked.state == pb.HOLD_STATE_BOOKED and booked.minutes == 120
    agency = await balance(quota, AGENCY, "PT-HR")
    assert (agency.held, agency.spent) == (0, 4000)

    error = await refused(quota.stub.Commit(pb.CommitRequest(hold_id=hold.hold_id, minutes=121)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT

    done = (
        await quota.stub.Commit(pb.CommitRequest(hold_id=hold.hold_id, minutes=75, completed=True))
    ).hold
    assert done.state == pb.HOLD_STATE_COMPLETED and done.amount_ntd == 2500
    assert (await balance(quota, EMPLOYEE, "E1")).spent == 75
    assert (await balance(quota, AGENCY, "PT-HR")).spent == 2500
    error = await refused(quota.stub.Release(pb.ReleaseRequest(hold_id=hold.hold_id)))
    assert details(error)["ErrorInfo"].reason == "SESSION_COMPLETED"  # type: ignore[attr-defined]


async def test_release_gives_everything_back(quota: QuotaClient) -> None:
    await seed(quota.stub)
    held = (await quota.stub.Reserve(reserve_request("h", n_week=3))).hold
    booked = (await quota.stub.Reserve(reserve_request("b", n_week=4))).hold
    await quota.stub.Commit(pb.CommitRequest(hold_id=booked.hold_id))
    # A booked hold goes back only with its booking's cancellation: a
    # confirmation that lost a race cannot undo the one that won.
    error = await refused(quota.stub.Release(pb.ReleaseRequest(hold_id=booked.hold_id)))
    assert details(error)["ErrorInfo"].reason == "HOLD_BOOKED"  # type: ignore[attr-defined]
    for hold_id in (held.hold_id, booked.hold_id):
        released = await quota.stub.Release(
            pb.ReleaseRequest(hold_id=hold_id, reason="cancelled", booking_cancelled=True)
        )
        assert released.hold.state == pb.HOLD_STATE_RELEASED
        again = await quota.stub.Release(pb.ReleaseRequest(hold_id=hold_id))
        assert again.hold.state == pb.HOLD_STATE_RELEASED
    for kind, owner in ((EMPLOYEE, "E1"), (PROVIDER, "P1"), (AGENCY, "PT-HR")):
        b = await balance(quota, kind, owner)
        assert (b.held, b.spent) == (0, 0)
    # The freed week can be booked again.
    await quota.stub.Reserve(reserve_request("h2", n_week=3))
    error = await refused(quota.stub.Release(pb.ReleaseRequest(hold_id="nope")))
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_move_charges_the_new_session_in_one_step(quota: QuotaClient) -> None:
    """A reschedule within the week keeps the week's one session; one to a
    taken week, or past the provider's cap, changes nothing."""
    await seed(quota.stub)
    booked = (await quota.stub.Reserve(reserve_request("b", n_week=4))).hold
    await quota.stub.Commit(pb.CommitRequest(hold_id=booked.hold_id))
    other = (await quota.stub.Reserve(reserve_request("o", n_week=5))).hold
    await quota.stub.Commit(pb.CommitRequest(hold_id=other.hold_id))
    before = [await balance(quota, kind, owner) for kind, owner in ACCOUNTS_OF_E1]

    def move(n_week: int, minutes: int = 90, ref: str = "moved") -> pb.MoveRequest:
        start = reserve_request("x", n_week=n_week).session_start
        start.seconds += 86_400  # the next day, same ISO week
        return pb.MoveRequest(
            hold_id=booked.hold_id,
            employee_id="E1",
            provider_id="P1",
            session_start=start,
            minutes=minutes,
            booking_ref=ref,
        )

    error = await refused(quota.stub.Move(move(5)))
    assert details(error)["ErrorInfo"].reason == "WEEKLY_LIMIT"  # type: ignore[attr-defined]
    assert [await balance(quota, kind, owner) for kind, owner in ACCOUNTS_OF_E1] == before
    moved = (await quota.stub.Move(move(4))).hold
    assert (moved.hold_id, moved.state, moved.minutes) == (booked.hold_id, pb.HOLD_STATE_BOOKED, 90)
    assert moved.booking_ref == "moved" and moved.iso_week == booked.iso_week
    assert (await quota.stub.Move(move(4))).hold == moved  # a retry
    employee = await balance(quota, EMPLOYEE, "E1")
    assert (employee.held, employee.spent) == (0, 60 + 90)
    assert (await balance(quota, AGENCY, "PT-HR")).spent == 2 * 2000 + 1000
    assert await quota.service.reads.verify() == []
    # A hold that is not booked does not move.
    held = (await quota.stub.Reserve(reserve_request("h", n_week=6))).hold
    error = await refused(quota.stub.Move(replace_hold(move(6), held.hold_id)))
    assert details(error)["ErrorInfo"].reason == "NOT_BOOKED"  # type: ignore[attr-defined]


def replace_hold(request: pb.MoveRequest, hold_id: str) -> pb.MoveRequest:
    request.hold_id = hold_id
    return request


async def test_expired_hold_comes_back_and_cannot_be_committed(quota: QuotaClient) -> None:
    await seed(quota.stub)
    hold = (await quota.stub.Reserve(reserve_request("t", ttl=60))).hold
    clock.advance(timedelta(seconds=61))
    try:
        for _ in range(50):  # the sweeper runs every 0.2 s in tests
            if (await balance(quota, AGENCY, "PT-HR")).held == 0:
                break
            await asyncio.sleep(0.1)
        assert (await balance(quota, EMPLOYEE, "E1")).held == 0
        error = await refused(quota.stub.Commit(pb.CommitRequest(hold_id=hold.hold_id)))
        assert details(error)["ErrorInfo"].reason == "HOLD_EXPIRED"  # type: ignore[attr-defined]
    finally:
        clock.advance(timedelta(seconds=-61))


async def test_list_ledger_pages_through_every_entry(quota: QuotaClient) -> None:
    await seed(quota.stub)
    for n in range(1, 6):
        await quota.stub.Reserve(reserve_request(f"l{n}", n_week=n))
    seen = []
    token = ""
    while True:
        page = await quota.stub.ListLedger(
            pb.ListLedgerRequest(account=account(AGENCY, "PT-HR"), page_size=2, page_token=token)
        )
        seen.extend(page.entries)
        token = page.next_page_token
        if not token:
            break
    assert [e.kind for e in seen] == ["BUDGET_TOPUP"] + ["HOLD"] * 5
    assert sum(e.delta_held for e in seen) == 5 * 2000
    assert all(e.actor == "dev" for e in seen)
    error = await refused(quota.stub.ListLedger(pb.ListLedgerRequest(page_token="garbage")))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_list_charges_pages_through_booked_and_completed_holds(quota: QuotaClient) -> None:
    """What the matcher's check compares its sessions with: every charging
    hold, priced and placed, and nothing merely held or given back."""
    await seed(quota.stub)
    holds = [
        (await quota.stub.Reserve(reserve_request(f"c{n}", n_week=n))).hold for n in range(1, 6)
    ]
    for hold in holds[:3]:
        await quota.stub.Commit(pb.CommitRequest(hold_id=hold.hold_id))
    await quota.stub.Commit(pb.CommitRequest(hold_id=holds[2].hold_id, completed=True))
    await quota.stub.Release(pb.ReleaseRequest(hold_id=holds[3].hold_id, reason="changed"))
    seen: list[pb.Hold] = []
    token = ""
    while True:
        page = await quota.stub.ListCharges(pb.ListChargesRequest(page_size=2, page_token=token))
        assert len(page.holds) <= 2
        seen.extend(page.holds)
        token = page.next_page_token
        if not token:
            break
    assert sorted(h.hold_id for h in seen) == sorted(h.hold_id for h in holds[:3])
    assert [h.hold_id for h in seen] == sorted(h.hold_id for h in seen)  # by id
    assert {h.state for h in seen} == {pb.HOLD_STATE_BOOKED, pb.HOLD_STATE_COMPLETED}
    assert all(h.hourly_rate_ntd == RATE and h.amount_ntd == RATE for h in seen)
    assert {h.session_start.seconds for h in seen} == {h.session_start.seconds for h in holds[:3]}
    for bad in (pb.ListChargesRequest(page_token="garbage"), pb.ListChargesRequest(page_size=5001)):
        error = await refused(quota.stub.ListCharges(bad))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def spend(
    quota: QuotaClient,
    key: str,
    employee: str,
    n_week: int,
    agency: str = "PT-HR",
    category: str = "official",
    minutes: int = 60,
) -> None:
    """Reserves and commits one individual session."""
    request = reserve_request(
        key, employee=employee, n_week=n_week, minutes=minutes, agency=agency, category=category
    )
    hold = (await quota.stub.Reserve(request)).hold
    await quota.stub.Commit(pb.CommitRequest(hold_id=hold.hold_id))


async def usage_cells(
    quota: QuotaClient, organisation: str = ""
) -> list[tuple[str, str, int, bool, int, int, int, int]]:
    """The usage summary's rows as (agency, category, month, suppressed, people,
    sessions, minutes, NT$)."""
    request = pb.GetUsageSummaryRequest(fiscal_year=YEAR, organisation=organisation)
    return [
        (
            r.agency_id,
            r.staff_category,
            r.month,
            r.suppressed,
            r.people,
            r.sessions,
            r.minutes,
            r.amount_ntd,
        )
        for r in (await quota.stub.GetUsageSummary(request)).rows
    ]


async def test_usage_summary_counts_spent_sessions_per_agency_category_month(
    quota: QuotaClient,
) -> None:
    await seed(quota.stub)
    for n in range(6):  # six officials in January (ISO week 2), E0 once more in week 3
        await spend(quota, f"o{n}", f"E{n}", 2)
    await spend(quota, "o0-again", "E0", 3, minutes=90)
    for index in range(5):  # five teachers in one March group session: a hold each
        request = reserve_request(
            f"t{index}", employee=f"T{index}", category="teacher", n_week=10, minutes=100
        )
        request.group.CopyFrom(pb.GroupShare(size=5, index=index))
        hold = (await quota.stub.Reserve(request)).hold
        await quota.stub.Commit(pb.CommitRequest(hold_id=hold.hold_id))
    await quota.stub.Reserve(reserve_request("held", employee="E9", n_week=2))  # held only
    cells = await usage_cells(quota)
    assert cells == [
        # 6 people, 7 sessions: 6 x 60 + 90 minutes, 6 x NT$2,000 + NT$3,000
        ("PT-HR", "official", 1, False, 6, 7, 450, 15_000),
        # 100 minutes cost NT$3,334 (rounded up), shared among the five; each
        # spends 100 minutes
        ("PT-HR", "teacher", 3, False, 5, 5, 500, 3334),
    ]
    # Nothing withheld: the cells add up to what the agency's pool has spent.
    assert sum(c[7] for c in cells) == (await balance(quota, AGENCY, "PT-HR")).spent


async def test_usage_summary_withholds_a_small_agency(quota: QuotaClient) -> None:
    """Issue 6: an aggregate never shows a cell of fewer than five people."""
    await seed(quota.stub)
    for n in range(3):  # a small agency: three people, four sessions
        await spend(quota, f"edu{n}", f"D{n}", 2, agency="PT-EDU")
    await spend(quota, "edu-again", "D0", 3, agency="PT-EDU")
    for n in range(5):
        await spend(quota, f"hr{n}", f"E{n}", 2)
    cells = await usage_cells(quota)
    assert cells == [
        ("PT-EDU", "official", 1, True, 0, 0, 0, 0),
        ("PT-HR", "official", 1, False, 5, 5, 300, 10_000),
    ]
    assert await usage_cells(quota, ORG) == cells
    assert await usage_cells(quota, "elsewhere") == []


async def test_usage_summary_withholds_what_would_let_a_small_cell_be_solved_for(
    quota: QuotaClient,
) -> None:
    await seed(quota.stub)
    # PT-HR: officials, six in January and five in March; two teachers in January.
    for n in range(6):
        await spend(quota, f"hr-jan{n}", f"E{n}", 2)
    for n in range(5):
        await spend(quota, f"hr-mar{n}", f"E{n}", 10)
    for n in range(2):
        await spend(quota, f"hr-tea{n}", f"T{n}", 2, category="teacher")
    # PT-EDU: five officials in January; two small cells that cover each other.
    for n in range(5):
        await spend(quota, f"edu-jan{n}", f"D{n}", 2, agency="PT-EDU")
    await spend(quota, "edu-mar", "D0", 10, agency="PT-EDU")
    await spend(quota, "edu-tea", "S0", 2, agency="PT-EDU", category="teacher")
    cells = await usage_cells(quota)
    assert cells == [
        ("PT-EDU", "official", 1, False, 5, 5, 300, 10_000),
        ("PT-EDU", "official", 3, True, 0, 0, 0, 0),
        ("PT-EDU", "teacher", 1, True, 0, 0, 0, 0),
        ("PT-HR", "official", 1, False, 6, 6, 360, 12_000),
        # Shown: March's one small cell is PT-EDU's, and what would give it
        # away (the provider's March total less PT-HR's) is what is withheld,
        # not this cell (tests/quota/test_disclosure.py has the attacker).
        ("PT-HR", "official", 3, False, 5, 5, 300, 10_000),
        ("PT-HR", "teacher", 1, True, 0, 0, 0, 0),
    ]


async def test_top_up_and_transfer(quota: QuotaClient) -> None:
    await seed(quota.stub, budget=10_000)
    moved = await quota.stub.TransferBudget(
        pb.TransferBudgetRequest(
            idempotency_key="t1",
            from_agency_id="PT-HR",
            to_agency_id="PT-EDU",
            fiscal_year=YEAR,
            amount_ntd=4000,
            reason="mid-year rebalancing",
        )
    )
    assert (moved.from_balance.entitled, moved.to_balance.entitled) == (6000, 14_000)
    error = await refused(
        quota.stub.TransferBudget(
            pb.TransferBudgetRequest(
                idempotency_key="t2",
                from_agency_id="PT-HR",
                to_agency_id="PT-EDU",
                fiscal_year=YEAR,
                amount_ntd=7000,
                reason="too much",
            )
        )
    )
    assert details(error)["ErrorInfo"].reason == "AGENCY_BUDGET"  # type: ignore[attr-defined]
    topped = await quota.stub.TopUpBudget(
        pb.TopUpBudgetRequest(
            idempotency_key="top",
            agency_id="PT-HR",
            fiscal_year=YEAR,
            amount_ntd=500,
            reason="supplementary budget",
        )
    )
    assert topped.balance.entitled == 6500
    error = await refused(
        quota.stub.TopUpBudget(
            pb.TopUpBudgetRequest(
                idempotency_key="top2",
                agency_id="PT-NONE",
                fiscal_year=YEAR,
                amount_ntd=500,
                reason="x",
            )
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_contract_cap_cannot_drop_below_use(quota: QuotaClient) -> None:
    await seed(quota.stub)
    await quota.stub.Reserve(reserve_request("c", minutes=120))
    error = await refused(
        quota.stub.SetProviderContract(
            pb.SetProviderContractRequest(
                provider_id="P1",
                fiscal_year=YEAR,
                hourly_rate_ntd=RATE,
                cap_minutes=100,
                reason="cut",
            )
        )
    )
    assert details(error)["ErrorInfo"].reason == "CAP_BELOW_USE"  # type: ignore[attr-defined]
    raised = await quota.stub.SetProviderContract(
        pb.SetProviderContractRequest(
            provider_id="P1",
            fiscal_year=YEAR,
            hourly_rate_ntd=RATE,
            cap_minutes=9000,
            reason="extension",
        )
    )
    assert raised.balance.entitled == 9000 and raised.balance.held == 120


async def test_refusals_without_setup(quota: QuotaClient) -> None:
    error = await refused(quota.stub.Reserve(reserve_request("k")))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    error = await refused(
        quota.stub.GetBalance(
            pb.GetBalanceRequest(account=pb.AccountRef(kind=pb.ACCOUNT_KIND_UNSPECIFIED, id="x"))
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    await quota.stub.UpsertAgency(
        pb.UpsertAgencyRequest(agency_id="A", organisation="o", display_name="A")
    )
    error = await refused(quota.stub.Reserve(reserve_request("k", agency="A")))
    assert details(error)["ErrorInfo"].reason == "NO_CONTRACT"  # type: ignore[attr-defined]


async def test_agencies_are_listed_by_id_and_by_organisation(quota: QuotaClient) -> None:
    for agency, organisation in (
        ("PT-HR", "pingtung"),
        ("ML-HR", "miaoli"),
        ("PT-EDU", "pingtung"),
    ):
        await quota.stub.UpsertAgency(
            pb.UpsertAgencyRequest(
                agency_id=agency, organisation=organisation, display_name=f"{agency} office"
            )
        )
    every = await quota.stub.ListAgencies(pb.ListAgenciesRequest())
    assert [a.agency_id for a in every.agencies] == ["ML-HR", "PT-EDU", "PT-HR"]
    assert every.agencies[0].display_name == "ML-HR office"
    ours = await quota.stub.ListAgencies(pb.ListAgenciesRequest(organisation="pingtung"))
    assert [(a.agency_id, a.organisation) for a in ours.agencies] == [
        ("PT-EDU", "pingtung"),
        ("PT-HR", "pingtung"),
    ]


async def test_ping(quota: QuotaClient) -> None:
    assert await quota.stub.Ping(pb.PingRequest()) == pb.PingResponse()


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_one_replica_at_a_time_sweeps_when_redis_is_there(
    quota: QuotaClient, backend: Backend
) -> None:
    assert backend.settings.redis_url is not None
    key = f"eap:quota:lease:hold-sweep:{quota.service.lease_scope}"
    sync = redis.Redis.from_url(backend.settings.redis_url)
    await asyncio.sleep(0.5)  # the sweeper runs every 0.2 s in tests
    assert sync.get(key) == lease.OWNER.encode()
    client = redis_asyncio.Redis.from_url(backend.settings.redis_url)
    try:
        sync.set(key, "another-replica:1", px=5000)
        scope = quota.service.lease_scope
        assert not await lease.take_turn(client, "quota", "hold-sweep", 1, scope)
        sync.delete(key)
        assert await lease.take_turn(client, "quota", "hold-sweep", 1, scope)
    finally:
        await client.aclose()
    # Redis down: every replica sweeps, which is safe.
    dead = redis_asyncio.Redis.from_url("redis://127.0.0.1:1/0")
    assert await lease.take_turn(dead, "quota", "hold-sweep", 1)


async def test_get_provider_contract(quota: QuotaClient) -> None:
    await seed(quota.stub)
    await quota.stub.Reserve(reserve_request("c1", minutes=90))
    contract = await quota.stub.GetProviderContract(
        pb.GetProviderContractRequest(provider_id="P1", fiscal_year=YEAR)
    )
    assert contract.hourly_rate_ntd == RATE
    assert (contract.balance.entitled, contract.balance.held) == (6_000, 90)
    missing = await refused(
        quota.stub.GetProviderContract(pb.GetProviderContractRequest(provider_id="P9"))
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    bad = await refused(quota.stub.GetProviderContract(pb.GetProviderContractRequest()))
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_group_shares_divide_the_provider_minutes_and_cost(quota: QuotaClient) -> None:
    await seed(quota.stub)
    holds = []
    for index, (employee, agency) in enumerate(
        (("E1", "PT-HR"), ("E2", "PT-HR"), ("E3", "PT-EDU"))
    ):
        request = reserve_request(f"g{index}", employee=employee, agency=agency, minutes=100)
        request.group.CopyFrom(pb.GroupShare(size=3, index=index))
        holds.append((await quota.stub.Reserve(request)).hold)
    # 100 minutes cost NT$3,334 (3,333.33 rounded up, rules.cost); shared in
    # whole minutes and whole NT$.
    assert [h.provider_minutes for h in holds] == [34, 33, 33]
    assert [h.amount_ntd for h in holds] == [1112, 1111, 1111]
    assert [h.minutes for h in holds] == [100, 100, 100]
    assert (await balance(quota, PROVIDER, "P1")).held == 100
    assert (await balance(quota, EMPLOYEE, "E3")).held == 100  # a whole session each
    assert (await balance(quota, AGENCY, "PT-EDU")).held == 1111
    # The session took 90 minutes: every share is priced again.
    for hold in holds:
        done = await quota.stub.Commit(
            pb.CommitRequest(hold_id=hold.hold_id, minutes=90, completed=True)
        )
        assert (done.hold.provider_minutes, done.hold.amount_ntd) == (30, 1000)
    provider = await balance(quota, PROVIDER, "P1")
    assert (provider.held, provider.spent) == (0, 90)
    hr, edu = await balance(quota, AGENCY, "PT-HR"), await balance(quota, AGENCY, "PT-EDU")
    assert (hr.spent, edu.spent, hr.held + edu.held) == (2000, 1000, 0)
    assert await quota.service.reads.verify() == []


async def test_a_released_share_gives_back_only_itself(quota: QuotaClient) -> None:
    await seed(quota.stub)
    request = reserve_request("s0", minutes=60)
    request.group.CopyFrom(pb.GroupShare(size=4, index=0))
    hold = (await quota.stub.Reserve(request)).hold
    other = reserve_request("s1", employee="E2", minutes=60)
    other.group.CopyFrom(pb.GroupShare(size=4, index=1))
    await quota.stub.Reserve(other)
    await quota.stub.Release(pb.ReleaseRequest(hold_id=hold.hold_id, reason="left the group"))
    assert (await balance(quota, PROVIDER, "P1")).held == 15
    assert (await balance(quota, AGENCY, "PT-HR")).held == 500
    assert (await balance(quota, EMPLOYEE, "E1")).held == 0


@pytest.mark.parametrize(
    ("size", "index", "field"),
    [(1, 0, "group.size"), (31, 0, "group.size"), (3, 3, "group.index"), (2, -1, "group.index")],
)
async def test_group_shares_are_checked(
    quota: QuotaClient, size: int, index: int, field: str
) -> None:
    await seed(quota.stub)
    request = reserve_request("bad")
    request.group.CopyFrom(pb.GroupShare(size=size, index=index))
    error = await refused(quota.stub.Reserve(request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = {v.field for v in details(error)["BadRequest"].field_violations}  # type: ignore[attr-defined]
    assert fields == {field}


async def test_a_move_into_the_next_year_opens_its_entitlement(quota: QuotaClient) -> None:
    await seed(quota.stub)
    await seed(quota.stub, year=YEAR + 1)
    booked = (await quota.stub.Reserve(reserve_request("b", n_week=50))).hold
    await quota.stub.Commit(pb.CommitRequest(hold_id=booked.hold_id))
    start = reserve_request("x").session_start
    start.FromDatetime(dt.datetime(YEAR + 1, 1, 12, 10, tzinfo=dt.UTC))
    moved = (
        await quota.stub.Move(
            pb.MoveRequest(
                hold_id=booked.hold_id,
                employee_id="E1",
                provider_id="P1",
                session_start=start,
                minutes=60,
                booking_ref="next-year",
            )
        )
    ).hold
    assert (moved.fiscal_year, moved.state) == (YEAR + 1, pb.HOLD_STATE_BOOKED)
    assert (await balance(quota, EMPLOYEE, "E1")).spent == 0
    next_year = await quota.stub.GetBalance(
        pb.GetBalanceRequest(account=pb.AccountRef(kind=EMPLOYEE, id="E1", fiscal_year=YEAR + 1))
    )
    assert (next_year.balance.entitled, next_year.balance.spent) == (360, 60)
    assert await quota.service.reads.verify() == []
