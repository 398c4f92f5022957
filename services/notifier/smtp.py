"""E-mail over SMTP: where to send (`EAP_SMTP_URL`) and the sending itself.

The address says how to connect, as mail software usually takes it:

- `smtp://host:25` plain (a relay on the cluster's own network, or a test
  server); add `?starttls=true` to upgrade the connection with STARTTLS,
- `smtps://host:465` TLS from the first byte (RFC 8314),
- `user:password@` before the host to authenticate (percent-encoded),
- `?from=eap@county.gov.tw` the sender (default `eap-noreply@localhost`).

Python's smtplib speaks the protocol; it runs on a thread, so the event
loop never waits on a mail server. A refusal or an unreachable server
raises `DeliveryFailed`, whose words name the server's answer code only:
never an address, which is personal data.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import parse_qs, unquote, urlsplit

DEFAULT_SENDER = "eap-noreply@localhost"
TIMEOUT_SECONDS = 30.0


class DeliveryFailed(Exception):
    """A message not delivered this time; `permanent` when retrying cannot help."""

    def __init__(self, reason: str, permanent: bool = False) -> None:
        super().__init__(reason)
        self.permanent = permanent


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    implicit_tls: bool = False
    starttls: bool = False
    username: str = ""
    password: str = ""
    sender: str = DEFAULT_SENDER

    @classmethod
    def from_url(cls, url: str) -> SmtpTarget:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("EAP_SMTP_URL: smtp://host[:port] or smtps://host[:port]")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        implicit = parts.scheme == "smtps"
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if implicit else 25),
            implicit_tls=implicit,
            starttls=query.get("starttls", "").lower() in ("1", "true", "yes"),
            username=unquote(parts.username or ""),
            password=unquote(parts.password or ""),
            sender=query.get("from", DEFAULT_SENDER),
        )

    def __repr__(self) -> str:  # never the password
        return f"SmtpTarget({self.host}:{self.port}, tls={self.implicit_tls or self.starttls})"


def _send(target: SmtpTarget, message: EmailMessage, context: ssl.SSLContext | None) -> None:
    tls = context or ssl.create_default_context()
    client: smtplib.SMTP
    if target.implicit_tls:
        client = smtplib.SMTP_SSL(target.host, target.port, timeout=TIMEOUT_SECONDS, context=tls)
    else:
        client = smtplib.SMTP(target.host, target.port, timeout=TIMEOUT_SECONDS)
    with client:
        if target.starttls:
            client.starttls(context=tls)
        if target.username:
            client.login(target.username, target.password)
        client.send_message(message)


async def send(
    target: SmtpTarget, message: EmailMessage, context: ssl.SSLContext | None = None
) -> None:
    """Delivers `message` (its From is the target's sender if unset)."""
    if "From" not in message:
        message["From"] = target.sender
    try:
        await asyncio.to_thread(_send, target, message, context)
    except smtplib.SMTPResponseException as refusal:
        # 5xx: the server will never take it (a bad address, say); 4xx: later.
        raise DeliveryFailed(f"SMTP {refusal.smtp_code}", refusal.smtp_code >= 500) from None
    except smtplib.SMTPRecipientsRefused:
        raise DeliveryFailed("SMTP recipient refused", permanent=True) from None
    except (OSError, smtplib.SMTPException) as trouble:
        raise DeliveryFailed(f"SMTP unreachable ({type(trouble).__name__})") from None
