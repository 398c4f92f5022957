"""The optimizer's session costs are the quota's charges, to the NT$, where
rate x minutes / 60 is not a whole number; so an optimized result applied
with ApplyMatchResult is booked in full, no session refused by the quota.

Hourly rates are whole NT$ in the quota's contract (`hourly_rate_ntd` is an
int64), so a rate such as 1333.33 cannot be stated; the fraction comes from
the 90-minute sessions instead: an odd rate r costs 1.5 r = k + 0.5. The
rates are odd with k even (r = 3 mod 4), so that rounding down and rounding
half to even (Python's `round`) both give k, and only the quota's rounding
up gives k + 1. (Rounding half up agrees with rounding up on every half, so
no 90-minute session at a whole rate can tell those two apart.)

    provider  rate/h  exact 90 min  charged (up)  down = half to even
    P1        1335    2002.5        2003          2002
    P2        1779    2668.5        2669          2668
    P3        2011    3016.5        3017          3016

Each provider has one counselor, free for exactly one 90-minute session on
each Monday of the two-week horizon: six slots, and six cases that want one
session each. PT-HR's budget is the six sessions at the quota's charges
less NT$1, 15,377:

- rounded up, as the quota charges, six sessions cost 15,378, so five at
  most fit; the cost weighs in the objective, so the optimizer leaves out
  the dearest and plans 2 x 2003 + 2 x 2669 + 3017 = 12,361, and the NT$3,016
  left is one short of the P3 session it did not plan;
- rounded down or half to even, six cost 15,372, and at the exact fractions
  15,375: both fit 15,377, so an optimizer that rounded either way would
  plan a sixth session, which the quota refuses (AGENCY_BUDGET), and would
  count each session NT$1 or NT$0.5 below the quota's charge.

The job result lists no costs, but its score carries them: with the session
weight W, the cost weight NT$1 a dollar and the other terms off, score =
W x sessions - cost, so the optimizer's own total cost is W x sessions -
score. Per session, what the quota held and spent is read from its ledger
and checked against the rate rounded up, worked out here.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from eap.matcher.v1 import matcher_pb2 as pb
from eap.quota.v1 import quota_pb2 as qpb
from tests.conftest import Suite
from tests.county import YEAR, account, counselor
from tests.matcher.test_booking import case, submit
from tests.matcher.test_jobs import run_job

MINUTES = 90
RATES = {"P1": 1335, "P2": 1779, "P3": 2011}  # NT$ an hour, each 3 mod 4 (see above)
COUNSELORS = {"C001": "P1", "C002": "P2", "C003": "P3"}
EMPLOYEES = {f"K{n}": f"E{n}" for n in range(6)}  # one case per slot, one employee per case
# Above any session's cost, so that every session is worth its price and a
# schedule with more sessions always wins; among equals, the cheapest.
SESSION_WEIGHT = 10_000
WEIGHTS = pb.ObjectiveWeights(
    session=SESSION_WEIGHT, crisis_session=0, continuity=0, wait_day=0, cost_per_kntd=1000
)


def charge(rate: int) -> int:
    """A session's cost rounded up to the NT$, in integers here rather than
    by rules.cost, so that the test checks that module instead of using it."""
    return -(-rate * MINUTES // 60)


BUDGET = 2 * sum(charge(rate) for rate in RATES.values()) - 1  # 15,377


async def tight_county(suite: Suite) -> None:
    """The county of the module's docstring over the suite's: three
    providers at odd rates, a 90-minute slot each Monday for each one's
    counselor, six cases, and PT-HR's budget one NT$ short of all six."""
    for provider, rate in RATES.items():
        await suite.quota.SetProviderContract(
            qpb.SetProviderContractRequest(
                provider_id=provider,
                fiscal_year=YEAR,
                hourly_rate_ntd=rate,
                cap_minutes=6_000,  # far from binding: only the budget decides
                reason="contract at an odd rate",
            )
        )
    monday_morning = pb.WeeklyWindow(weekday=1, start_time="09:00", end_time="10:30")
    for counselor_id, provider in COUNSELORS.items():
        await suite.matcher.UpsertCounselor(
            pb.UpsertCounselorRequest(
                counselor=counselor(
                    counselor_id,
                    provider=provider,
                    max_sessions_per_day=1,
                    weekly_availability=[monday_morning],
                )
            )
        )
    seeded = await agency_balance(suite)
    await suite.quota.TransferBudget(
        qpb.TransferBudgetRequest(
            idempotency_key="one-short-of-six",
            from_agency_id="PT-HR",
            to_agency_id="PT-EDU",
            fiscal_year=YEAR,
            amount_ntd=seeded.left - BUDGET,
            reason="budget one NT$ short of six sessions",
        )
    )
    for case_id, employee in EMPLOYEES.items():
        await submit(suite, case(case_id, employee, sessions_wanted=1, minutes=MINUTES))


