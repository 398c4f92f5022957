"""A survey link's token: the one credential of a survey, since its reader
does not sign in.

A token is `<tenant>.<secret>`: the tenant's name, so that a call without
a signed identity finds its tenant's database (the interceptor reads it,
policy.LINK_METHODS; tenancy.tenant_of_link), and 32 random bytes (secrets.token_urlsafe). The
database keeps only its sha256, for looking it up; the secret reaches the
notifier sealed with the data keys (registry/directory.py) in the notice's
`place`, so that nothing in the database, without the keys, gives the token
of a person's notice, nor so its hash. The link carries the token after a
`#`: a browser never sends the fragment, so no access log or Referer holds it.
"""

from __future__ import annotations

import hashlib
import secrets

from cryptography.fernet import InvalidToken, MultiFernet

from services.runtime.tenancy import LINK_SEPARATOR

SECRET_BYTES = 32


def new_secret() -> str:
    return secrets.token_urlsafe(SECRET_BYTES)


def token_of(tenant: str, secret: str) -> str:
    return f"{tenant}{LINK_SEPARATOR}{secret}"


def token_hash(token: str) -> str:
    """What the invitation is kept under: the tenant's name is hashed with
    the secret, so that a token moved to another tenant names nothing."""
    return hashlib.sha256(token.encode()).hexdigest()


def seal(secret: str, keys: MultiFernet) -> str:
    return keys.encrypt(secret.encode()).decode("ascii")


def unseal(sealed: str, keys: MultiFernet) -> str | None:
    """The secret, or None when no key at hand opens it."""
    try:
        return keys.decrypt(sealed.encode("ascii")).decode()
    except (InvalidToken, UnicodeError):
        return None


def link(page: str, token: str) -> str:
    return f"{page}#token={token}"
