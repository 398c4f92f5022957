"""Token hygiene (issue 14, acceptance 6): `iat` required, `nbf` honoured, a
lifetime of at most an hour by default; and the identity provider's keys
taken from a JWKS URL or an OIDC discovery document, served here by a local
HTTP server, picked up and rotated without a restart."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from eap.quota.v1 import quota_pb2 as pb
from eap.quota.v1 import quota_pb2_grpc
from services.cli import token_cli
from services.quota.service import QuotaService
from services.runtime import jwks, keys
from services.runtime.auth import Authenticator, Role
from services.runtime.config import Settings
from services.runtime.errors import ConfigError, Unauthenticated
from services.runtime.server import RunningServer, start
from tests.access import IDP, Keys, bearer, make_keys, secured

DAY = 24 * 3600


def _settings(tmp_path: Path, **overrides: Any) -> Settings:
    base = Settings(
        grpc_address="127.0.0.1:0", metrics_port=-1, database_url=f"sqlite:///{tmp_path}/eap.db"
    )
    return replace(base, **overrides)


@pytest.fixture
def made(tmp_path: Path) -> Keys:
    return make_keys(tmp_path / "keys")


@pytest.fixture
def authenticator(tmp_path: Path, made: Keys) -> Authenticator:
    return Authenticator(secured(_settings(tmp_path), made))


def _refusal(authenticator: Authenticator, token: str) -> str:
    with pytest.raises(Unauthenticated) as refused:
        authenticator.identify(bearer(token))
    return refused.value.message


# -- lifetime, iat, nbf ---------------------------------------------------------------


def test_a_token_valid_for_30_days_is_refused(authenticator: Authenticator, made: Keys) -> None:
    now = int(time.time())
    month = made.token("admin", "a", iat=now, exp=now + 30 * DAY)
    message = _refusal(authenticator, month)
    assert "lifetime exceeds the maximum of 3600 s" in message
    assert month not in message and "admin" not in message  # nothing of the token
    # An hour is the most, and allowed.
    hour = made.token("admin", "a", iat=now, exp=now + 3600)
    assert authenticator.identify(bearer(hour)).subject == "a"
    # Back-dating `iat` does not make a long token shorter.
    old = made.token("admin", "a", iat=now - 29 * DAY, exp=now + 600)
    assert "lifetime" in _refusal(authenticator, old)


def test_the_maximum_lifetime_is_configurable(tmp_path: Path, made: Keys) -> None:
    settings = Settings.from_env({"EAP_JWT_MAX_LIFETIME_SECONDS": "43200"})
    assert settings.jwt_max_lifetime_seconds == 43200
    assert Settings.from_env({}).jwt_max_lifetime_seconds == 3600
    with pytest.raises(ConfigError, match="EAP_JWT_MAX_LIFETIME_SECONDS"):
        Settings.from_env({"EAP_JWT_MAX_LIFETIME_SECONDS": "0"})
    longer = Authenticator(secured(_settings(tmp_path, jwt_max_lifetime_seconds=43200), made))
    now = int(time.time())
    assert longer.identify(bearer(made.token("admin", "a", exp=now + 12 * 3600))).subject == "a"
    with pytest.raises(Unauthenticated):
        longer.identify(bearer(made.token("admin", "a", exp=now + 13 * 3600)))


def test_a_token_without_iat_is_refused(authenticator: Authenticator, made: Keys) -> None:
    claims = {"sub": "a", "role": "admin", "iss": "eap", "aud": "eap-suite"}
    no_iat = made.sign(IDP, {**claims, "exp": int(time.time()) + 300})
    assert _refusal(authenticator, no_iat) == "token lacks the `iat` claim"
    as_text = made.token("admin", "a", iat=str(int(time.time())))  # PyJWT would take "123"
    assert "`iat` must be a number" in _refusal(authenticator, as_text)


def test_nbf_and_iat_in_the_future_are_refused(authenticator: Authenticator, made: Keys) -> None:
    now = int(time.time())
    later = made.token("admin", "a", nbf=now + 120)
    assert "not valid yet" in _refusal(authenticator, later)
    issued_later = made.token("admin", "a", iat=now + 120, exp=now + 600)
    assert "not valid yet" in _refusal(authenticator, issued_later)
    # Clocks differ a little: within the leeway (30 s) both are fine.
    skewed = made.token("admin", "a", iat=now + 10, nbf=now + 10, exp=now + 600)
    assert authenticator.identify(bearer(skewed)).subject == "a"
    # But none on `exp`: a token never outlives its expiry.
    assert _refusal(authenticator, made.token("admin", "a", exp=now - 5)) == "token expired"


def test_minted_development_tokens_fit_the_maximum(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings.from_env({"EAP_JWT_KEYS_DIR": str(tmp_path / "dev-keys")})
    code = token_cli.main(
        ["mint", "--role", "employee", "--subject", "emp-1", "--minutes", "600"], settings
    )
    assert code == 0
    out, err = capsys.readouterr()
    claims = jwt.decode(out.strip(), options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 3600 and "cut to 60 minutes" in err
    assert Authenticator(settings).identify(bearer(out.strip())).role is Role.EMPLOYEE


# -- a local identity provider ---------------------------------------------------------


@dataclass
class Provider:
    """An identity provider on 127.0.0.1: a discovery document and a JWKS."""

    folder: Path
    kids: list[str] = field(default_factory=list)  # what the JWKS publishes
    hits: dict[str, int] = field(default_factory=dict)
    # Seconds the JWKS answer takes, a byte at a time: no single read waits
    # long enough for urllib's timeout, so only a bound on the wait helps.
    drip: float = 0.0
    released: threading.Event = field(default_factory=threading.Event)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def key(self, kid: str) -> None:
        keys.generate(self.folder, kid)

    def token(self, kid: str, role: str = "admin", subject: str = "a", **claims: Any) -> str:
        signing = keys.load_signing_key(self.folder / f"{kid}.key")
        now = int(time.time())
        payload = {
            "sub": subject,
            "role": role,
            "iss": "eap",
            "aud": "eap-suite",
            "iat": now,
            "exp": now + 300,
            **claims,
        }
        return jwt.encode(payload, signing.key, algorithm="ES256", headers={"kid": kid})

    def jwks(self) -> dict[str, Any]:
        published = []
        for kid in self.kids:
            public = keys.load_signing_key(self.folder / f"{kid}.key").key.public_key()
            assert isinstance(public, ec.EllipticCurvePublicKey)
            jwk = ECAlgorithm.to_jwk(public, as_dict=True)
            published.append({**jwk, "kid": kid, "use": "sig", "alg": "ES256"})
        return {"keys": published}


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[Provider]:
    idp = Provider(tmp_path / "idp")
    idp.folder.mkdir()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            idp.hits[self.path] = idp.hits.get(self.path, 0) + 1
            if self.path == "/.well-known/openid-configuration":
                body: dict[str, Any] = {"issuer": idp.url, "jwks_uri": f"{idp.url}/jwks.json"}
            elif self.path == "/jwks.json":
                body = idp.jwks()
            else:
                self.send_error(404)
                return
            data = json.dumps(body).encode()
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if idp.drip:
                    for i in range(len(data)):
                        self.wfile.write(data[i : i + 1])
                        self.wfile.flush()
                        idp.released.wait(idp.drip / len(data))
                else:
                    self.wfile.write(data)
            except OSError:
                pass  # the client gave up waiting (the slow provider's test)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    idp.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield idp
    finally:
        idp.released.set()
        server.shutdown()
        server.server_close()


async def _ping(server: RunningServer, token: str) -> grpc.StatusCode:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = quota_pb2_grpc.QuotaServiceStub(channel)
        try:
            await stub.Ping(pb.PingRequest(), metadata=bearer(token), timeout=10)
        except grpc.aio.AioRpcError as error:
            return error.code()
        return grpc.StatusCode.OK


@pytest.fixture
def no_cooldown(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refreshes as often as unknown keys ask (the cooldown has its own test)."""
    monkeypatch.setattr(jwks, "COOLDOWN_SECONDS", 0.0)


