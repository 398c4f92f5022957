"""The quota service's own metrics: what is left and spent of each agency's
budget and each provider's hours, and the holds. Labels name institutions
(agencies, providers) and the fiscal year, never a person.

The balance gauges are refreshed from the database every few seconds by
every replica, so all replicas report the same values: aggregate them with
max(), not sum().
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

AGENCY_BUDGET = Gauge(
    "eap_quota_agency_budget_ntd",
    "An agency's funded pool for the fiscal year, NT$, by state (entitled, held, spent, left).",
    ("agency", "fiscal_year", "state"),
)
PROVIDER_TIME = Gauge(
    # Prometheus wants base units: seconds, though the ledger counts minutes.
    "eap_quota_provider_seconds",
    "A provider's contracted hours for the fiscal year, in seconds, by state "
    "(entitled, held, spent, left).",
    ("provider", "fiscal_year", "state"),
)
HOLDS_ACTIVE = Gauge("eap_quota_holds_active", "Holds reserved and not yet committed or released.")
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
)
LEDGER_CHECKED = Gauge(
    "eap_quota_ledger_checked_timestamp_seconds",
    "When the last check of the ledger finished (Unix time).",
)
