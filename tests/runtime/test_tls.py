"""Encryption in transit (issue 14, acceptance 7): in jwt mode with TLS
configured, a plaintext client gets no answer, a client without a
certificate of the deployment's CA is refused, the services call each other
over mutual TLS, and a rotated certificate is served without a restart."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc

from eap.matcher.v1 import matcher_pb2 as mpb
from eap.matcher.v1 import matcher_pb2_grpc
from eap.quota.v1 import quota_pb2_grpc
from services.calendar.service import CalendarService
from services.matcher.service import MatcherService
from services.quota.service import QuotaService
from services.runtime import tls
from services.runtime.config import Settings
from services.runtime.server import RunningServer, start
from tests import stores
from tests.access import AsAdmin, Keys, bearer, make_keys, secured
from tests.conftest import MONDAY, at
from tests.county import counselor, enrol, seed
from tests.matcher.test_booking import case


@dataclass
class Encrypted:
    made: Keys
    server: RunningServer
    certs: Path  # tls.make_dev_ca's folder

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def channel(self, as_admin: bool = False) -> grpc.aio.Channel:
        """An operator's connection; with `as_admin`, its calls carry an
        administrator's token."""
        files = tls.TlsFiles(self.certs / "operator")
        admin = bearer(self.made.token("admin", "eap-admin"))
        return grpc.aio.secure_channel(
            self.address,
            files.channel_credentials(),
            interceptors=[AsAdmin(admin)] if as_admin else None,
        )


@pytest.fixture
async def encrypted(tmp_path: Path, march_2027: None) -> AsyncIterator[Encrypted]:
    made = make_keys(tmp_path / "keys")
    certs = tmp_path / "tls"
    tls.make_dev_ca(certs)
    url = stores.migrated_sqlite(tmp_path / "eap.db")
    await stores.sign_audit_heads(url, made.audit)
    settings = replace(
        secured(Settings(grpc_address="127.0.0.1:0", metrics_port=-1, database_url=url), made),
        tls_dir=str(certs / "quota"),  # one process serves all three: one certificate
        probe_address="127.0.0.1:0",
    )
    server = await start([QuotaService(), MatcherService(), CalendarService()], settings)
    yield Encrypted(made, server, certs)
    await server.stop(0)


async def _health(channel: grpc.aio.Channel) -> grpc.StatusCode:
    try:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_only_clients_with_a_certificate_of_the_ca_get_an_answer(
    encrypted: Encrypted, tmp_path: Path
) -> None:
    e = encrypted
    async with grpc.aio.insecure_channel(e.address) as plaintext:
        assert await _health(plaintext) == grpc.StatusCode.UNAVAILABLE
    ca = (e.certs / "ca" / "ca.crt").read_bytes()
    async with grpc.aio.secure_channel(e.address, grpc.ssl_channel_credentials(ca)) as anonymous:
        assert await _health(anonymous) == grpc.StatusCode.UNAVAILABLE
    # A certificate of another CA, however well made, is a stranger's.
    tls.make_dev_ca(tmp_path / "elsewhere")
    stranger = tls.TlsFiles(tmp_path / "elsewhere" / "operator").current()[0]
    wrong = grpc.ssl_channel_credentials(ca, stranger.key, stranger.cert)
    async with grpc.aio.secure_channel(e.address, wrong) as impostor:
        assert await _health(impostor) == grpc.StatusCode.UNAVAILABLE
    async with e.channel() as ours:
        assert await _health(ours) == grpc.StatusCode.OK
    # Kubelet's probes: health alone, in plaintext, on their own port.
    assert e.server.probes is not None
    async with grpc.aio.insecure_channel(f"127.0.0.1:{e.server.probes[1]}") as probe:
        assert await _health(probe) == grpc.StatusCode.OK
        listing = matcher_pb2_grpc.MatcherServiceStub(probe).ListCounselors(
            mpb.ListCounselorsRequest(), timeout=5
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await listing
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_the_services_call_each_other_over_mutual_tls(encrypted: Encrypted) -> None:
    """A booking: the matcher reserves and commits in the quota service,
    and reads the office calendar, each over mutual TLS."""
    e = encrypted
    async with e.channel(as_admin=True) as channel:
        matcher = matcher_pb2_grpc.MatcherServiceStub(channel)
        await seed(quota_pb2_grpc.QuotaServiceStub(channel))
        await enrol(matcher)
        await matcher.UpsertCounselor(mpb.UpsertCounselorRequest(counselor=counselor()))
        await matcher.SubmitCase(mpb.SubmitCaseRequest(case=case()))
        window = {"window_start": at(MONDAY, 0), "window_end": at(MONDAY + dt.timedelta(days=7), 0)}
        slot = (await matcher.FindSlots(mpb.FindSlotsRequest(case_id="K1", **window))).slots[0]
        held = await matcher.HoldSlot(
            mpb.HoldSlotRequest(case_id="K1", counselor_id=slot.counselor_id, start=slot.start),
        )
        booked = await matcher.ConfirmBooking(
            mpb.ConfirmBookingRequest(booking_id=held.booking.booking_id)
        )
        assert booked.booking.state == mpb.BOOKING_STATE_BOOKED


def _served_serial(e: Encrypted) -> int:
    """The serial number of the certificate a new connection is shown."""
    context = ssl.create_default_context(cafile=str(e.certs / "ca" / "ca.crt"))
    context.load_cert_chain(
        str(e.certs / "operator" / "tls.crt"), str(e.certs / "operator" / "tls.key")
    )
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", e.server.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as wrapped,
    ):
        der = wrapped.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


async def test_a_rotated_certificate_is_served_without_a_restart(encrypted: Encrypted) -> None:
    e = encrypted
    before = await asyncio.to_thread(_served_serial, e)
    async with e.channel() as kept:  # a connection opened before the rotation
        assert await _health(kept) == grpc.StatusCode.OK
        tls.issue(e.certs / "ca", e.certs / "quota", "eap-quota", ["localhost", "127.0.0.1"])
        after = await asyncio.to_thread(_served_serial, e)
        assert after != before
        assert await _health(kept) == grpc.StatusCode.OK  # still served
    async with e.channel() as fresh:
        assert await _health(fresh) == grpc.StatusCode.OK
    # The matcher's own client certificate rotated too: its next call to the
    # quota service opens a channel with the new one, and is answered.
    async with e.channel(as_admin=True) as channel:
        matcher = matcher_pb2_grpc.MatcherServiceStub(channel)
        await seed(quota_pb2_grpc.QuotaServiceStub(channel))
        await enrol(matcher)
        await matcher.UpsertCounselor(mpb.UpsertCounselorRequest(counselor=counselor()))
        await matcher.SubmitCase(mpb.SubmitCaseRequest(case=case()))
        window = {"window_start": at(MONDAY, 0), "window_end": at(MONDAY + dt.timedelta(days=7), 0)}
        found = await matcher.FindSlots(mpb.FindSlotsRequest(case_id="K1", **window))
        assert found.slots  # FindSlots read the entitlement left from the quota service
