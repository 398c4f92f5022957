"""Encryption in transit: every gRPC port serves TLS with the certificate in
EAP_TLS_DIR, and asks every client for a certificate of the deployment's CA
(mutual TLS), so that tokens and contact details never cross the cluster in
clear and only our own pods (and the Envoy edge) can open a connection.

EAP_TLS_DIR holds what a cert-manager Certificate's Secret holds:
`tls.crt` (the certificate chain), `tls.key` (its key) and `ca.crt` (the
deployment's CA, which signs every service's, the edge's and operators'
certificates). The files are read again whenever they change: a new
connection after a rotation gets the new certificate, without a restart.
The same files are this service's client certificate when it calls another.

Kubelet's gRPC probes speak plaintext only, so with TLS on, health (and
nothing else) is also served on EAP_PROBE_ADDRESS. Plaintext on the main
port is for development mode; in `jwt` mode the configuration refuses it
unless EAP_ALLOW_PLAINTEXT says a service mesh encrypts the traffic
(config.py).

`eapctl tls dev-ca DIR` makes a development CA and a certificate for each
service (see `make_dev_ca`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.runtime.errors import ConfigError

log = logging.getLogger("eap.tls")

CERT, KEY, CA = "tls.crt", "tls.key", "ca.crt"
TLS_DIR_VARIABLE = "EAP_TLS_DIR"
CLIENT_RECHECK_SECONDS = 1.0  # how stale a client's view of its certificate may be
RETIRE_GRACE_SECONDS = 30.0  # calls on a channel replaced by a rotation may finish


@dataclass(frozen=True)
class _Material:
    cert: bytes
    key: bytes
    ca: bytes
    stamp: tuple[float, ...]  # the files' modification times when read


class TlsFiles:
    """The certificate, key and CA of one directory, read again when a file changes."""

    def __init__(self, folder: str | Path) -> None:
        self._folder = Path(folder)
        self._lock = threading.Lock()
        self._checked_at = time.monotonic()
        self._material = self._read()

    def _paths(self) -> tuple[Path, Path, Path]:
        return (self._folder / CERT, self._folder / KEY, self._folder / CA)

    def _stamp(self) -> tuple[float, ...]:
        return tuple(p.stat().st_mtime_ns for p in self._paths())

    def _read(self) -> _Material:
        try:
            stamp = self._stamp()
            cert, key, ca = (p.read_bytes() for p in self._paths())
        except OSError:
            raise ConfigError(
                TLS_DIR_VARIABLE, f"must hold {CERT}, {KEY} and {CA} (a mounted Secret)"
            ) from None
        return _Material(cert, key, ca, stamp)

    def current(self, max_age: float = 0.0) -> tuple[_Material, bool]:
        """The files as they are now (as they were at most `max_age` seconds
        ago), and whether they changed since last read. A rotation half
        written (a file missing) keeps the last good ones."""
        with self._lock:
            now = time.monotonic()
            if now - self._checked_at < max_age:
                return self._material, False
            self._checked_at = now
            try:
                if self._stamp() == self._material.stamp:
                    return self._material, False
                self._material = self._read()
            except (OSError, ConfigError):
                log.warning("TLS files unreadable; serving the previous certificate")
                return self._material, False
            log.info("TLS certificate reloaded")
            return self._material, True

    def server_credentials(self) -> grpc.ServerCredentials:
        """TLS that asks every client for a certificate of the CA, and
        takes up rotated files at the next handshake."""
        material, _ = self.current()

        def configuration(m: _Material) -> grpc.ServerCertificateConfiguration:
            return grpc.ssl_server_certificate_configuration([(m.key, m.cert)], m.ca)

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            fresh, changed = self.current()
            return configuration(fresh) if changed else None

        return grpc.dynamic_ssl_server_credentials(
            configuration(material),
            fetch,  # type: ignore[arg-type]  # None keeps the current one (grpc's docs)
            require_client_authentication=True,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        material, _ = self.current()
        return grpc.ssl_channel_credentials(material.ca, material.key, material.cert)

    def changed_since(self, stamp: tuple[float, ...], max_age: float = 0.0) -> bool:
        return self.current(max_age)[0].stamp != stamp

    @property
    def stamp(self) -> tuple[float, ...]:
        return self.current()[0].stamp


class Channels:
    """Channels to our other services: mutual TLS with this service's
    certificate where TLS is configured, plaintext otherwise. Each channel
    remembers the certificate it was opened with, so that every one of them
    is made again once the certificate rotates."""

    def __init__(self, tls_dir: str | None) -> None:
        self._files = TlsFiles(tls_dir) if tls_dir else None
        self._opened_with: dict[grpc.aio.Channel, tuple[float, ...]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def open(self, address: str) -> grpc.aio.Channel:
        if self._files is None:
            return grpc.aio.insecure_channel(address)
        stamp = self._files.stamp
        channel = grpc.aio.secure_channel(address, self._files.channel_credentials())
        self._opened_with[channel] = stamp
        return channel

    def stale(self, channel: grpc.aio.Channel) -> bool:
        """True when the certificate rotated since `channel` was opened."""
        if self._files is None:
            return False
        # Asked before every call to another service: the files are looked
        # at once a second at most, not three stat() calls a call.
        stamp = self._opened_with.get(channel, ())
        return self._files.changed_since(stamp, CLIENT_RECHECK_SECONDS)

    def retire(self, channel: grpc.aio.Channel) -> None:
        """Closes a replaced channel once its calls in flight are done."""
        self._opened_with.pop(channel, None)
        task = asyncio.get_running_loop().create_task(channel.close(RETIRE_GRACE_SECONDS))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)


def client_channel(address: str) -> grpc.aio.Channel:
    """A channel for a command-line tool: TLS with the certificate in
    EAP_TLS_DIR where it is set (an operator's, issued by the CA)."""
    return Channels(os.environ.get(TLS_DIR_VARIABLE) or None).open(address)


# -- a development CA -----------------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "EAP suite (development)"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)


def make_ca(folder: Path, days: int = 365) -> None:
    """A CA key and certificate, `ca.key` and `ca.crt` in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("EAP development CA"))
        .issuer_name(_name("EAP development CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write_private(folder / "ca.key", _pem_key(key))
    (folder / CA).write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def issue(
    ca_folder: Path, out: Path, common_name: str, names: Sequence[str], days: int = 90
) -> None:
    """A certificate for `names` (DNS names or IP addresses), signed by the
    CA in `ca_folder`, good for server and client use: `tls.crt`, `tls.key`
    and a copy of `ca.crt` in `out`, as cert-manager lays out a Secret."""
    ca_key = serialization.load_pem_private_key((ca_folder / "ca.key").read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate((ca_folder / CA).read_bytes())
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ConfigError("ca.key", "must be an EC key made by `eapctl tls dev-ca`")
    key = ec.generate_private_key(ec.SECP256R1())
    alternatives: list[x509.GeneralName] = []
    for name in names:
        try:
            alternatives.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alternatives.append(x509.DNSName(name))
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    out.mkdir(parents=True, exist_ok=True)
    # Key first, certificate last: a reader that sees the new certificate
    # finds its key already there.
    _write_private(out / KEY, _pem_key(key))
    (out / CA).write_bytes((ca_folder / CA).read_bytes())
    (out / CERT).write_bytes(cert.public_bytes(serialization.Encoding.PEM))


SERVICE_NAMES = ("quota", "matcher", "calendar")


def make_dev_ca(folder: Path, namespace: str = "eap") -> list[Path]:
    """A development CA in `folder/ca`, and certificates for each service
    (its Kubernetes names, localhost and 127.0.0.1), the Envoy edge and an
    operator: `folder/<name>/` each. Never for production: use
    cert-manager (deploy/k8s/README.md)."""
    make_ca(folder / "ca")
    made = []
    for name in (*SERVICE_NAMES, "edge", "operator"):
        names = [
            name,
            f"{name}.{namespace}",
            f"{name}.{namespace}.svc",
            f"{name}.{namespace}.svc.cluster.local",
            "localhost",
            "127.0.0.1",
        ]
        issue(folder / "ca", folder / name, f"eap-{name}", names)
        made.append(folder / name)
    return made
