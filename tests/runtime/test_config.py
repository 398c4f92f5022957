"""Settings from the environment: secrets may come from mounted files, a
bad value names its variable."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest

from services.runtime import clock
from services.runtime.config import Settings
from services.runtime.errors import ConfigError


def test_urls_and_key_from_mounted_secret_files(tmp_path: Path) -> None:
    (tmp_path / "db").write_text("postgresql://eap@db:5432/eap\n")
    (tmp_path / "redis").write_text("redis://redis:6379/0\n")
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "idp.pem").write_text("(a public key)\n")
    settings = Settings.from_env(
        {
            "DATABASE_URL_FILE": str(tmp_path / "db"),
            "DATABASE_URL": "ignored: the file wins",
            "REDIS_URL_FILE": str(tmp_path / "redis"),
            "EAP_AUTH_MODE": "jwt",
            "EAP_JWT_KEYS_DIR": str(tmp_path / "keys"),
            "EAP_TLS_DIR": "/var/run/secrets/eap-tls",
        }
    )
    assert settings.database_url == "postgresql://eap@db:5432/eap"
    assert settings.redis_url == "redis://redis:6379/0"
    assert settings.jwt_keys_dir == str(tmp_path / "keys")


def test_defaults_and_refusals(tmp_path: Path) -> None:
    settings = Settings.from_env({})
    assert settings.database_url.startswith("sqlite:///") and settings.redis_url is None
    with pytest.raises(ConfigError) as missing:
        Settings.from_env({"DATABASE_URL_FILE": str(tmp_path / "absent")})
    assert "DATABASE_URL_FILE" in str(missing.value)
    with pytest.raises(ConfigError) as keyless:
        Settings.from_env({"EAP_AUTH_MODE": "jwt"})
    assert "EAP_JWT_KEYS_DIR" in str(keyless.value)
    with pytest.raises(ConfigError) as empty:
        Settings.from_env({"EAP_AUTH_MODE": "jwt", "EAP_JWT_KEYS_DIR": str(tmp_path)})
    assert "EAP_JWT_KEYS_DIR" in str(empty.value)
    assert Settings.from_env({}).jwt_keys_dir == "var/dev-keys"  # where `token mint` keeps its key


def test_each_tenant_has_its_own_database() -> None:
    one = Settings.from_env({})
    assert one.tenants == ("default",)
    assert one.database_url_for("quota") == "sqlite:///./var/eap.sqlite3"
    two = Settings.from_env({"EAP_TENANTS": "pingtung, miaoli"})
    assert two.tenants == ("pingtung", "miaoli")
    assert two.database_url_for("matcher", "miaoli") == "sqlite:///./var/eap-miaoli.sqlite3"
    assert two.database_url_for("matcher") == "sqlite:///./var/eap-pingtung.sqlite3"
    shared = Settings.from_env(
        {
            "EAP_TENANTS": "pingtung,miaoli",
            "DATABASE_URL": "postgresql://eap@db/eap_{tenant}",
            "EAP_QUOTA_DATABASE_URL": "postgresql://eap@ledger/quota_{tenant}",
        }
    )
    assert shared.database_url_for("calendar", "miaoli") == "postgresql://eap@db/eap_miaoli"
    assert shared.database_url_for("quota", "miaoli") == "postgresql://eap@ledger/quota_miaoli"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"EAP_TENANTS": "pingtung,pingtung"}, "EAP_TENANTS"),
        ({"EAP_TENANTS": "Pingtung County"}, "EAP_TENANTS"),
        ({"EAP_TENANTS": " , "}, "EAP_TENANTS"),
        # Two tenants in one database would share its rows.
        ({"EAP_TENANTS": "a,b", "DATABASE_URL": "postgresql://db/eap"}, "DATABASE_URL"),
        (
            {"EAP_TENANTS": "a,b", "EAP_MATCHER_DATABASE_URL": "postgresql://db/m"},
            "EAP_MATCHER_DATABASE_URL",
        ),
    ],
)
def test_tenants_that_would_share_or_misname_are_refused(
    env: dict[str, str], variable: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env(env)
    assert refused.value.variable == variable


def test_jwt_mode_refuses_plaintext_unless_allowed(tmp_path: Path) -> None:
    (tmp_path / "idp.pem").write_text("(a public key)\n")
    jwt = {"EAP_AUTH_MODE": "jwt", "EAP_JWT_KEYS_DIR": str(tmp_path)}
    with pytest.raises(ConfigError) as refused:
        Settings.from_env(jwt)
    assert refused.value.variable == "EAP_TLS_DIR"
    meshed = Settings.from_env({**jwt, "EAP_ALLOW_PLAINTEXT": "true"})
    assert meshed.tls_dir is None
    served = Settings.from_env({**jwt, "EAP_TLS_DIR": "/tls", "EAP_PROBE_ADDRESS": ":50052"})
    assert (served.tls_dir, served.probe_address) == ("/tls", ":50052")
    assert Settings.from_env({}).tls_dir is None  # development: plaintext on the loopback


def test_a_followed_clock_file_is_for_development_only(tmp_path: Path) -> None:
    """EAP_DEV_CLOCK_FILE moves a replica's clock in tests; jwt mode refuses it."""
    (tmp_path / "idp.pem").write_text("(a public key)\n")
    jwt = {"EAP_AUTH_MODE": "jwt", "EAP_JWT_KEYS_DIR": str(tmp_path), "EAP_TLS_DIR": "/tls"}
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({**jwt, "EAP_DEV_CLOCK_FILE": str(tmp_path / "clock")})
    assert refused.value.variable == "EAP_DEV_CLOCK_FILE"
    path = tmp_path / "clock"
    assert Settings.from_env({"EAP_DEV_CLOCK_FILE": str(path)}).dev_clock_file == str(path)
    path.write_text(str(3 * 86_400))
    before = clock.now()
    clock.follow(str(path))
    try:
        assert clock.now() - before >= dt.timedelta(days=3)
        path.write_text("nonsense")  # half written: the offset read last stands
        time.sleep(clock.FOLLOW_SECONDS * 2)
        assert clock.now() - before >= dt.timedelta(days=3)
    finally:
        clock.follow(None)
    assert clock.now() - before < dt.timedelta(days=1)


