"""What FindSlots offers a frontend: the free slots (slots.py) narrowed by
the person's filters, and ranked so that a page shows different counselors
and days rather than one counselor's back-to-back half hours.

Ranking: a crisis case's slots inside its deadline first, then the preferred
counselor's, as before; within each of those tiers, rounds: the earliest
slot of every counselor-day, earliest first, then the second of each, and
so on. Pages are cut from that ranking as it stands at each call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import time

from services.matcher.booking.cases import Case
from services.matcher.booking.slots import Offer
from services.matcher.registry.counselors import Counselor, Modality
from services.rules.office_time import local, local_day


@dataclass(frozen=True)
class SlotFilter:
    """The person's narrowing of their search; empty fields keep everything."""

    modalities: tuple[Modality, ...] = ()
    earliest: time | None = None  # local start time, inclusive
    latest: time | None = None  # local start time, inclusive
    languages: tuple[str, ...] = ()  # BCP 47 tags; "zh" takes "zh-TW" too
    counselor_id: str = ""  # this counselor only (a waitlist entry may pin one)

    def case_for(self, case: Case) -> Case:
        """The case as the search sees it: only the modalities asked for,
        in the case's own order of preference."""
        if not self.modalities:
            return case
        return replace(case, modalities=tuple(m for m in case.modalities if m in self.modalities))

    def speaks(self, counselor: Counselor) -> bool:
        """Whether the counselor holds sessions in a language asked for (a
        counselor whose languages the registry does not record does not)."""
        if not self.languages:
            return True
        wanted = [w.lower() for w in self.languages]
        return any(
            tag.lower() == w or tag.lower().startswith(f"{w}-")
            for tag in counselor.languages
            for w in wanted
        )

    def counselors(self, counselors: Sequence[Counselor]) -> list[Counselor]:
        return [
            c for c in counselors if self.speaks(c) and self.counselor_id in ("", c.counselor_id)
        ]

    def keeps(self, offer: Offer) -> bool:
        start = local(offer.start).time().replace(tzinfo=None)
        return (self.earliest is None or self.earliest <= start) and (
            self.latest is None or start <= self.latest
        )


EVERY_SLOT = SlotFilter()


def spread(offers: Sequence[Offer], crisis: bool) -> list[Offer]:
    """The offers ranked as the module says: priorities first, then rounds
    over counselor-days, then the earliest (ties by counselor id)."""
    rounds: dict[tuple[str, object], int] = {}
    ranked = []
    for offer in sorted(offers, key=lambda o: (o.start, o.counselor.counselor_id)):
        key = (offer.counselor.counselor_id, local_day(offer.start))
        rounds[key] = rounds.get(key, -1) + 1
        ranked.append((rounds[key], offer))
    ranked.sort(
        key=lambda item: (
            crisis and not item[1].within_deadline,
            not item[1].preferred,
            item[0],
            item[1].start,
            item[1].counselor.counselor_id,
        )
    )
    return [offer for _, offer in ranked]
