"""The webhooks' Postgres (webhooks.sql): endpoints, the dispatcher's claim, replay, backlog."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from mailer.db import Queries, affected

Q = Queries("mailer.webhooks", "webhooks.sql")
# The channel webhook_emit() notifies when it writes events (the migration).
CHANNEL = "webhook_events"
Conn = asyncpg.Connection | PoolConnectionProxy


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: int
    url: str
    events: list[str]
    created_at: datetime
    disabled_at: datetime | None
    disabled_why: str | None
    pending: int = 0
    failed: int = 0
    delivered: int = 0
    oldest_pending_s: float | None = None


@dataclass(frozen=True, slots=True)
class Due:
    """One event to deliver to one endpoint, with what the request needs."""

    endpoint_id: int
    event_id: int
    attempts: int
    type: str
    contact_id: int | None
    campaign_id: int | None
    data: dict[str, Any]
    created_at: datetime
    url: str
    secret: str
    email: str | None
    name: str | None
    locale: str | None
    erased_at: datetime | None


@dataclass(frozen=True, slots=True)
class Outcome:
    endpoint_id: int
    event_id: int
    status: str  # delivered | pending (retry at next_at) | failed
    next_at: datetime
    code: int | None
    error: str | None


@dataclass(frozen=True, slots=True)
class Backlog:
    pending: int
    oldest_s: float
    disabled: int


class WebhookStore:
    """The webhook statements on a pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def endpoint_add(
        self, url: str, events: Sequence[str], secret: str, conn: Conn | None = None
    ) -> Endpoint:
        """A new endpoint (on `conn`'s transaction if given)."""
        row = await (conn or self.pool).fetchrow(Q("endpoint_add"), url, list(events), secret)
        assert row is not None  # INSERT … RETURNING
        return Endpoint(**{k: v for k, v in row.items() if k != "secret"})

    async def endpoint_list(self) -> list[Endpoint]:
        rows = await self.pool.fetch(Q("endpoint_list"))
        return [
            Endpoint(**{**dict(r), "oldest_pending_s": _float(r["oldest_pending_s"])}) for r in rows
        ]

    async def endpoints_disabled(self) -> list[Endpoint]:
        """Disabled endpoints only, without their backlog (cheap enough for a dashboard)."""
        return [Endpoint(**dict(r)) for r in await self.pool.fetch(Q("endpoints_disabled"))]

    async def endpoint_exists(self, endpoint_id: int) -> bool:
        return bool(await self.pool.fetchval(Q("endpoint_exists"), endpoint_id))

    async def endpoint_remove(self, endpoint_id: int) -> bool:
        """Remove an endpoint and its deliveries (the demo's receiver, once stopped)."""
        return affected(await self.pool.execute(Q("endpoint_remove"), endpoint_id)) > 0

    async def endpoint_disable(self, endpoint_id: int, why: str, conn: Conn | None = None) -> bool:
        """Switch an endpoint off by hand (its events queue, delivered once enabled again);
        on `conn`'s transaction if given (the CLI's, with its operator-log line)."""
        rows = await (conn or self.pool).fetch(Q("endpoints_disable"), [endpoint_id], why)
        return bool(rows)

    async def endpoint_enable(self, endpoint_id: int, conn: Conn | None = None) -> int:
        """Enable an endpoint again; how many pending deliveries are due at once (on `conn`'s
        transaction if given)."""
        return affected(await (conn or self.pool).execute(Q("endpoint_enable"), endpoint_id))

    @asynccontextmanager
    async def claim(
        self, limit: int
    ) -> AsyncIterator[tuple[list[Due], Callable[[Sequence[Outcome]], Any]]]:
        """Claim due deliveries for this transaction; record their outcomes before leaving.

        The rows stay locked while they are delivered: a dispatcher killed mid-delivery
        loses its transaction and the rows are due again (at least once, never lost).
        """
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(Q("claim_due"), limit)
            due = [Due(**{**dict(r), "data": dict(r["data"])}) for r in rows]

            async def record(outcomes: Sequence[Outcome]) -> None:
                await conn.execute(
                    Q("record_outcomes"),
                    [o.endpoint_id for o in outcomes],
                    [o.event_id for o in outcomes],
                    [o.status for o in outcomes],
                    [o.next_at for o in outcomes],
                    [o.code for o in outcomes],
                    [o.error for o in outcomes],
                )
                failed = sorted({o.endpoint_id for o in outcomes if o.status == "failed"})
                if failed:
                    await conn.execute(
                        Q("endpoints_disable"),
                        failed,
                        "an event stayed undelivered for the whole retry window",
                    )

            yield due, record

    async def replay(
        self, endpoint_id: int, since: datetime, until: datetime, conn: Conn | None = None
    ) -> int:
        """Queue again every event of [since, until) the endpoint subscribes to; how many
        (on `conn`'s transaction if given)."""
        return affected(await (conn or self.pool).execute(Q("replay"), endpoint_id, since, until))

    async def backlog(self) -> Backlog:
        row = await self.pool.fetchrow(Q("backlog"))
        assert row is not None  # an aggregate always returns a row
        return Backlog(int(row["pending"]), float(row["oldest_s"]), int(row["disabled"]))

    @asynccontextmanager
    async def wake_on_events(self, wake: asyncio.Event) -> AsyncIterator[None]:
        """Set `wake` whenever a transaction commits outbox events (LISTEN)."""
        async with self.pool.acquire() as conn:

            def notified(*_: object) -> None:
                wake.set()

            await conn.add_listener(CHANNEL, notified)
            try:
                yield
            finally:
                await conn.remove_listener(CHANNEL, notified)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
