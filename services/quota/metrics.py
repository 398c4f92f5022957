"""The quota service's own metrics: what is left and spent of each agency's
budget and each provider's hours, and the holds. Labels name institutions
(agencies, providers) and the fiscal year, never a person.

The balance gauges are refreshed from the database every few seconds by
every replica, so all replicas report the same values: aggregate them with
max(), not sum().

Small groups are not shown (issue 14, item 3; disclosure.shown_owners
decides). An agency's spent or held NT$, or a provider's hours, where fewer
than five distinct employees stand behind its charges in the fiscal year, tells whoever can
scrape the port what those few people used, and a series moving by one
session's price says that one of them booked this week. Such an agency or
provider has no series at all (every state, entitled too, so that its
absence is the only thing seen); operators read its balance with
`eapctl`/GetBalance, which is access-controlled and audited. A provider
counts like an agency: its hours are its clients' sessions, so one used
by two employees gives away their use as surely as their agency's money.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

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