async def agency_balance(suite: Suite) -> qpb.Balance:
    request = qpb.GetBalanceRequest(account=account(qpb.ACCOUNT_KIND_AGENCY, "PT-HR"))
    return (await suite.quota.GetBalance(request)).balance


@dataclass(frozen=True)
class Charge:
    provider: str
    held_ntd: int  # what Reserve checked against the budget
    spent_ntd: int  # what Commit spent of it


async def charges_by_employee(suite: Suite) -> dict[str, Charge]:
    """What the quota held and spent per employee, from its ledger. A hold's
    entries (one per account, at HOLD and again at COMMIT) all carry its id
    as reference: the employee's says whose session it is, the provider's
    whose counselor holds it, and the agency's what it cost."""
    entries: list[qpb.LedgerEntry] = []
    token = ""
    while True:
        page = await suite.quota.ListLedger(qpb.ListLedgerRequest(page_size=1000, page_token=token))
        entries.extend(page.entries)
        token = page.next_page_token
        if not token:
            break
    by_hold: dict[str, dict[tuple[str, int], qpb.LedgerEntry]] = {}
    for entry in entries:
        if entry.kind in ("HOLD", "COMMIT"):
            by_hold.setdefault(entry.reference, {})[entry.kind, entry.account.kind] = entry
    charges: dict[str, Charge] = {}
    for hold in by_hold.values():
        employee = hold["HOLD", qpb.ACCOUNT_KIND_EMPLOYEE].account.id
        assert employee not in charges, f"{employee} was charged twice"
        charges[employee] = Charge(
            hold["HOLD", qpb.ACCOUNT_KIND_PROVIDER].account.id,
            hold["HOLD", qpb.ACCOUNT_KIND_AGENCY].delta_held,
            hold["COMMIT", qpb.ACCOUNT_KIND_AGENCY].delta_spent,
        )
    return charges


async def test_planned_costs_are_the_quotas_charges(suite: Suite) -> None:
    await tight_county(suite)
    job = await run_job(suite, weights=WEIGHTS)
    result = await suite.matcher.GetMatchResult(pb.GetMatchResultRequest(job_id=job.job_id))
    planned = list(result.sessions)
    assert {s.minutes for s in planned} == {MINUTES}
    planned_cost = SESSION_WEIGHT * len(planned) - job.best_score

    applied = await suite.matcher.ApplyMatchResult(pb.ApplyMatchResultRequest(job_id=job.job_id))
    refused = [(n.session.case_id, n.session.counselor_id, n.rule) for n in applied.not_booked]
    assert refused == [], f"the quota refused planned sessions: {refused}"
    assert len(applied.booking_ids) == len(planned)

    charges = await charges_by_employee(suite)
    assert set(charges) == {EMPLOYEES[s.case_id] for s in planned}
    for session in planned:
        charged = charges[EMPLOYEES[session.case_id]]
        assert charged.provider == COUNSELORS[session.counselor_id]
        rounded_up = charge(RATES[charged.provider])
        assert (charged.held_ntd, charged.spent_ntd) == (rounded_up, rounded_up), (
            f"{session.case_id} with {session.counselor_id}: the quota held and spent "
            f"{charged.held_ntd} and {charged.spent_ntd}, the rate rounded up is {rounded_up}"
        )
    charged_total = sum(c.spent_ntd for c in charges.values())
    assert planned_cost == charged_total, (
        f"the job's score {job.best_score} for {len(planned)} sessions puts their cost at "
        f"NT${planned_cost}; the quota charged NT${charged_total}"
    )
    balance = await agency_balance(suite)
    assert (balance.spent, balance.held) == (charged_total, 0)

    # Nor does the optimizer plan fewer than fit (by rounding up twice, say):
    # five sessions, leaving out a P3 one, for which NT$1 is missing.
    assert Counter(s.counselor_id for s in planned) == {"C001": 2, "C002": 2, "C003": 1}
    assert balance.left == charge(RATES["P3"]) - 1
