"""The waitlist's rules (issue 16, item 2): who a freed slot goes to first,
how long an offer is held, and when the list stops offering.

Order: crisis cases first (the Pingtung and Miaoli plans: a crisis is
urgent and seen first), and among cases of one kind, a case whose session
the counselor cancelled comes before those that only wait (the programme
broke its word to it; issue 16, item 1: "offers the case another slot
first"); then the longest waiting. So a crisis case outranks a requeued
general one: an emergency is never put behind a rebooking.
"""

from __future__ import annotations

from datetime import datetime, timedelta

# How long a slot offered from the waitlist is held for the person to take
# it, by default (EAP_OFFER_HOURS): long enough to read a message sent at
# night, short enough that a slot not wanted passes on the same day.
OFFER_HOURS = 12
# An offer is never held into the last hours before the session: the
# counselor must know whether it takes place, and the next case in line
# must still have time to take it.
OFFER_LEAD = timedelta(hours=2)
# An offer whose deadline would leave the person less than this to answer
# is not made at all.
SHORTEST_OFFER = timedelta(minutes=30)
# Offers a case may let lapse (or decline) before the list gives up on it.
MAX_LAPSES = 3

# The tiers of the order, lowest first.
REQUEUED_CRISIS, CRISIS, REQUEUED, GENERAL = 0, 1, 2, 3


def rank(crisis: bool, requeued: bool) -> int:
    """A waiting case's tier: crisis first, and within a kind, a case the
    counselor cancelled on before the others."""
    if crisis:
        return REQUEUED_CRISIS if requeued else CRISIS
    return REQUEUED if requeued else GENERAL


def offer_deadline(start: datetime, now: datetime, hours: float) -> datetime | None:
    """Until when a slot starting at `start` is held for the case it is
    offered to: `hours` from now, but never later than OFFER_LEAD before the
    session; None when that leaves less than SHORTEST_OFFER to answer (the
    slot is not offered)."""
    deadline = min(now + timedelta(hours=hours), start - OFFER_LEAD)
    return deadline if deadline - now >= SHORTEST_OFFER else None