@pytest.mark.usefixtures("no_cooldown")
async def test_keys_from_a_jwks_url_are_picked_up_and_rotated_without_restart(
    tmp_path: Path, made: Keys, provider: Provider
) -> None:
    provider.key("idp-jwks-1")
    provider.key("idp-jwks-2")
    provider.kids = ["idp-jwks-1"]
    config = secured(_settings(tmp_path), made)
    server = await start(
        [QuotaService()], replace(config, jwt_jwks_url=f"{provider.url}/jwks.json")
    )
    try:
        assert await _ping(server, provider.token("idp-jwks-1")) is grpc.StatusCode.OK
        # The PEM directory is still trusted beside it.
        assert await _ping(server, made.token("admin", "a")) is grpc.StatusCode.OK
        fetched = provider.hits["/jwks.json"]
        assert await _ping(server, provider.token("idp-jwks-1")) is grpc.StatusCode.OK
        assert provider.hits["/jwks.json"] == fetched  # cached: no fetch per call
        # The provider rotates to a new key and retires the old one.
        provider.kids = ["idp-jwks-2"]
        assert await _ping(server, provider.token("idp-jwks-2")) is grpc.StatusCode.OK
        retired = await _ping(server, provider.token("idp-jwks-1"))
        assert retired is grpc.StatusCode.UNAUTHENTICATED
        # The lifetime holds for the provider's tokens too.
        month = provider.token("idp-jwks-2", exp=int(time.time()) + 30 * DAY)
        assert await _ping(server, month) is grpc.StatusCode.UNAUTHENTICATED
    finally:
        await server.stop(0)


