"""Configuration from environment variables, with the defaults documented here.

Every service reads the same variables; a service-specific database URL
(`EAP_QUOTA_DATABASE_URL`, ...) wins over the shared `DATABASE_URL`, so one
process can serve all three on one SQLite file while Kubernetes gives each
service its own database.

| variable | default | meaning |
|---|---|---|
| EAP_GRPC_ADDRESS | 127.0.0.1:50051 | where the gRPC server listens |
| EAP_DEFAULT_LANGUAGE | zh-TW | words for people unless accept-language (or LANG, --lang) says en |
| EAP_EDGE_ADDRESS | 127.0.0.1:8080 | where the Envoy edge listens for browsers (services/edge/) |
| EAP_EDGE_ALLOWED_ORIGINS | (none; dev: its own) | origins whose pages may call, comma-separated |
| EAP_EDGE_MAX_REQUEST_BYTES | 1048576 | larger requests are refused at the edge (413) |
| EAP_EDGE_TIMEOUT_SECONDS | 30 | the longest call through the edge |
| EAP_TLS_DIR | (none) | `tls.crt`, `tls.key`, `ca.crt`: mutual TLS, served and used (tls.py) |
| EAP_PROBE_ADDRESS | (none) | a plaintext port serving gRPC health only, for kubelet's probes |
| EAP_ALLOW_PLAINTEXT | false | `true`: jwt mode without EAP_TLS_DIR (a service mesh encrypts) |
| EAP_METRICS_PORT | 9464 | Prometheus endpoint port; 0 picks a free one; -1 turns it off |
| EAP_METRICS_TOKEN(_FILE) | (none) | if set, `/metrics` wants `Authorization: Bearer <token>` |
| EAP_TENANTS | default | the organisations served, comma-separated (tenancy.py) |
| DATABASE_URL | sqlite:///./var/eap.sqlite3 | SQLAlchemy URL; postgresql:// or sqlite:/// (*) |
| EAP_<SERVICE>_DATABASE_URL | DATABASE_URL | per-service override |
| REDIS_URL | (none) | redis://host:port/db; without it Redis features are off |
| DATABASE_URL_FILE, REDIS_URL_FILE | (none) | files holding those URLs (mounted Secrets) |
| EAP_AUTH_MODE | dev | `jwt`: every call needs a bearer JWT; `dev`: see auth.py |
| EAP_JWT_KEYS_DIR | var/dev-keys (dev mode) | trusted public keys, `<kid>.pem` each (a Secret) |
| EAP_JWT_JWKS_URL | (none) | the provider's JWKS, beside the PEM keys (https in jwt mode) |
| EAP_OIDC_ISSUER_URL | (none) | OIDC issuer whose discovery names the JWKS; default `iss` |
| EAP_JWT_MAX_LIFETIME_SECONDS | 3600 | longest a token may live, `iat` to `exp` |
| EAP_JWT_LEEWAY_SECONDS | 30 | clock skew allowed on `iat` and `nbf` (none on `exp`) |
| EAP_SERVICE_KEYS_DIR | (none) | this service's signing key, `service-<name>.key` (a Secret) |
| EAP_RATE_LIMIT_PER_SECOND | 20 (jwt), 0 (dev) | calls per caller per second, over 10 s; 0: none |
| EAP_JWT_ISSUER | eap (EAP_OIDC_ISSUER_URL if set) | required `iss` claim |
| EAP_JWT_AUDIENCE | eap-suite | required `aud` claim |
| EAP_LOG_LEVEL | INFO | Python logging level |
| EAP_MAX_CONCURRENT_RPCS | 0 | calls served at once; beyond, RESOURCE_EXHAUSTED; 0: no limit |
| EAP_SHUTDOWN_GRACE_SECONDS | 10 | how long in-flight calls may finish on SIGTERM |
| EAP_HOLD_TTL_SECONDS | 900 | default lifetime of a quota hold |
| EAP_HOLD_SWEEP_SECONDS | 2 | how often expired holds are given back |
| EAP_QUOTA_MAX_QUEUE_SECONDS | 1 | longest a Reserve may wait in the queue (RESOURCE_EXHAUSTED) |
| EAP_HEALTH_PROBE_SECONDS | 5 | how often stores are probed for the health status |
| EAP_DATABASE_POOL_SIZE | 5 | PostgreSQL connections per service process (twice that in bursts) |
| EAP_QUOTA_ADDRESS | (this server) | where the matcher reaches the quota service, host:port |
| EAP_CALENDAR_ADDRESS | (this server) | where the matcher reads the office calendar, host:port |
| EAP_MATCHER_ADDRESS | (this server) | where the calendar reads group candidates, host:port |
| EAP_SLOT_HOLD_SECONDS | 600 | how long a slot held for booking stays held |
| EAP_CRISIS_DEADLINE_HOURS | 72 | a crisis case's first session starts within this |
| EAP_OFFER_HOURS | 12 | how long a waitlist offer's slot is held (never into its last 2 h) |
| EAP_WAITLIST_SECONDS | 30 | how often each matcher offers freed slots to the waitlist; 0: never |
| EAP_DATA_KEYS_FILE | (none; dev: a public key) | Fernet keys for contacts, newest first |
| EAP_AUDIT_KEYS_FILE | (none; dev: a public key) | HMAC keys of the audit trails, newest first |
| EAP_RETENTION_DAYS | 1825 | case details are purged this long after their last session; 0: never |
| EAP_CONSISTENCY_SECONDS | 600 | how often sessions, charges and ledger are checked; 0: never |
| EAP_SMTP_URL(_FILE) | (none) | the notifier's mail server: smtp://host:port (notifier/smtp.py) |
| EAP_WEBHOOK_URL | (none) | the notifier's webhook, signed with EAP_WEBHOOK_SECRET_FILE's secret |
| EAP_WEBHOOK_SECRET_FILE | (none) | the webhook's HMAC-SHA256 secret (a Secret's file) |
| EAP_BOOKING_PAGE_URL | (none) | the booking page's address, in every notice |
| EAP_NOTIFIER_POLL_SECONDS | 5 | how often the notifier looks for notices due |
| EAP_REMINDER_HOURS | 24,2 | when reminders go out before a session, hours; empty: none |
| EAP_DAY_SHEET_HOUR | 7 | hour (0-23) counselors get their day's sessions; empty: never |
| EAP_DEV_CLOCK_FILE | (none) | dev mode only: the clock runs this many seconds ahead (tests) |

(*) `{tenant}` in a database URL stands for the tenant's name: each tenant
has its own database, and with more than one tenant every URL must say
where (SQLite's default is then `sqlite:///./var/eap-{tenant}.sqlite3`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from services.rules.sessions import CRISIS_DEADLINE_HOURS
from services.rules.waitlist import OFFER_HOURS
from services.runtime.errors import ConfigError
from services.runtime.i18n import LANGUAGES, negotiate
from services.runtime.jwks import check_url
from services.runtime.tenancy import DEFAULT_TENANT, valid_name

DEFAULT_DATABASE_URL = "sqlite:///./var/eap.sqlite3"
TENANT_DATABASE_URL = "sqlite:///./var/eap-{tenant}.sqlite3"
TENANT_PLACEHOLDER = "{tenant}"
DEV_KEYS_DIR = "var/dev-keys"  # where `eapctl token mint` keeps its development key


@dataclass(frozen=True)
class Settings:
    grpc_address: str = "127.0.0.1:50051"
    tls_dir: str | None = None
    probe_address: str | None = None
    default_language: str = "zh_TW"
    edge_address: str = "127.0.0.1:8080"
    edge_allowed_origins: tuple[str, ...] = ()
    edge_max_request_bytes: int = 1024 * 1024
    edge_timeout_seconds: float = 30.0
    metrics_port: int = 9464
    metrics_token: str | None = None
    tenants: tuple[str, ...] = (DEFAULT_TENANT,)
    database_url: str = DEFAULT_DATABASE_URL
    service_database_urls: Mapping[str, str] | None = None
    redis_url: str | None = None
    auth_mode: str = "dev"
    jwt_keys_dir: str | None = None
    service_keys_dir: str | None = None
    rate_limit_per_second: int = 0
    jwt_issuer: str = "eap"
    jwt_audience: str = "eap-suite"
    jwt_jwks_url: str | None = None
    oidc_issuer_url: str | None = None
    jwt_max_lifetime_seconds: int = 3600
    jwt_leeway_seconds: int = 30
    log_level: str = "INFO"
    shutdown_grace_seconds: float = 10.0
    max_concurrent_rpcs: int = 0
    hold_ttl_seconds: int = 900
    hold_sweep_seconds: float = 2.0
    quota_max_queue_seconds: float = 1.0
    health_probe_seconds: float = 5.0
    database_pool_size: int = 5
    quota_address: str | None = None
    calendar_address: str | None = None
    matcher_address: str | None = None
    slot_hold_seconds: int = 600
    crisis_deadline_hours: int = CRISIS_DEADLINE_HOURS
    retention_days: int = 1825
    consistency_seconds: float = 600.0
    offer_hours: float = OFFER_HOURS
    waitlist_seconds: float = 30.0
    smtp_url: str | None = None
    webhook_url: str | None = None
    webhook_secret_file: str | None = None
    booking_page_url: str = ""
    notifier_poll_seconds: float = 5.0
    reminder_hours: tuple[float, ...] = (24.0, 2.0)
    day_sheet_hour: int | None = 7
    data_keys_file: str | None = None
    audit_keys_file: str | None = None
    dev_clock_file: str | None = None

    @property
    def development(self) -> bool:
        return self.auth_mode == "dev"

    def database_url_for(self, service: str, tenant: str | None = None) -> str:
        """`service`'s database for `tenant` (the first tenant's by default)."""
        url = (self.service_database_urls or {}).get(service, self.database_url)
        return url.replace(TENANT_PLACEHOLDER, tenant or self.tenants[0])

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        mode = env.get("EAP_AUTH_MODE", "dev")
        if mode not in ("dev", "jwt"):
            raise ConfigError("EAP_AUTH_MODE", "must be `dev` or `jwt`")
        keys_dir = env.get("EAP_JWT_KEYS_DIR") or (DEV_KEYS_DIR if mode == "dev" else None)
        jwks_url = _url(env, "EAP_JWT_JWKS_URL", mode)
        issuer_url = _url(env, "EAP_OIDC_ISSUER_URL", mode)
        published = bool(jwks_url or issuer_url)
        if mode == "jwt" and not published and not (keys_dir and any(Path(keys_dir).glob("*.pem"))):
            raise ConfigError(
                "EAP_JWT_KEYS_DIR",
                "must name a directory of `<kid>.pem` keys when EAP_AUTH_MODE=jwt "
                "(or EAP_JWT_JWKS_URL or EAP_OIDC_ISSUER_URL the provider's keys)",
            )
        max_lifetime = _int(env, "EAP_JWT_MAX_LIFETIME_SECONDS", cls.jwt_max_lifetime_seconds)
        if max_lifetime < 60:
            # Our services renew their tokens a minute before they expire:
            # under a minute they would sign one for every call.
            raise ConfigError("EAP_JWT_MAX_LIFETIME_SECONDS", "must be 60 or more")
        tls_dir = env.get("EAP_TLS_DIR") or None
        plaintext_allowed = env.get("EAP_ALLOW_PLAINTEXT", "false").lower() in ("1", "true", "yes")
        if mode == "jwt" and tls_dir is None and not plaintext_allowed:
            # Tokens and contact details would cross the network in clear.
            raise ConfigError(
                "EAP_TLS_DIR",
                "is required when EAP_AUTH_MODE=jwt (or EAP_ALLOW_PLAINTEXT=true where a "
                "service mesh encrypts the traffic)",
            )
        leeway = _int(env, "EAP_JWT_LEEWAY_SECONDS", cls.jwt_leeway_seconds)
        if not 0 <= leeway <= 300:
            raise ConfigError("EAP_JWT_LEEWAY_SECONDS", "must be between 0 and 300")
        tenants = _tenants(env)
        database_url = _secret(env, "DATABASE_URL") or (
            DEFAULT_DATABASE_URL if len(tenants) == 1 else TENANT_DATABASE_URL
        )
        service_database_urls = {
            service: env[f"EAP_{service.upper()}_DATABASE_URL"]
            for service in ("quota", "matcher", "calendar")
            if env.get(f"EAP_{service.upper()}_DATABASE_URL")
        }
        if len(tenants) > 1:
            # Two tenants in one database would share its rows.
            for name, url in (
                ("DATABASE_URL", database_url),
                *((f"EAP_{s.upper()}_DATABASE_URL", u) for s, u in service_database_urls.items()),
            ):
                if TENANT_PLACEHOLDER not in url:
                    raise ConfigError(
                        name, "must contain {tenant} when EAP_TENANTS names more than one"
                    )
        return cls(
            grpc_address=env.get("EAP_GRPC_ADDRESS", cls.grpc_address),
            tls_dir=tls_dir,
            probe_address=env.get("EAP_PROBE_ADDRESS") or None,
            default_language=default_language(env),
            edge_address=env.get("EAP_EDGE_ADDRESS", cls.edge_address),
            edge_allowed_origins=tuple(
                o.strip() for o in env.get("EAP_EDGE_ALLOWED_ORIGINS", "").split(",") if o.strip()
            ),
            edge_max_request_bytes=_int(
                env, "EAP_EDGE_MAX_REQUEST_BYTES", cls.edge_max_request_bytes
            ),
            edge_timeout_seconds=_float(env, "EAP_EDGE_TIMEOUT_SECONDS", cls.edge_timeout_seconds),
            metrics_port=_int(env, "EAP_METRICS_PORT", cls.metrics_port),
            metrics_token=_secret(env, "EAP_METRICS_TOKEN"),
            tenants=tenants,
            database_url=database_url,
            service_database_urls=service_database_urls,
            redis_url=_secret(env, "REDIS_URL"),
            auth_mode=mode,
            jwt_keys_dir=keys_dir,
            service_keys_dir=env.get("EAP_SERVICE_KEYS_DIR") or None,
            rate_limit_per_second=_int(
                env, "EAP_RATE_LIMIT_PER_SECOND", 20 if mode == "jwt" else 0
            ),
            # An OIDC provider's tokens name it as their issuer.
            jwt_issuer=env.get("EAP_JWT_ISSUER", issuer_url or cls.jwt_issuer),
            jwt_audience=env.get("EAP_JWT_AUDIENCE", cls.jwt_audience),
            jwt_jwks_url=jwks_url,
            oidc_issuer_url=issuer_url,
            jwt_max_lifetime_seconds=max_lifetime,
            jwt_leeway_seconds=leeway,
            log_level=env.get("EAP_LOG_LEVEL", cls.log_level).upper(),
            shutdown_grace_seconds=_float(
                env, "EAP_SHUTDOWN_GRACE_SECONDS", cls.shutdown_grace_seconds
            ),
            max_concurrent_rpcs=_int(env, "EAP_MAX_CONCURRENT_RPCS", cls.max_concurrent_rpcs),
            hold_ttl_seconds=_int(env, "EAP_HOLD_TTL_SECONDS", cls.hold_ttl_seconds),
            hold_sweep_seconds=_float(env, "EAP_HOLD_SWEEP_SECONDS", cls.hold_sweep_seconds),
            quota_max_queue_seconds=_float(
                env, "EAP_QUOTA_MAX_QUEUE_SECONDS", cls.quota_max_queue_seconds
            ),
            health_probe_seconds=_float(env, "EAP_HEALTH_PROBE_SECONDS", cls.health_probe_seconds),
            database_pool_size=_int(env, "EAP_DATABASE_POOL_SIZE", cls.database_pool_size),
            quota_address=env.get("EAP_QUOTA_ADDRESS") or None,
            calendar_address=env.get("EAP_CALENDAR_ADDRESS") or None,
            matcher_address=env.get("EAP_MATCHER_ADDRESS") or None,
            slot_hold_seconds=_int(env, "EAP_SLOT_HOLD_SECONDS", cls.slot_hold_seconds),
            crisis_deadline_hours=_int(env, "EAP_CRISIS_DEADLINE_HOURS", cls.crisis_deadline_hours),
            retention_days=_int(env, "EAP_RETENTION_DAYS", cls.retention_days),
            consistency_seconds=_float(env, "EAP_CONSISTENCY_SECONDS", cls.consistency_seconds),
            offer_hours=_offer_hours(env),
            waitlist_seconds=_float(env, "EAP_WAITLIST_SECONDS", cls.waitlist_seconds),
            smtp_url=_secret(env, "EAP_SMTP_URL"),
            webhook_url=env.get("EAP_WEBHOOK_URL") or None,
            webhook_secret_file=env.get("EAP_WEBHOOK_SECRET_FILE") or None,
            booking_page_url=env.get("EAP_BOOKING_PAGE_URL", ""),
            notifier_poll_seconds=_float(
                env, "EAP_NOTIFIER_POLL_SECONDS", cls.notifier_poll_seconds
            ),
            reminder_hours=_hours(env, "EAP_REMINDER_HOURS", cls.reminder_hours),
            day_sheet_hour=_hour_of_day(env, "EAP_DAY_SHEET_HOUR", cls.day_sheet_hour),
            data_keys_file=env.get("EAP_DATA_KEYS_FILE") or None,
            audit_keys_file=env.get("EAP_AUDIT_KEYS_FILE") or None,
            dev_clock_file=_dev_clock_file(env, mode),
        )


def default_language(env: Mapping[str, str]) -> str:
    """EAP_DEFAULT_LANGUAGE as one of LANGUAGES (also a command-line tool's last resort)."""
    wanted = env.get("EAP_DEFAULT_LANGUAGE", "zh-TW")
    language = negotiate(wanted, "")
    if not language:
        raise ConfigError("EAP_DEFAULT_LANGUAGE", f"must be one of {', '.join(LANGUAGES)}")
    return language


def _tenants(env: Mapping[str, str]) -> tuple[str, ...]:
    names = tuple(n.strip() for n in env.get("EAP_TENANTS", DEFAULT_TENANT).split(",") if n.strip())
    if not names or len(set(names)) != len(names) or not all(map(valid_name, names)):
        raise ConfigError(
            "EAP_TENANTS",
            "must name one or more distinct tenants, comma-separated, each 1-40 "
            "lower-case letters, digits or '-'",
        )
    return names


def _dev_clock_file(env: Mapping[str, str], mode: str) -> str | None:
    path = env.get("EAP_DEV_CLOCK_FILE") or None
    if path and mode != "dev":
        raise ConfigError("EAP_DEV_CLOCK_FILE", "is for development mode only")
    return path


def _offer_hours(env: Mapping[str, str]) -> float:
    hours = _float(env, "EAP_OFFER_HOURS", OFFER_HOURS)
    if not 0.5 <= hours <= 24 * 7:
        raise ConfigError("EAP_OFFER_HOURS", "must be between 0.5 and 168 hours")
    return hours


MAX_REMINDER_HOURS = 24 * 14  # the earliest a reminder goes out: two weeks before


def _hours(env: Mapping[str, str], name: str, default: tuple[float, ...]) -> tuple[float, ...]:
    text = env.get(name)
    if text is None:
        return default
    try:
        hours = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(name, "hours, comma-separated, e.g. 24,2") from None
    if any(not 0 < h <= MAX_REMINDER_HOURS for h in hours):
        raise ConfigError(name, f"each between 0 and {MAX_REMINDER_HOURS} hours (two weeks)")
    return hours


def _secret(env: Mapping[str, str], name: str) -> str | None:
    """`name`'s value, or the content of the file `name`_FILE names (a
    mounted Secret, which keeps the value out of the environment)."""
    path = env.get(f"{name}_FILE")
    if path:
        try:
            return Path(path).read_text().strip() or None
        except OSError as error:
            raise ConfigError(f"{name}_FILE", f"cannot be read: {error.strerror}") from None
    return env.get(name) or None


def _url(env: Mapping[str, str], name: str, mode: str) -> str | None:
    url = env.get(name) or None
    return check_url(url, name, require_https=mode == "jwt") if url else None


def _hour_of_day(env: Mapping[str, str], name: str, default: int | None) -> int | None:
    text = env.get(name)
    if text is None:
        return default
    if not text.strip():
        return None
    hour = _int(env, name, 0)
    if not 0 <= hour <= 23:
        raise ConfigError(name, "an hour of the day, 0-23, or empty for never")
    return hour


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    try:
        return int(env.get(name, default))
    except ValueError:
        raise ConfigError(name, "must be a whole number") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    try:
        return float(env.get(name, default))
    except ValueError:
        raise ConfigError(name, "must be a number") from None
