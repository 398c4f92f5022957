"""Why an occurrence of a programme's activity stayed out of the plan: a
rule code and plain words, naming the activity and what stood in its way;
and the solver's verdict on the plan, in words.

The words are made in every language at once (i18n.in_every_language): a
plan is made by a background job and kept, before anyone knows who will
read it; GetPlan, the terminal and the HTML page each show their reader's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from services.runtime import dates
from services.runtime.i18n import LANGUAGES, N_, Words, in_every_language, pick, tr


@dataclass(frozen=True)
class Unplaced:
    activity: str
    occurrence: int
    rule: str  # a short code, e.g. ATTENDEE_BUSY
    words: Words  # by language

    @property
    def explanation(self) -> str:
        """The words in the reader's language (i18n.current_language())."""
        return pick(self.words)


# What stands in an occurrence's way, each naming one thing: `{named}`.
APART = N_("occurrences at least {named} days apart")
DOUBLE_BOOKED = N_("required attendees double-booked ({named})")
ROOM_TAKEN = N_("room {named} taken")
_SEPARATORS = {"zh_TW": "；", "en": "; "}
# CP-SAT's verdicts (planner.Plan.status), as a person reads them.
SOLVER_WORDS = {
    "OPTIMAL": N_("optimal"),
    "FEASIBLE": N_("feasible"),
    "INFEASIBLE": N_("infeasible"),
    "UNKNOWN": N_("no answer in time"),
    "MODEL_INVALID": N_("model invalid"),
}


def solver_words(status: str) -> str:
    """`OPTIMAL` in the reader's language: `optimal`, `最佳解`."""
    return tr(SOLVER_WORDS[status]) if status in SOLVER_WORDS else status.lower()


def window_closed(label: str, days: Sequence[date], windows: str, year: int) -> Words:
    return in_every_language(
        N_("{label}: its window ({window}) has no office day in {year}."),
        label=label,
        window=span(days) if days else windows,
        year=year,
    )


def too_long(label: str, minutes: int, hours: str) -> Words:
    return in_every_language(
        N_("{label}: {minutes} minutes do not fit in any block of office hours ({hours})."),
        label=label,
        minutes=minutes,
        hours=hours,
    )


def no_room(label: str, seats: int, largest: int) -> Words:
    return in_every_language(
        N_("{label}: needs a room for {seats} people; the largest room seats {largest}."),
        label=label,
        seats=seats,
        largest=largest,
    )


def busy(
    label: str, alone: Sequence[str], required: Sequence[str], minutes: int, days: Sequence[date]
) -> Words:
    """`alone`: the required attendees busy at every office hour by themselves."""
    if alone:
        return in_every_language(
            N_("{label}: required attendees {who} are busy at every office hour of {when}.")
            if len(alone) > 1
            else N_("{label}: required attendee {who} is busy at every office hour of {when}."),
            label=label,
            who=", ".join(alone),
            when=span(days),
        )
    return in_every_language(
        N_(
            "{label}: the required attendees ({who}) have no common free time of "
            "{minutes} minutes in office hours of {when}."
        ),
        label=label,
        who=", ".join(required),
        minutes=minutes,
        when=span(days),
    )


def not_in_time(label: str, most: int) -> Words:
    return in_every_language(
        N_(
            "{label}: no time was found for it within the time limit; the limit of "
            "{most} events per person a day may be what binds. Allow more time, or "
            "fewer events a day for its attendees."
        ),
        label=label,
        most=most,
    )


def clashes(
    label: str, days: Sequence[date], top: Sequence[tuple[str, str, str]], proven: bool
) -> Words:
    """`top`: the events in the way, as (their label, the rule: APART,
    DOUBLE_BOOKED or ROOM_TAKEN, what it names), the most frequent first."""
    listed = {
        language: _SEPARATORS[language].join(
            pick(
                in_every_language(
                    N_("{label} ({rule})"),
                    label=other,
                    rule=in_every_language(rule, named=named),
                ),
                language,
            )
            for other, rule, named in top
        )
        for language in LANGUAGES
    }
    words = in_every_language(
        N_("{label}: every free time in {when} clashes with other events: {clashes}."),
        label=label,
        when=span(days),
        clashes=listed,
    )
    if proven:
        return words
    return in_every_language(
        N_("{words} (The search stopped at its time limit: more time may place it.)"),
        words=words,
    )


def span(days: Sequence[date]) -> Words:
    return in_every_language(N_("{first} to {last}"), first=_day(min(days)), last=_day(max(days)))


def _day(day: date) -> Words:
    """A form's Minguo date in Chinese; the ISO date the programme file uses in English."""
    return {"zh_TW": dates.long_date(day, "zh_TW"), "en": f"{day:%Y-%m-%d}"}


def from_stored(stored: dict[str, object]) -> Unplaced:
    """One of a stored plan's `unplaced` entries (plans.py), written with
    its words by language, or, before them, with English `explanation` only."""
    words = stored.get("words")
    return Unplaced(
        str(stored["activity"]),
        int(str(stored["occurrence"])),
        str(stored["rule"]),
        dict(words) if isinstance(words, dict) else {"en": str(stored.get("explanation", ""))},
    )