@pytest.mark.usefixtures("no_cooldown")
async def test_keys_from_an_oidc_discovery_document(
    tmp_path: Path, made: Keys, provider: Provider
) -> None:
    provider.key("idp-oidc-1")
    provider.key("idp-oidc-2")
    provider.kids = ["idp-oidc-1"]
    env = {
        "EAP_AUTH_MODE": "jwt",
        "EAP_ALLOW_PLAINTEXT": "true",
        "EAP_OIDC_ISSUER_URL": provider.url,
        "EAP_JWT_KEYS_DIR": str(made.trusted),
    }
    from_env = Settings.from_env(env)
    assert from_env.jwt_issuer == provider.url  # the provider's tokens name it
    config = replace(
        secured(_settings(tmp_path), made),
        oidc_issuer_url=from_env.oidc_issuer_url,
        jwt_issuer=from_env.jwt_issuer,
    )
    server = await start([QuotaService()], config)
    try:
        token = provider.token("idp-oidc-1", iss=provider.url)
        assert await _ping(server, token) is grpc.StatusCode.OK
        assert provider.hits["/.well-known/openid-configuration"] >= 1
        provider.kids = ["idp-oidc-1", "idp-oidc-2"]
        newer = provider.token("idp-oidc-2", iss=provider.url)
        assert await _ping(server, newer) is grpc.StatusCode.OK
        other_issuer = provider.token("idp-oidc-2")  # iss "eap"
        assert await _ping(server, other_issuer) is grpc.StatusCode.UNAUTHENTICATED
    finally:
        await server.stop(0)


def test_a_discovery_document_of_another_issuer_is_not_trusted(provider: Provider) -> None:
    provider.key("idp-oidc-1")
    provider.kids = ["idp-oidc-1"]
    # Reached under another name than the one the document gives.
    source = jwks.JwksKeys(issuer_url=f"http://localhost:{provider.port}")
    with pytest.raises(jwks.JwksError, match="another issuer"):
        source.fetch()
    assert source.keys() == {}


async def test_the_provider_cannot_speak_for_a_service(
    tmp_path: Path, made: Keys, provider: Provider
) -> None:
    provider.key("service-quota")  # no such key among the PEM files
    provider.key("idp-jwks-1")
    provider.kids = ["service-quota", "idp-jwks-1"]
    authenticator = Authenticator(
        replace(secured(_settings(tmp_path), made), jwt_jwks_url=f"{provider.url}/jwks.json")
    )
    assert authenticator.jwks is not None
    await authenticator.jwks.refresh(wait=True)
    assert set(authenticator.jwks.keys()) == {"idp-jwks-1"}
    forged = provider.token("service-quota", role="service", subject="quota")
    with pytest.raises(Unauthenticated, match="unknown key"):
        await authenticator.authenticate(bearer(forged))


