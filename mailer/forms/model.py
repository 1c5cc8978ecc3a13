"""Sign-up forms as values: the form, its consent texts, what a visitor submitted.

Pure: no I/O. The checks here are the ones every door (CLI, tracker, API) shares, so a form
is refused for the same reason whoever creates it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit

from mailer.core.footer import SUPPORTED_LOCALES

SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
TEXT_MAX = 2000  # characters of one consent sentence
NAME_MAX = 200  # characters of the optional name field


class FormError(ValueError):
    """A form definition or an edit is invalid; the message names the field."""


def text_sha256(text: str) -> bytes:
    """SHA-256 of a consent text as stored (UTF-8): the hash the ledger's evidence cites."""
    return hashlib.sha256(text.encode("utf-8")).digest()


@dataclass(frozen=True, slots=True)
class ConsentText:
    """One version of the sentence shown beside the checkbox, in one language."""

    id: int
    locale: str
    version: int
    text: str
    sha256: bytes
    created_at: datetime | None = None

    @property
    def sha256_hex(self) -> str:
        return self.sha256.hex()


@dataclass(frozen=True, slots=True)
class Topic:
    """A topic a form offers, with its names per language."""

    id: int
    slug: str
    name: str
    names: Mapping[str, str] = field(default_factory=dict)

    def label(self, lang: str) -> str:
        return self.names.get(lang) or self.name or self.slug


@dataclass(frozen=True, slots=True)
class Form:
    """A sign-up form and the current consent text of each of its languages."""

    id: int
    slug: str
    source: str
    locales: tuple[str, ...]
    double_opt_in: bool
    topics: tuple[Topic, ...]
    texts: Mapping[str, ConsentText]  # locale -> its latest version
    origins: tuple[str, ...] = ()
    proof_of_work: bool = False
    welcome: str | None = None
    redirect_url: str | None = None
    disabled_at: datetime | None = None
    created_at: datetime | None = None

    @property
    def enabled(self) -> bool:
        return self.disabled_at is None

    def language(self, wanted: str | None) -> str:
        """The form's language closest to `wanted` (fr_CA → fr), else its first."""
        head = (wanted or "").lower().replace("_", "-").split("-")[0]
        return head if head in self.locales else self.locales[0]


def check_slug(slug: str) -> str:
    if not SLUG.fullmatch(slug):
        raise FormError(
            f"slug {slug!r}: lower-case letters, digits, '-' and '_', starting with a letter or"
            " digit, at most 63 characters"
        )
    return slug


def check_locales(locales: Sequence[str]) -> tuple[str, ...]:
    """The form's languages in order, each one the pages and footers are written in."""
    cleaned = tuple(dict.fromkeys(loc.strip().lower() for loc in locales if loc.strip()))
    if not cleaned:
        raise FormError("--locale: at least one language")
    for loc in cleaned:
        if loc not in SUPPORTED_LOCALES:
            raise FormError(
                f"--locale: {loc!r} is not one of {', '.join(SUPPORTED_LOCALES)}"
                " (the languages pages and footers are written in)"
            )
    return cleaned


def check_text(text: str, locale: str) -> str:
    """A consent sentence as it will be stored and hashed (surrounding blanks trimmed)."""
    cleaned = text.strip()
    if not cleaned:
        raise FormError(f"consent text ({locale}): empty")
    if len(cleaned) > TEXT_MAX:
        raise FormError(f"consent text ({locale}): longer than {TEXT_MAX} characters")
    if any(not ch.isprintable() and ch not in "\n" for ch in cleaned):
        raise FormError(f"consent text ({locale}): control characters")
    return cleaned


def check_origin(origin: str) -> str:
    """A site allowed to post the embedded form: scheme://host[:port], nothing else."""
    parts = urlsplit(origin.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise FormError(f"--origin {origin!r}: expected https://host[:port] (no path)")
    if parts.query or parts.fragment or "@" in parts.netloc:
        raise FormError(f"--origin {origin!r}: expected https://host[:port] (no path)")
    return f"{parts.scheme}://{parts.netloc.lower()}"


def check_redirect(url: str | None) -> str | None:
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise FormError(f"--redirect {url!r}: expected an http(s):// URL")
    return url


def clean_name(name: str | None) -> str | None:
    """The optional name field, trimmed, bounded, without control characters."""
    if not name:
        return None
    kept = "".join(ch for ch in name if ch.isprintable()).strip()
    return kept[:NAME_MAX] or None
