"""Notifiers as real `eapctl serve notifier` processes beside the matcher,
on PostgreSQL, against a real (and slow) SMTP server: two at once send each
message once; one killed mid-delivery and started again leaves no message
undelivered, and the one it may have sent as it died goes again as the same
message (one Message-ID, which mail programs show once)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope

from eap.matcher.v1 import matcher_pb2 as mpb
from eap.matcher.v1 import matcher_pb2_grpc
from eap.notifier.v1 import notifier_pb2 as npb
from eap.notifier.v1 import notifier_pb2_grpc
from eap.quota.v1 import quota_pb2_grpc
from services.matcher.notices.outbox import LEASE
from tests.conftest import MONDAY, at
from tests.county import counselor, enrol, seed
from tests.notifier.test_channels import Inbox
from tests.replicas import EAPCTL, Cluster, cluster, free_port

EMPLOYEES = [f"E{n}" for n in range(1, 13)]


@dataclass
class SlowInbox(Inbox):
    """An SMTP server that takes its time over each message, so that a
    notifier can be killed in the middle of a delivery."""

    seconds: float = 0.25

    async def handle_DATA(self, server: Any, session: Any, envelope: Envelope) -> str:
        await asyncio.sleep(self.seconds)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def mail() -> Iterator[tuple[SlowInbox, int]]:
    box, port = SlowInbox(), free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


def notifier(
    suite: Cluster, tmp_path: Path, port: int, n: int
) -> tuple[subprocess.Popen[bytes], str]:
    address = f"127.0.0.1:{free_port()}"
    env = {
        **suite.env,
        "EAP_GRPC_ADDRESS": address,
        "EAP_SMTP_URL": f"smtp://127.0.0.1:{port}?from=eap%40county.example",
        "EAP_NOTIFIER_POLL_SECONDS": "0.2",
    }
    with (tmp_path / f"notifier-{n}.log").open("wb") as sink:
        process = subprocess.Popen(
            [EAPCTL, "serve", "notifier"], env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    return process, address


async def book_all(address: str, employees: list[str]) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        matcher = matcher_pb2_grpc.MatcherServiceStub(channel)
        for n, employee in enumerate(employees):
            await matcher.SetContact(
                mpb.SetContactRequest(
                    employee_id=employee,
                    contact=mpb.Contact(name="某人", email=f"{employee}@county.example"),
                )
            )
            day = MONDAY + dt.timedelta(days=7 * (n // 3))  # three a week, one each
            submitted = await matcher.SubmitCase(
                mpb.SubmitCaseRequest(
                    case=mpb.Case(
                        case_id=f"K-{employee}",
                        employee_id=employee,
                        category=mpb.CATEGORY_PSYCHOLOGICAL,
                        kind=mpb.CASE_KIND_GENERAL,
                        sessions_wanted=1,
                        minutes=60,
                        modalities=[mpb.MODALITY_IN_PERSON],
                        availability=[mpb.TimeRange(start=at(day, 9), end=at(day, 17))],
                        time_off=mpb.TIME_OFF_OFFICIAL_LEAVE,
                    )
                )
            )
            slots = await matcher.FindSlots(
                mpb.FindSlotsRequest(
                    case_id=submitted.case.case_id,
                    window_start=at(day, 0),
                    window_end=at(day, 23),
                )
            )
            slot = slots.slots[n % 3]
            held = await matcher.HoldSlot(
                mpb.HoldSlotRequest(
                    case_id=submitted.case.case_id, counselor_id=slot.counselor_id, start=slot.start
                )
            )
            await matcher.ConfirmBooking(
                mpb.ConfirmBookingRequest(booking_id=held.booking.booking_id)
            )


def confirmations(box: SlowInbox) -> list[str]:
    return [str(m["Message-ID"]) for m in box.messages if _is_confirmation(m)]


def _is_confirmation(message: EmailMessage) -> bool:
    return any(p.get_content_type() == "text/calendar" for p in message.walk())


def wait_for(check: Any, seconds: float = 40.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.1)


def log_lines(folder: Path, more: list[Path]) -> list[str]:
    """Every line the notifiers (their logs in `folder`) and `more` logged."""
    return [
        line
        for path in [*folder.glob("notifier-*.log"), *more]
        for line in path.read_text(errors="replace").splitlines()
    ]


async def status(address: str) -> npb.GetOutboxStatusResponse:
    async with grpc.aio.insecure_channel(address) as channel:
        return await notifier_pb2_grpc.NotifierServiceStub(channel).GetOutboxStatus(
            npb.GetOutboxStatusRequest()
        )


async def test_notifiers_send_each_message_once_even_one_killed_mid_delivery(
    tmp_path: Path, mail: tuple[SlowInbox, int]
) -> None:
    box, port = mail
    env = {"EAP_DEV_CLOCK_FILE": str(tmp_path / "clock")}
    # The suite's clock: Monday 8 March 2027, 08:00 in Taipei, for every process.
    offset = at(MONDAY, 8).seconds - time.time()
    (tmp_path / "clock").write_text(str(offset))
    with cluster(tmp_path, ["all"], 1, "eap.matcher.v1.MatcherService", env) as suite:
        (replica,) = suite.replicas
        async with grpc.aio.insecure_channel(replica.address) as channel:
            await seed(quota_pb2_grpc.QuotaServiceStub(channel))
            matcher = matcher_pb2_grpc.MatcherServiceStub(channel)
            await enrol(matcher, EMPLOYEES)
            for n in (1, 2, 3):
                await matcher.UpsertCounselor(
                    mpb.UpsertCounselorRequest(counselor=counselor(f"C00{n}", provider="P1"))
                )
        first, _ = notifier(suite, tmp_path, port, 1)
        second, _ = notifier(suite, tmp_path, port, 2)
        try:
            # Two at once: each of six confirmations once.
            await book_all(replica.address, EMPLOYEES[:6])
            await asyncio.to_thread(wait_for, lambda: len(confirmations(box)) >= 6)
            await asyncio.sleep(1.0)  # time for a second copy, were there one
            assert len(confirmations(box)) == len(set(confirmations(box))) == 6
            # One alone, killed while the server takes a message, and started again.
            second.terminate()
            second.wait(20)
            await book_all(replica.address, EMPLOYEES[6:])
            await asyncio.to_thread(wait_for, lambda: len(box.messages) > 6)
            os.kill(first.pid, signal.SIGKILL)
            first.wait(10)
            # What it had taken is its own until its lease lapses: let the
            # clock of every process run on past it.
            (tmp_path / "clock").write_text(str(offset + LEASE.total_seconds() + 1))
            again, again_address = notifier(suite, tmp_path, port, 3)
            try:
                await asyncio.to_thread(wait_for, lambda: len(set(confirmations(box))) >= 12)
                seen = confirmations(box)
                assert len(set(seen)) == 12  # every one delivered
                # A copy sent again after the kill is the same message (one
                # Message-ID), which mail programs show once.
                assert len(seen) - len(set(seen)) <= 1
                after = await status(again_address)
                assert (after.dead, after.sending) == (0, 0) and after.sent >= 12
            finally:
                again.kill()
                again.wait(10)
        finally:
            for process in (first, second):
                if process.poll() is None:
                    process.kill()
                    process.wait(10)
        replica_logs = [r.log for r in suite.replicas]
    # Acceptance 4: no contact detail in any line any process logged (the
    # notifiers', the services'), though every message went to one.
    logged = log_lines(tmp_path, replica_logs)
    assert logged  # they did log
    assert not [line for line in logged if "@county.example" in line or "某人" in line]
