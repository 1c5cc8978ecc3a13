"""The API's Postgres: keys (api.sql) and idempotency records, on a pool or the caller's
connection."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from mailer.api.keys import ApiKey, new_key
from mailer.db import Queries, affected

Q = Queries("mailer.api", "api.sql")
Conn = asyncpg.Connection | PoolConnectionProxy
# The connection of an API write's transaction (a pooled one).
WriteConn = PoolConnectionProxy


@dataclass(frozen=True, slots=True)
class Remembered:
    """The answer recorded under an Idempotency-Key (status None: still being made)."""

    request_hash: bytes
    status: int | None
    body: str | None  # the JSON text answered


class ApiStore:
    """API keys and idempotency records."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def key_create(
        self, name: str, scopes: list[str], expires_at: datetime | None, conn: Conn | None = None
    ) -> tuple[ApiKey, str]:
        """A new key: its stored row and the key text (shown once, never stored)."""
        made = new_key()
        row = await (conn or self.pool).fetchrow(
            Q("key_create"), name, made.prefix, made.secret_hash, scopes, expires_at
        )
        assert row is not None  # INSERT … RETURNING
        return _key(row), made.text

    async def key_list(self) -> list[ApiKey]:
        return [_key(r) for r in await self.pool.fetch(Q("key_list"))]

    async def key_by_prefix(self, prefix: str) -> ApiKey | None:
        row = await self.pool.fetchrow(Q("key_by_prefix"), prefix)
        return None if row is None else _key(row)

    async def key_revoke(self, name_or_prefix: str, conn: Conn | None = None) -> list[str]:
        """Revoke the key(s) with this prefix or name (on `conn`'s transaction if given)."""
        rows = await (conn or self.pool).fetch(Q("key_revoke"), name_or_prefix)
        return [r["prefix"] for r in rows]

    async def key_expire(
        self, name_or_prefix: str, at: datetime, conn: Conn | None = None
    ) -> list[str]:
        """Make the key(s) with this prefix or name expire at `at`."""
        rows = await (conn or self.pool).fetch(Q("key_expire"), name_or_prefix, at)
        return [r["prefix"] for r in rows]

    async def key_touch(self, key_id: int) -> None:
        await self.pool.execute(Q("key_touch"), key_id)

    @staticmethod
    async def idempotency_claim(conn: Conn, key_id: int, idem_key: str, digest: bytes) -> bool:
        """True if this request owns the key now (in `conn`'s transaction)."""
        return await conn.fetchval(Q("idempotency_claim"), key_id, idem_key, digest) is not None

    @staticmethod
    async def idempotency_get(conn: Conn, key_id: int, idem_key: str) -> Remembered | None:
        row = await conn.fetchrow(Q("idempotency_get"), key_id, idem_key)
        return None if row is None else Remembered(bytes(row[0]), row[1], row[2])

    @staticmethod
    async def idempotency_save(
        conn: Conn, key_id: int, idem_key: str, status: int, body: str
    ) -> None:
        await conn.execute(Q("idempotency_save"), key_id, idem_key, status, body)

    async def idempotency_purge(self) -> int:
        return affected(await self.pool.execute(Q("idempotency_purge")))


def _key(row: Any) -> ApiKey:
    fields = dict(row)
    fields["secret_hash"], fields["scopes"] = bytes(row["secret_hash"]), list(row["scopes"])
    return ApiKey(**fields)
