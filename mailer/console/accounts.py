"""Operator accounts: roles, password hashing, session and link tokens (pure, no I/O)."""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# argon2id with argon2-cffi's defaults (RFC 9106's second recommended option: t=3, 64 MiB),
# as OWASP's password storage sheet advises; the parameters live in each hash, so raising
# them later re-hashes on the next login (needs_rehash).
_HASHER = PasswordHasher()
# Verified when the address is unknown, so a wrong address costs the same time as a wrong
# password and response times do not reveal who has an account.
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))
MIN_PASSWORD_LENGTH = 12  # NIST SP 800-63B s.3.1.1.2 asks at least 8; we ask more


class Role(enum.IntEnum):
    """Ordered: each role may do everything the ones below it may."""

    VIEWER = 1  # reads
    SENDER = 2  # creates, checks, launches, pauses, resumes, cancels campaigns
    ADMIN = 3  # manages operators, keys, webhooks; erases contacts

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.upper()]
        except KeyError:
            raise ValueError(f"unknown role {text!r} (viewer, sender or admin)") from None

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Operator:
    """Who is logged in, as the session lookup returns it."""

    id: int
    email: str
    role: Role
    locale: str
    csrf_token: str
    logged_in_at: datetime

    def may(self, needed: Role) -> bool:
        return self.role >= needed


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def password_problem(password: str, again: str | None = None) -> str | None:
    """Why a new password is refused (in English; the pages translate the key), or None."""
    if again is not None and password != again:
        return "mismatch"
    if len(password) < MIN_PASSWORD_LENGTH:
        return "too_short"
    return None


def verify_password(stored: str | None, password: str) -> bool:
    """True when `password` matches; a missing or broken hash costs the same time and fails."""
    try:
        return _HASHER.verify(stored or _DUMMY_HASH, password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


def new_token() -> str:
    """A 256-bit random token for a session cookie, a CSRF field or a set-password link."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> bytes:
    """What the database keeps of a token: a stolen table opens no session (OWASP)."""
    return hashlib.sha256(token.encode()).digest()


def same_token(expected: str, given: str | None) -> bool:
    """Constant-time comparison of a CSRF token."""
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())
