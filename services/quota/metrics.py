"""The quota service's own metrics: what is left and spent of each agency's
budget and each provider's hours, and the holds. Labels name institutions
(agencies, providers) and the fiscal year, never a person.

The balance gauges are refreshed from the database every few seconds by
every replica, so all replicas report the same values: aggregate them with
max(), not sum().

Small groups are not shown (issue 14, item 3). An agency's spent or held
NT$, or a provider's hours, where fewer than MIN_CELL_PEOPLE distinct
employees stand behind its charges in the fiscal year, tells whoever can
scrape the port what those few people used, and a series moving by one
session's price says that one of them booked this week. Such an agency or
provider has no series at all (every state, entitled too, so that its
absence is the only thing seen); operators read its balance with
`eapctl`/GetBalance, which is access-controlled and audited. A provider
counts like an agency: its hours are its clients' sessions, so one used
by two employees gives away their use as surely as their agency's money.
"""

from __future__ import annotations

from collections.abc import Mapping, Set

from prometheus_client import Counter, Gauge

from services.quota.disclosure import MIN_CELL_PEOPLE

AGENCY_BUDGET = Gauge(
    "eap_quota_agency_budget_ntd",
    "An agency's funded pool for the fiscal year, NT$, by state (entitled, held, spent, left).",
    ("tenant", "agency", "fiscal_year", "state"),
)
PROVIDER_TIME = Gauge(
    # Prometheus wants base units: seconds, though the ledger counts minutes.
    "eap_quota_provider_seconds",
    "A provider's contracted hours for the fiscal year, in seconds, by state "
    "(entitled, held, spent, left).",
    ("tenant", "provider", "fiscal_year", "state"),
)
HOLDS_ACTIVE = Gauge(
    "eap_quota_holds_active", "Holds reserved and not yet committed or released.", ("tenant",)
)
HOLDS_EXPIRED = Counter(
    "eap_quota_holds_expired_total", "Holds given back because their time ran out."
)
RESERVES_SHED = Counter(
    "eap_quota_reserves_shed_total",
    "Reserves refused RESOURCE_EXHAUSTED at once because the queue ahead would "
    "outlast the caller's deadline (the service is over its capacity).",
)
LEDGER_PROBLEMS = Gauge(
    "eap_quota_ledger_problems",
    "Accounts whose balance differed from their ledger's sum, or went below zero "
    "(a cap or budget over), at the last check.",
    ("tenant",),
)
LEDGER_CHECKED = Gauge(
    "eap_quota_ledger_checked_timestamp_seconds",
    "When the last check of the ledger finished (Unix time).",
    ("tenant",),
)


def shown_owners(people: Mapping[str, Set[str]], minimum: int = MIN_CELL_PEOPLE) -> set[str]:
    """The agencies (or providers) of `people` whose gauges may be exported:
    `people` maps each one with an account to the distinct employees behind
    its booked and completed charges in the year.

    Primary suppression: fewer than `minimum` people, not shown. Then
    complementary suppression, as disclosure.suppress_small_cells does for
    the usage summary: the gauges of one family add up to something known
    elsewhere (the providers' hours times their contracted rates give the
    agencies' total NT$, and the other way round), so a lone withheld
    owner would come back by subtraction. The withheld ones are therefore
    grown, smallest shown first, until together they stand for at least
    `minimum` distinct people: all that subtraction can give is their sum,
    and it describes a group of that size. Ties go by name, so the choice
    is stable from one refresh to the next.
    """
    withheld = {owner for owner, who in people.items() if len(who) < minimum}
    shown = sorted(set(people) - withheld, key=lambda owner: (len(people[owner]), owner))
    behind: set[str] = set().union(*(people[owner] for owner in withheld))
    while withheld and len(behind) < minimum and shown:
        complement = shown.pop(0)
        withheld.add(complement)
        behind |= people[complement]
    return set(shown)
