"""Endpoints as the operator gives them: URL and event list checked, secret made.

One definition for `mailer webhooks add` and POST /api/v1/webhooks.
"""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime
from urllib.parse import urlsplit

from mailer.webhooks.dispatcher import EVENT_TYPES
from mailer.webhooks.store import Conn, Endpoint, WebhookStore


class WebhookInputError(ValueError):
    """A bad URL or event list; the message names the option."""


def check_url(url: str) -> str:
    """An http(s) URL with a host (plain http only to loopback, as a test receiver is)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError as exc:  # "http://[::1" (an unclosed IPv6 address), "…:99999/"
        raise WebhookInputError(f"url: {url!r} is not a URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookInputError(f"url: expected an http(s):// URL, got {url!r}")
    if not url.isprintable() or " " in url:
        # Every delivery attempt would fail on it (no HTTP request line holds it).
        raise WebhookInputError(f"url: {url!r} holds spaces or control characters")
    if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        # Events carry personal data (addresses): never in clear across a network.
        raise WebhookInputError(f"url: {url!r}: plain http only to a loopback receiver")
    return url


def check_events(text: str | list[str]) -> list[str]:
    """The event list (comma-separated or a list), each a known type."""
    wanted = text.split(",") if isinstance(text, str) else list(text)
    events = sorted({e.strip() for e in wanted if e.strip()})
    unknown = [e for e in events if e not in EVENT_TYPES]
    if not events or unknown:
        raise WebhookInputError(
            f"events: unknown {', '.join(unknown) or '(none given)'} "
            f"(known: {', '.join(EVENT_TYPES)})"
        )
    return events


def new_secret() -> str:
    """A Standard Webhooks signing secret: whsec_ and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def replay_window(since: str, until: str | None) -> tuple[datetime, datetime]:
    """`--since`/`--until` (ISO 8601, UTC if no zone; until defaults to now)."""
    try:
        start = _at(since)
        end = _at(until) if until else datetime.now(UTC)
    except ValueError as exc:
        raise WebhookInputError(f"--since/--until: {exc}") from None
    return start, end


def _at(text: str) -> datetime:
    parsed = datetime.fromisoformat(text.strip())
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


async def add_endpoint(
    store: WebhookStore, url: str, events: str | list[str], conn: Conn | None = None
) -> tuple[Endpoint, str]:
    """Check and register an endpoint; it and its signing secret (shown once). With `conn`,
    in its transaction (the caller's, with its operator-log line)."""
    checked_url, checked_events = check_url(url), check_events(events)
    secret = new_secret()
    return await store.endpoint_add(checked_url, checked_events, secret, conn), secret
