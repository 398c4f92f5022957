"""The matcher's own metrics: bookings by outcome, lapsed slot holds, match
jobs, how their solves went, and why cases went unserved. Labels are
outcomes, states and reason codes only."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

BOOKINGS = Counter(
    "eap_matcher_bookings_total",
    "Booking steps by outcome: held, booked, cancelled, released, completed, no_show, "
    "late_cancellation.",
    ("outcome",),
)
HOLDS_EXPIRED = Counter(
    "eap_matcher_holds_expired_total",
    "Slot holds that lapsed before they were confirmed (a broken frontend shows here).",
)
MATCH_JOBS = Counter("eap_matcher_match_jobs_total", "Match jobs finished, by state.", ("state",))
SOLVE_SECONDS = Histogram(
    "eap_matcher_match_solve_seconds",
    "Wall time of a match job's solve.",
    buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1800),
)
SOLVE_GAP = Histogram(
    "eap_matcher_match_gap_ratio",
    "A finished solve's gap: (bound - score) / score.",
    buckets=(0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
)
HIT_TIME_LIMIT = Counter(
    "eap_matcher_match_time_limit_total",
    "Solves that stopped at their time limit without proving their schedule optimal.",
)
UNSERVED = Counter(
    "eap_matcher_unserved_cases_total",
    "Cases a finished match job left short, by reason code.",
    ("reason",),
)
CONSISTENCY_PROBLEMS = Gauge(
    "eap_matcher_consistency_problems",
    "Sessions and quota charges that disagreed at the last check across services, "
    "by kind (UNCHARGED, CHARGED_TWICE, WRONG_CHARGE, CHARGE_WITHOUT_SESSION, WEEKLY_LIMIT).",
    ("tenant", "kind"),
)
CONSISTENCY_CHECKED = Gauge(
    "eap_matcher_consistency_checked_timestamp_seconds",
    "When the last check across services finished (Unix time).",
    ("tenant",),
)
WAITLIST_LENGTH = Gauge(
    "eap_matcher_waitlist_entries",
    "Cases in line on the waitlist at the last offering pass, by state (waiting, offered).",
    ("tenant", "state"),
)
WAITLIST_JOINED = Counter(
    "eap_matcher_waitlist_joined_total",
    "Cases put on the waitlist (by joining, or by a counselor's cancellation).",
)
WAITLIST_OFFERS = Counter(
    "eap_matcher_waitlist_offers_total",
    "Waitlist offers by outcome: made, taken, lapsed (not taken in time, or declined).",
    ("outcome",),
)
