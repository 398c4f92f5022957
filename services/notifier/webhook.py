"""Signed webhooks, for the county's own messaging (SMS, an intranet app):
a JSON body POSTed to the county's URL, signed with a shared secret.

The signature header is `X-EAP-Signature: t=<unix seconds>,v1=<hex>`,
where the hex is HMAC-SHA256 over `<t>.<body>`: the timestamp inside the
signed text lets a receiver refuse a replay older than a few minutes
(`verify`'s tolerance). Each delivery also names its `X-EAP-Delivery` id,
the same on every retry, so a receiver can drop a message it already has.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
import urllib.error
import urllib.request

from services.notifier.smtp import DeliveryFailed

SIGNATURE_HEADER = "X-EAP-Signature"
DELIVERY_HEADER = "X-EAP-Delivery"
TOLERANCE_SECONDS = 300
TIMEOUT_SECONDS = 10.0


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify(
    secret: bytes,
    header: str,
    body: bytes,
    now: float | None = None,
    tolerance: int = TOLERANCE_SECONDS,
) -> bool:
    """What a receiver checks: the signature is ours and recent."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs((now if now is not None else time.time()) - timestamp) > tolerance:
        return False
    expected = signature(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, fields.get("v1", ""))


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as refusal:
        return int(refusal.code)


async def deliver(url: str, secret: bytes, delivery_id: str, body: bytes) -> None:
    """POSTs `body` signed; a 2xx is delivered, a 4xx other than 408/429
    is permanent, anything else is tried again later."""
    headers = {
        "content-type": "application/json",
        SIGNATURE_HEADER: signature(secret, int(time.time()), body),
        DELIVERY_HEADER: delivery_id,
    }
    try:
        status = await asyncio.to_thread(_post, url, body, headers)
    except OSError as trouble:
        raise DeliveryFailed(f"webhook unreachable ({type(trouble).__name__})") from None
    if 200 <= status < 300:
        return
    raise DeliveryFailed(f"webhook HTTP {status}", 400 <= status < 500 and status not in (408, 429))
