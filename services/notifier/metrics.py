"""The notifier's metrics: deliveries by outcome, and the outbox as it
stands (by state, and how long the oldest deliverable notice has waited),
which the alerts watch. Labels are states and outcomes only: never a
person, an address or a booking."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

DELIVERIES = Counter(
    "eap_notifier_deliveries_total",
    "Delivery attempts by outcome: sent, pending (to try again), dead.",
    ("outcome",),
)
NOTICES = Gauge(
    "eap_notifier_notices",
    "Notices in the outbox by state: pending, sending, sent, dead, void.",
    ("tenant", "state"),
)
OLDEST_DUE = Gauge(
    "eap_notifier_oldest_due_seconds",
    "Seconds since the oldest pending notice fell due (0: none waits).",
    ("tenant",),
)
