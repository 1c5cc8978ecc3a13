"""One cell's text to its value, or a RowError saying what is wrong with it.

Pure functions of the text, and the same few values repeat across a file
(dates, locales, topic lists, attribute values): caching them halves the cost
of a row.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, time
from functools import lru_cache

KINDS = {
    "express": "express",
    "implied_purchase": "implied_purchase",
    "purchase": "implied_purchase",
    "implied_contract": "implied_contract",
    "contract": "implied_contract",
    "implied_inquiry": "implied_inquiry",
    "inquiry": "implied_inquiry",
    "implied_publication": "implied_publication",
    "publication": "implied_publication",
}
CANONICAL_KINDS = frozenset(KINDS.values())
CHANNELS = frozenset({"email", "sms", "postal", "phone"})
_LOCALE = re.compile(r"[a-z]{2,3}(?:-[a-z]{2})?")
_TOPIC = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


class RowError(ValueError):
    """A line that cannot be imported; the message names the column."""


_NUMBER = re.compile(r"-?(0|[1-9][0-9]{0,14})(\.[0-9]{1,6})?")


@lru_cache(maxsize=65_536)
def attribute_json(text: str) -> str:
    """A CSV cell as a typed JSON value: plain decimal numbers and true/false are typed,
    so segments can compare `attributes.mileage >= 50000`; anything else (postal codes
    with leading zeros, dates, phone numbers) stays text."""
    if _NUMBER.fullmatch(text) or text in ("true", "false"):
        return text
    return json.dumps(text, ensure_ascii=False)


@lru_cache(maxsize=256)
def channel(text: str) -> str:
    channel = text.lower()
    if channel not in CHANNELS:
        raise RowError(
            f"channel: unknown channel {channel!r} (expected {', '.join(sorted(CHANNELS))})"
        )
    return channel


@lru_cache(maxsize=256)
def locale(text: str | None) -> str | None:
    if text is None:
        return None
    locale = text.lower().replace("_", "-")
    if not _LOCALE.fullmatch(locale):
        raise RowError(f"locale: {locale!r} is not a language tag like 'fr' or 'fr-ca'")
    return locale


@lru_cache(maxsize=1024)
def topics(text: str | None, known: frozenset[str]) -> list[str]:
    if not text:
        return []
    slugs = sorted({part.strip().lower() for part in text.split(";") if part.strip()})
    for slug in slugs:
        if not _TOPIC.fullmatch(slug) or slug not in known:
            raise RowError(f"topics: unknown topic {slug!r} (create it with `mailer topics add`)")
    return slugs


@lru_cache(maxsize=16_384)
def when(text: str | None, name: str) -> datetime | None:
    return consent_when(text, name)[0]


@lru_cache(maxsize=16_384)
def consent_when(text: str | None, name: str) -> tuple[datetime | None, bool]:
    """The instant a cell names, and whether it was a calendar date without a time.

    A date is kept as its midnight UTC: the ledger orders and ages every consent by one
    instant, and the flag tells the printers to show the date as given (migration 0007).
    """
    if text is None:
        return None, False
    try:
        day = date.fromisoformat(text)  # 2018-11-17, 20181117, 2018-W46-6: dates only
    except ValueError:
        pass
    else:
        return datetime.combine(day, time(), tzinfo=UTC), True
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise RowError(f"{name}: {text!r} is not a date (YYYY-MM-DD or ISO 8601)") from None
    return (parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)), False


def flag(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "yes", "1", "y"):
        return True
    if lowered in ("false", "no", "0", "n"):
        return False
    raise RowError(f"tracking: expected true or false, got {text!r}")
