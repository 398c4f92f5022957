"""The demo's notices: what its bookings told people. With EAP_SMTP_URL
(e.g. `smtp://127.0.0.1:1025`, a local test server), the notifier delivers
the confirmations, changes and cancellations the story made, each with its
calendar invitation; without it, they wait in the outbox, as they would for
a notifier with no channel."""

from __future__ import annotations

from services.notifier.service import NotifierService
from services.notifier.smtp import SmtpTarget
from services.runtime.config import Settings
from services.runtime.i18n import tr
from services.runtime.server import RunningServer


async def notices_step(server: RunningServer, settings: Settings) -> str:
    """Delivers what is due now; says what became of it."""
    (notifier,) = [s for s in server.services if isinstance(s, NotifierService)]
    if not settings.smtp_url and not settings.webhook_url:
        waiting = (await notifier.outbox.counts()).get("pending", 0)
        return tr(
            "{count} notices wait in the outbox: set EAP_SMTP_URL (e.g. "
            "smtp://127.0.0.1:1025) to have them delivered",
            count=waiting,
        )
    # The background loop has delivered some during the story: the outbox's
    # own counts say what became of all of them.
    counts = await notifier.deliver_due()
    sent, dead = counts.get("sent", 0), counts.get("dead", 0)
    mail = SmtpTarget.from_url(settings.smtp_url) if settings.smtp_url else None
    target = f"smtp://{mail.host}:{mail.port}" if mail else ""  # never a password
    return tr(
        "The notifier delivered {sent} messages to {target}; {dead} people had no "
        "address in the directory (dead notices, for operators)",
        sent=sent,
        target=target or settings.webhook_url or "",
        dead=dead,
    )
