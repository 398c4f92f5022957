"""Settings from the environment: secrets may come from mounted files, a
bad value names its variable."""

from __future__ import annotations

from pathlib import Path

import pytest

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
