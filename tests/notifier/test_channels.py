"""The notifier's channels against real servers: aiosmtpd for e-mail
(plain, STARTTLS with a login, down), a local HTTP receiver for webhooks."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import ssl
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import icalendar
import pytest
import vobject
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword

from services.notifier import webhook
from services.notifier.invitation import Invitation, Method, uid_for
from services.notifier.mail import compose_mail, message_id
from services.notifier.smtp import DeliveryFailed, SmtpTarget, send
from services.notifier.wording import Words
from services.runtime import tls
from tests.replicas import free_port

TAIPEI = dt.timezone(dt.timedelta(hours=8))
START = dt.datetime(2027, 3, 9, 10, 0, tzinfo=TAIPEI)
SENT = dt.datetime(2027, 3, 1, 9, 0, tzinfo=TAIPEI)
WORDS = Words("您的預約已確認", "您的預約時間為 3月9日（二）10:00。\n")


@dataclass
class Inbox:
    messages: list[EmailMessage] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        return "250 OK"


def invitation(sequence: int = 0) -> Invitation:
    return Invitation(
        uid=uid_for("b-1"),
        sequence=sequence,
        start=START,
        minutes=60,
        summary="預約",
        description="請準時出席。",
        organizer="eap@county.example",
        attendee="person@county.example",
        location="Pingtung office 3F",
    )


def calendar_part(message: EmailMessage) -> bytes:
    (part,) = [p for p in message.walk() if p.get_content_type() == "text/calendar"]
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload


async def test_a_confirmation_carries_an_invitation_and_a_cancellation_cancels_it(
    inbox: tuple[Inbox, int],
) -> None:
    box, port = inbox
    target = SmtpTarget.from_url(f"smtp://127.0.0.1:{port}?from=eap%40county.example")
    await send(target, compose_mail("d-1", "person@county.example", WORDS, SENT, invitation()))
    cancelled = compose_mail(
        "d-2", "person@county.example", WORDS, SENT, invitation(1), Method.CANCEL
    )
    await send(target, cancelled)
    first, second = box.messages
    assert first["Subject"] == "您的預約已確認" and first["From"] == "eap@county.example"
    assert first["Message-ID"] == message_id("d-1")
    request = icalendar.Calendar.from_ical(calendar_part(first))
    cancel = icalendar.Calendar.from_ical(calendar_part(second))
    assert (str(request["method"]), str(cancel["method"])) == ("REQUEST", "CANCEL")
    (event,) = request.walk("VEVENT")
    (gone,) = cancel.walk("VEVENT")
    assert str(event["uid"]) == str(gone["uid"]) == "b-1@eap-suite"
    assert (int(event["sequence"]), int(gone["sequence"])) == (0, 1)
    assert str(gone["status"]) == "CANCELLED"
    # A second, independent parser reads the same session, in Taipei time.
    parsed = vobject.readOne(calendar_part(first).decode())
    assert parsed.vevent.dtstart.value == START
    assert parsed.vevent.dtend.value - parsed.vevent.dtstart.value == dt.timedelta(hours=1)
    attachments = [p.get_filename() for p in first.iter_attachments()]
    assert attachments == ["invite.ics"]


async def test_starttls_and_a_login_as_the_address_asks(tmp_path: Path) -> None:
    tls.make_ca(tmp_path / "ca")
    tls.issue(tmp_path / "ca", tmp_path / "smtp", "localhost", ["localhost", "127.0.0.1"])
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(tmp_path / "smtp" / "tls.crt", tmp_path / "smtp" / "tls.key")
    logins: list[tuple[bytes, bytes]] = []

    def authenticator(
        server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        logins.append((data.login, data.password))
        return AuthResult(success=data.password == b"s3cret/!", handled=False)

    box = Inbox()
    port = free_port()
    controller = Controller(
        box,
        hostname="127.0.0.1",
        port=port,
        tls_context=server_tls,
        require_starttls=True,
        authenticator=authenticator,
        auth_require_tls=True,
    )
    controller.start()
    try:
        client_tls = ssl.create_default_context(cafile=str(tmp_path / "ca" / "ca.crt"))
        good = SmtpTarget.from_url(f"smtp://eap:s3cret%2F%21@localhost:{port}?starttls=true")
        await send(good, compose_mail("d-1", "p@county.example", WORDS, SENT), client_tls)
        assert len(box.messages) == 1 and logins == [(b"eap", b"s3cret/!")]
        assert "s3cret" not in repr(good)
        wrong = SmtpTarget.from_url(f"smtp://eap:guess@localhost:{port}?starttls=true")
        with pytest.raises(DeliveryFailed) as refused:
            await send(wrong, compose_mail("d-2", "p@county.example", WORDS, SENT), client_tls)
        assert refused.value.permanent and "guess" not in str(refused.value)
    finally:
        controller.stop()


async def test_a_server_that_is_down_is_a_failure_to_try_again() -> None:
    with pytest.raises(DeliveryFailed) as down:
        await send(SmtpTarget.from_url("smtp://127.0.0.1:9"), compose_mail("d", "p@x", WORDS, SENT))
    assert not down.value.permanent


def test_an_address_that_is_no_smtp_url_is_refused() -> None:
    with pytest.raises(ValueError):
        SmtpTarget.from_url("http://mail.example")
    assert SmtpTarget.from_url("smtps://mail.example").port == 465


@dataclass
class Receiver:
    url: str
    got: list[tuple[dict[str, str], bytes]]
    answers: list[int]


async def test_webhooks_are_signed_and_their_signatures_verify(receiver: Receiver) -> None:
    secret = b"county-secret"
    body = json.dumps({"kind": "confirmed", "start": START.isoformat()}).encode()
    await webhook.deliver(receiver.url, secret, "d-1", body)
    ((headers, received),) = receiver.got
    assert received == body and headers["x-eap-delivery"] == "d-1"
    signed = headers["x-eap-signature"]
    assert webhook.verify(secret, signed, body)
    assert not webhook.verify(secret, signed, body + b" ")  # tampered
    assert not webhook.verify(b"another", signed, body)  # someone else's secret
    assert not webhook.verify(secret, signed, body, now=time.time() + 3600)  # a replay
    assert not webhook.verify(secret, "v1=nothing", body)


async def test_a_webhook_refused_for_good_or_for_now(receiver: Receiver) -> None:
    receiver.answers.extend([503, 400])
    with pytest.raises(DeliveryFailed) as later:
        await webhook.deliver(receiver.url, b"s", "d-1", b"{}")
    assert not later.value.permanent
    with pytest.raises(DeliveryFailed) as never:
        await webhook.deliver(receiver.url, b"s", "d-1", b"{}")
    assert never.value.permanent