async def test_a_flood_of_unknown_key_ids_does_not_hammer_the_provider(
    tmp_path: Path, made: Keys, provider: Provider
) -> None:
    provider.key("idp-jwks-1")
    provider.kids = ["idp-jwks-1"]
    authenticator = Authenticator(
        replace(secured(_settings(tmp_path), made), jwt_jwks_url=f"{provider.url}/jwks.json")
    )
    good = provider.token("idp-jwks-1")
    assert (await authenticator.authenticate(bearer(good))).subject == "a"
    signing = keys.load_signing_key(provider.folder / "idp-jwks-1.key")
    now = int(time.time())
    claims = {"sub": "a", "role": "admin", "iss": "eap", "aud": "eap-suite"}
    for n in range(200):
        forged = jwt.encode(
            {**claims, "iat": now, "exp": now + 300},
            signing.key,
            algorithm="ES256",
            headers={"kid": f"made-up-{n}"},
        )
        with pytest.raises(Unauthenticated, match="unknown key"):
            await authenticator.authenticate(bearer(forged))
    assert provider.hits["/jwks.json"] == 1  # the first fetch started the cooldown
    assert (await authenticator.authenticate(bearer(good))).subject == "a"


async def test_a_slow_provider_stalls_nobody_else(
    tmp_path: Path, made: Keys, provider: Provider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fetch runs off the event loop and is waited for at most the
    timeout: calls with known keys go on meanwhile (measured from a thread
    of their own, which a blocked loop could not fool), and the call
    waiting is refused after the timeout, not after the provider's 5 s."""
    monkeypatch.setattr(jwks, "FETCH_TIMEOUT_SECONDS", 1.0)
    provider.key("idp-jwks-1")
    provider.kids = ["idp-jwks-1"]
    provider.drip = 5.0
    config = replace(secured(_settings(tmp_path), made), jwt_jwks_url=f"{provider.url}/jwks.json")
    server = await start([QuotaService()], config)
    known = bearer(made.token("admin", "a"))

    def ping_meanwhile() -> list[float]:
        took = []
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = quota_pb2_grpc.QuotaServiceStub(channel)
            stub.Ping(pb.PingRequest(), metadata=known, timeout=10)  # connected
            for _ in range(30):
                began = time.perf_counter()
                stub.Ping(pb.PingRequest(), metadata=known, timeout=10)
                took.append(time.perf_counter() - began)
                time.sleep(0.05)
        return took

    try:
        asked = time.perf_counter()
        waiting = asyncio.create_task(_ping(server, provider.token("idp-jwks-1")))
        answered: list[float] = []
        waiting.add_done_callback(lambda _: answered.append(time.perf_counter()))
        await asyncio.sleep(0.2)  # the fetch is under way
        took = await asyncio.to_thread(ping_meanwhile)
        assert await waiting is grpc.StatusCode.UNAUTHENTICATED
        waited = answered[0] - asked
        assert provider.hits["/jwks.json"] == 1
        assert max(took) < 0.5, took
        assert waited < 2.0, waited  # the timeout is 1 s
    finally:
        provider.released.set()
        await server.stop(0)


PLAIN = {"EAP_ALLOW_PLAINTEXT": "true"}  # these tests are about keys, not transport


def test_jwks_settings(tmp_path: Path) -> None:
    # jwt mode: the provider's keys alone suffice (service keys aside).
    alone = Settings.from_env(
        {"EAP_AUTH_MODE": "jwt", "EAP_JWT_JWKS_URL": "https://idp.example/jwks.json", **PLAIN}
    )
    assert alone.jwt_jwks_url == "https://idp.example/jwks.json" and alone.jwt_keys_dir is None
    with pytest.raises(ConfigError, match="EAP_JWT_JWKS_URL must be https"):
        Settings.from_env(
            {"EAP_AUTH_MODE": "jwt", "EAP_JWT_JWKS_URL": "http://idp.example/jwks.json"}
        )
    with pytest.raises(ConfigError, match="EAP_OIDC_ISSUER_URL must be an http"):
        Settings.from_env({"EAP_OIDC_ISSUER_URL": "file:///etc/passwd"})
    # On the loopback, and in development, plain http is allowed.
    local = Settings.from_env(
        {"EAP_AUTH_MODE": "jwt", "EAP_OIDC_ISSUER_URL": "http://127.0.0.1:8080/realms/eap", **PLAIN}
    )
    assert local.jwt_issuer == "http://127.0.0.1:8080/realms/eap"
    explicit = Settings.from_env(
        {"EAP_OIDC_ISSUER_URL": "http://idp.example", "EAP_JWT_ISSUER": "county"}
    )
    assert explicit.jwt_issuer == "county"
    with pytest.raises(ConfigError, match="EAP_JWT_KEYS_DIR"):
        Settings.from_env({"EAP_AUTH_MODE": "jwt"})
