"""API keys as values: the printed key, its stored hash and prefix, its scopes.

A key is `mk_<prefix>_<secret>`: 8 hex characters to recognise it in lists and logs,
then 256 random bits. Only SHA-256 of the whole key is stored: with that much entropy a
slow password hash would add latency to every request and no protection.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

SCOPES = (
    "contacts:read",
    "contacts:write",
    # Erasure is irreversible: a key that pushes contacts (a DMS sync) does not get it.
    "contacts:erase",
    "consents:write",
    "campaigns:read",
    "campaigns:send",
    "transactional:send",
    "suppressions:write",
    "webhooks:manage",
)
_KEY = re.compile(r"mk_([0-9a-f]{8})_([A-Za-z0-9_-]{43})")


class ApiKeyError(ValueError):
    """A bad scope list or key name given by the operator; the message names it."""


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key just made: the text printed once, and what is stored."""

    text: str
    prefix: str
    secret_hash: bytes


def new_key() -> NewKey:
    """A fresh random key."""
    prefix = secrets.token_hex(4)
    text = f"mk_{prefix}_{secrets.token_urlsafe(32)}"
    return NewKey(text, prefix, key_hash(text))


def key_hash(text: str) -> bytes:
    return hashlib.sha256(text.encode("ascii", "replace")).digest()


def parse_key(text: str) -> str | None:
    """The prefix of a well-formed key, or None (then no database lookup is made)."""
    found = _KEY.fullmatch(text)
    return found.group(1) if found else None


def matches(text: str, stored_hash: bytes) -> bool:
    """Constant-time comparison of a presented key with the stored hash."""
    return hmac.compare_digest(key_hash(text), stored_hash)


def parse_scopes(text: str) -> list[str]:
    """`contacts:write,campaigns:read` as a checked, sorted list."""
    wanted = sorted({part.strip() for part in text.split(",") if part.strip()})
    if not wanted:
        raise ApiKeyError("--scopes: at least one scope is needed")
    unknown = [s for s in wanted if s not in SCOPES]
    if unknown:
        raise ApiKeyError(
            f"--scopes: unknown scope(s) {', '.join(unknown)} (known: {', '.join(SCOPES)})"
        )
    return wanted


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key (never its secret)."""

    id: int
    name: str
    prefix: str
    secret_hash: bytes
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    def state(self, now: datetime) -> str:
        """active, expired or revoked."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"
