"""Creating, revoking and expiring API keys: one implementation under `mailer api-keys` and
the console's keys page, each change in the operator log (in the change's transaction for
revoke and expire, as the API's own writes are)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from mailer.api.keys import ApiKey, ApiKeyError, parse_scopes
from mailer.api.store import ApiStore
from mailer.compliance.store import ActorKind, log_operator_action
from mailer.core.counts import parse_count
from mailer.db import Pool


def when(text: str, option: str = "--expires") -> datetime:
    """An ISO 8601 time (UTC if no zone) or a number of days from now (`90d`)."""
    text = text.strip()
    # Up to a hundred years: more would overflow datetime (a traceback, not an error).
    if text.endswith("d") and (days := parse_count(text[:-1], maximum=36_500)) is not None:
        return datetime.now(UTC) + timedelta(days=days)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ApiKeyError(
            f"{option}: {text!r} is neither a time (ISO 8601) nor days (90d)"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


async def create_key(
    pool: Pool,
    actor: str,
    name: str,
    scopes_text: str,
    expires_text: str | None,
    detail: Mapping[str, Any] | None = None,
    actor_kind: ActorKind = "operator",
) -> tuple[ApiKey, list[str], str]:
    """A new key: its row, its scopes and its text (shown once; only the hash is kept).
    The key and its operator-log line commit together."""
    if not name.strip():
        raise ApiKeyError("name: who uses the key ('dms', 'website'…)")
    scopes = parse_scopes(scopes_text)
    expires = when(expires_text) if expires_text else None
    async with pool.acquire() as conn, conn.transaction():
        key, text = await ApiStore(pool).key_create(name.strip(), scopes, expires, conn)
        await log_operator_action(
            conn, actor_kind, actor, "api_key.create", "api_key", key.prefix,
            {"name": name.strip(), "scopes": scopes, **(detail or {})},
        )  # fmt: skip
    return key, scopes, text


async def change_key(
    pool: Pool,
    actor: str,
    key: str,
    action: str,
    at: datetime | None = None,
    detail: Mapping[str, Any] | None = None,
    actor_kind: ActorKind = "operator",
) -> list[str]:
    """Revoke (`action` "revoke") or expire at `at` (now by default) the key(s) with this prefix
    or name; the prefixes changed (none: no such active key)."""
    store = ApiStore(pool)
    async with pool.acquire() as conn, conn.transaction():
        changed = (
            await store.key_revoke(key, conn)
            if action == "revoke"
            else await store.key_expire(key, at or datetime.now(UTC), conn)
        )
        for prefix in changed:
            await log_operator_action(
                conn, actor_kind, actor, f"api_key.{action}", "api_key", prefix, detail
            )
    return changed
