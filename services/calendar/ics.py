"""A plan as RFC 5545 iCalendar, for the calendars people already use.

Each event keeps its UID across re-plans and re-exports of the same
programme (`planner.event_uid`), so a calendar that imports the file again
updates the events in place instead of adding copies. Attendees are named
by the ids the programme gives them, as `urn:eap:person:<id>` addresses.
Titles are the programme's own; the words around them ("2 of 6", who must
attend) are in the current language (i18n.current_language(): the
caller's accept-language, or the command line's --lang).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import icalendar

from services.calendar.local_time import TIMEZONE, aware
from services.calendar.planner import Event, Plan
from services.runtime.i18n import tr

PRODUCT = "-//EAP suite//calendar service//EN"


@dataclass(frozen=True)
class Revision:
    """What changed about an event since it was planned: an ad hoc event's
    own title, how often it moved (RFC 5545 SEQUENCE), whether it is off."""

    title: str | None = None
    sequence: int = 0
    cancelled: bool = False


NO_REVISION = Revision()


def export_ics(
    plan: Plan,
    person: str | None = None,
    room: str | None = None,
    stamp: datetime | None = None,
    revisions: Mapping[str, Revision] | None = None,
) -> bytes:
    """The whole plan, or one person's events (required or optional), or
    one room's. `stamp` is each event's DTSTAMP (default: now); `revisions`
    by uid. A cancelled event stays in the file, STATUS:CANCELLED, so that
    calendars which imported it drop it."""
    titles = {a.id: a.title for a in plan.program.activities}
    optional = {a.id: a.optional for a in plan.program.activities}
    counts = {a.id: a.occurrences() for a in plan.program.activities}
    stamp = stamp or datetime.now(TIMEZONE)
    calendar = icalendar.Calendar()
    calendar.add("prodid", PRODUCT)
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("method", "PUBLISH")
    calendar.add("x-wr-calname", _name(plan, person, room))
    calendar.add("x-wr-timezone", str(TIMEZONE))
    for event in plan.events:
        if person is not None and person not in (
            *event.required,
            *optional.get(event.activity, event.optional_free),
        ):
            continue
        if room is not None and event.room != room:
            continue
        revision = (revisions or {}).get(event.uid, NO_REVISION)
        calendar.add_component(_vevent(event, titles, optional, counts, stamp, revision))
    calendar.add_missing_timezones()
    return bytes(calendar.to_ical())


def _vevent(
    event: Event,
    titles: dict[str, str],
    optional: dict[str, tuple[str, ...]],
    counts: dict[str, int],
    stamp: datetime,
    revision: Revision,
) -> icalendar.Event:
    vevent = icalendar.Event()
    vevent.add("uid", event.uid)
    vevent.add("dtstamp", stamp)
    vevent.add("dtstart", aware(event.start))
    vevent.add("dtend", aware(event.end))
    title = revision.title or titles.get(event.activity, event.activity)
    if counts.get(event.activity, 1) > 1:
        title = tr(
            "{title} ({occurrence} of {count})",
            title=title,
            occurrence=event.occurrence,
            count=counts[event.activity],
        )
    vevent.add("summary", title)
    if event.room is not None:
        vevent.add("location", event.room)
    vevent.add("categories", [event.activity])
    lines = [tr("Required: {people}", people=", ".join(event.required))]
    invited = optional.get(event.activity, event.optional_free)
    if invited:
        lines.append(tr("Optional: {people}", people=", ".join(invited)))
    vevent.add("description", "\n".join(lines))
    for person_id in event.required:
        vevent.add("attendee", _address(person_id, "REQ-PARTICIPANT"))
    for person_id in invited:
        vevent.add("attendee", _address(person_id, "OPT-PARTICIPANT"))
    vevent.add("sequence", revision.sequence)
    vevent.add("status", "CANCELLED" if revision.cancelled else "CONFIRMED")
    vevent.add("transp", "OPAQUE")
    return vevent


def _address(person_id: str, role: str) -> icalendar.vCalAddress:
    address = icalendar.vCalAddress(f"urn:eap:person:{person_id}")
    address.params["cn"] = icalendar.vText(person_id)
    address.params["role"] = icalendar.vText(role)
    return address


def _name(plan: Plan, person: str | None, room: str | None) -> str:
    if person is not None:
        return f"{plan.program.name}: {person}"
    if room is not None:
        return tr("{program}: room {room}", program=plan.program.name, room=room)
    return plan.program.name