def test_reminder_hours_and_the_notifiers_mail_server_from_a_file(tmp_path: Path) -> None:
    assert Settings.from_env({}).reminder_hours == (24.0, 2.0)
    assert Settings.from_env({"EAP_REMINDER_HOURS": "48, 1.5"}).reminder_hours == (48.0, 1.5)
    assert Settings.from_env({"EAP_REMINDER_HOURS": ""}).reminder_hours == ()  # none
    for wrong in ("tomorrow", "0", "400"):
        with pytest.raises(ConfigError, match="EAP_REMINDER_HOURS"):
            Settings.from_env({"EAP_REMINDER_HOURS": wrong})
    assert Settings.from_env({}).day_sheet_hour == 7
    assert Settings.from_env({"EAP_DAY_SHEET_HOUR": "18"}).day_sheet_hour == 18
    assert Settings.from_env({"EAP_DAY_SHEET_HOUR": ""}).day_sheet_hour is None  # never
    for wrong in ("noon", "24", "-1"):
        with pytest.raises(ConfigError, match="EAP_DAY_SHEET_HOUR"):
            Settings.from_env({"EAP_DAY_SHEET_HOUR": wrong})
    (tmp_path / "smtp-url").write_text("smtp://eap:secret@mail.example:587?starttls=true\n")
    settings = Settings.from_env({"EAP_SMTP_URL_FILE": str(tmp_path / "smtp-url")})
    assert settings.smtp_url == "smtp://eap:secret@mail.example:587?starttls=true"
