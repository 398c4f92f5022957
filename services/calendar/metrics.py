"""The calendar service's own metrics: plan jobs and how long they took."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

PLANS = Counter("eap_calendar_plans_total", "Plan jobs finished, by state.", ("state",))
PLAN_SECONDS = Histogram(
    "eap_calendar_plan_seconds",
    "Time a plan job took to plan.",
    buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300),
)
UNPLACED = Counter(
    "eap_calendar_unplaced_total",
    "Occurrences a finished plan could not place, by rule.",
    ("rule",),
)
