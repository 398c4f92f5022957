"""A notification as an e-mail: the generic words (wording.py) as plain
text, and for a session the iCalendar invitation (invitation.py) both as
the calendar part mail programs act on and as an attachment.

The Message-ID comes from the outbox entry, so a message sent again after
a crash is the same message, which mail programs show once.
"""

from __future__ import annotations

from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime

from services.notifier.invitation import Invitation, Method, render
from services.notifier.wording import Words

MESSAGE_ID_DOMAIN = "eap-suite"


def message_id(delivery_id: str) -> str:
    return f"<{delivery_id}@{MESSAGE_ID_DOMAIN}>"


def compose_mail(
    delivery_id: str,
    to: str,
    words: Words,
    sent: datetime,
    invitation: Invitation | None = None,
    method: Method = Method.REQUEST,
) -> EmailMessage:
    message = EmailMessage()
    message["To"] = to
    message["Subject"] = words.subject
    message["Message-ID"] = message_id(delivery_id)
    message["Date"] = format_datetime(sent)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies
    message.set_content(words.text)
    if invitation is not None:
        ics = render(invitation, method, sent)
        message.add_alternative(
            ics, maintype="text", subtype="calendar", params={"method": method.value}
        )
        message.add_attachment(ics, maintype="application", subtype="ics", filename="invite.ics")
    return message
