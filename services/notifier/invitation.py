"""A session as an iCalendar invitation (RFC 5546 iTIP), attached to the
e-mail that tells a person about it, so that their calendar application
adds the session, moves it when it changes and drops it when cancelled.

One UID per session for its whole life (`uid_for`), and a SEQUENCE that
grows with each change: METHOD:REQUEST adds or updates, METHOD:CANCEL with
the same UID removes. The words are as generic as the e-mail's (wording.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import icalendar

from services.rules.office_time import OFFICE_ZONE

PRODUCT = "-//EAP suite//notifier//EN"
UID_DOMAIN = "eap-suite"


class Method(StrEnum):
    REQUEST = "REQUEST"  # a new session, or one that changed
    CANCEL = "CANCEL"  # a session that will not take place


def uid_for(session_key: str) -> str:
    """A session's UID; `session_key` is what stays the same across its
    moves (the first booking's id)."""
    return f"{session_key}@{UID_DOMAIN}"


@dataclass(frozen=True)
class Invitation:
    uid: str
    sequence: int
    start: datetime
    minutes: int
    summary: str  # generic words only: see wording.py
    description: str
    organizer: str  # the programme's mailbox
    attendee: str  # the person's address, only inside the message
    location: str = ""  # a place, or a video link


def render(invitation: Invitation, method: Method, stamp: datetime) -> bytes:
    calendar = icalendar.Calendar()
    calendar.add("prodid", PRODUCT)
    calendar.add("version", "2.0")
    calendar.add("method", method.value)
    event = icalendar.Event()
    event.add("uid", invitation.uid)
    event.add("sequence", invitation.sequence)
    event.add("dtstamp", stamp)
    start = invitation.start.astimezone(OFFICE_ZONE)
    event.add("dtstart", start)
    event.add("dtend", start + timedelta(minutes=invitation.minutes))
    event.add("summary", invitation.summary)
    event.add("description", invitation.description)
    if invitation.location:
        event.add("location", invitation.location)
    event.add("organizer", f"mailto:{invitation.organizer}")
    attendee = icalendar.vCalAddress(f"mailto:{invitation.attendee}")
    attendee.params["ROLE"] = icalendar.vText("REQ-PARTICIPANT")
    attendee.params["PARTSTAT"] = icalendar.vText("ACCEPTED")
    event.add("attendee", attendee)
    event.add("status", "CANCELLED" if method is Method.CANCEL else "CONFIRMED")
    event.add("transp", "OPAQUE")
    calendar.add_component(event)
    calendar.add_missing_timezones()
    return bytes(calendar.to_ical())
