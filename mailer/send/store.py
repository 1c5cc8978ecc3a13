"""The send engine's Postgres: claims and leases, outcomes, throttle buckets, warm-up."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, NamedTuple

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from mailer.campaigns.audience import CampaignSpec
from mailer.campaigns.message import CampaignContent
from mailer.core.aimd import Aimd
from mailer.db import Queries, affected

Q = Queries("mailer.send", "send.sql")


class CutState(NamedTuple):
    """A throttle bucket's adaptive state: the factor of its last cut, and seconds since."""

    factor: float
    since_cut_s: float | None  # None: never cut


class Grant(NamedTuple):
    """Tokens granted from a bucket, the wait for the next one when none, its cut state."""

    granted: int
    wait_s: float
    cut: CutState


@dataclass(frozen=True, slots=True)
class EngineCampaign:
    spec: CampaignSpec
    content: CampaignContent
    template_version_id: int


class Claimed(NamedTuple):
    """A delivery claimed for sending, with its recipient (claim_batch's RETURNING)."""

    id: int
    campaign_id: int
    contact_id: int
    domain: str
    attempts: int  # made before this claim
    first_attempt_at: datetime | None  # None: this claim holds the first attempt
    consent_kind: str | None
    consent_source: str | None
    consent_obtained_at: datetime | None
    email: str
    name: str | None
    locale: str
    attributes: dict[str, Any]
    tracking: bool
    consent_date_only: bool  # the consent was given as a date, printed as given


class Started(NamedTuple):
    """What start_sending did with one delivery asked for (rows not returned: not ours)."""

    id: int
    # 'sending': started, may go to SMTP; 'skipped': refused (skip_reason says why);
    # 'held': left claimed, its campaign no longer runs.
    status: str
    skip_reason: str | None


class Swept(NamedTuple):
    """Leases of dead workers, lapsed: rows handed back to the queue, rows now uncertain."""

    requeued: int
    uncertain: int


@dataclass(frozen=True, slots=True)
class OutcomeRow:
    """The final (or retry) state of one delivery, as the engine records it."""

    delivery_id: int
    status: str
    code: int | None = None
    reply: str | None = None
    message_id: str | None = None
    at: datetime | None = None
    retry_at: datetime | None = None
    skip_reason: str | None = None
    hard_bounce: bool = False
    # For sent messages: what the archive keeps.
    archive: dict[str, Any] | None = None
    template_version_id: int | None = None
    sha256: bytes | None = None
    size: int | None = None


class SendStore:
    """The engine's named queries (send.sql) on a pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def campaign_for_engine(self, campaign_id: int) -> EngineCampaign:
        """What a worker needs to send a campaign: its audience spec, definition, template."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(Q("campaign_for_engine"), campaign_id)
            if row is None:
                raise LookupError(f"campaign {campaign_id} has no template version")
            links = {r["url"]: r["id"] for r in await conn.fetch(Q("campaign_links"), campaign_id)}
        return EngineCampaign(
            spec=CampaignSpec.from_row(row),
            content=CampaignContent(row["definition"], row["template"], row["files"], links),
            template_version_id=row["template_version_id"],
        )

    async def links_register(self, campaign_id: int, urls: list[str]) -> dict[str, int]:
        rows = await self.pool.fetch(Q("links_register"), campaign_id, urls)
        return {r["url"]: r["id"] for r in rows}

    async def running_campaigns(self) -> list[int]:
        """Start scheduled campaigns whose time has come; return the running ones."""
        async with self.pool.acquire() as conn:
            await conn.execute(Q("start_due_campaigns"))
            return [r["id"] for r in await conn.fetch(Q("running_campaigns"))]

    async def claim_batch(
        self, campaign_id: int, limit: int, lease_seconds: float, worker: str
    ) -> list[Claimed]:
        """Take up to `limit` due deliveries of a running campaign, `claimed` under a lease."""
        rows = await self.pool.fetch(Q("claim_batch"), campaign_id, limit, lease_seconds, worker)
        return [Claimed(*r) for r in rows]

    async def renew_leases(self, worker: str, lease_seconds: float) -> None:
        await self.pool.execute(Q("renew_leases"), worker, lease_seconds)

    async def release_batch(self, delivery_ids: list[int], worker: str) -> int:
        """Hand rows never given to SMTP back to the queue (shutdown, pause, refused start)."""
        return affected(await self.pool.execute(Q("release_batch"), delivery_ids, worker))

    def rounds(self) -> Rounds:
        """The recorder's rounds, on a connection of their own (see Rounds)."""
        return Rounds(self.pool)

    def start_rounds(self) -> Rounds:
        """The start writer's rounds: committed without waiting for the WAL flush."""
        return Rounds(self.pool, session=Q("start_writer_session"))

    async def sweep_leases(self) -> Swept:
        """Rows of dead workers: claimed ones back to the queue, started ones `uncertain`."""
        states = [r["status"] for r in await self.pool.fetch(Q("sweep_leases"))]
        uncertain = states.count("uncertain")
        return Swept(len(states) - uncertain, uncertain)

    async def finish_campaigns(self) -> list[str]:
        return [r["slug"] for r in await self.pool.fetch(Q("finish_campaigns"))]

    async def throttle_take(self, key: str, rate: float, burst: float, want: int) -> Grant:
        """Up to `want` tokens of a bucket refilled at `rate`, and the bucket's cut state."""
        row = await self.pool.fetchrow(Q("throttle_take"), key, rate, burst, want)
        assert row is not None
        since = row["since_cut_s"]
        return Grant(
            int(row["granted"]),
            float(row["wait_s"]),
            CutState(float(row["factor"]), None if since is None else float(since)),
        )

    async def throttle_cut(self, key: str, aimd: Aimd) -> float | None:
        """Cut a bucket's rate for every worker; the new factor, or None if cut too recently."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(Q("throttle_cut_ensure"), key)
            row = await conn.fetchrow(Q("throttle_cut_state"), key)
            assert row is not None
            since = row["since_cut_s"]
            factor = aimd.cut(float(row["factor"]), None if since is None else float(since))
            if factor is not None:
                await conn.execute(Q("throttle_cut"), key, factor)
            return factor

    async def throttle_cut_state(self, key: str) -> CutState | None:
        """A bucket's cut state as stored (None: no bucket yet), for reports and tests."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(Q("throttle_cut_state"), key)
        if row is None:
            return None
        since = row["since_cut_s"]
        return CutState(float(row["factor"]), None if since is None else float(since))

    async def throttle_record_wait(self, key: str, seconds: float) -> None:
        await self.pool.execute(Q("throttle_record_wait"), key, seconds)

    async def warmup_take(self, day: date, cap: int, want: int) -> int:
        return int(await self.pool.fetchval(Q("warmup_take"), day, cap, want))

    async def warmup_first_day(self) -> date | None:
        value = await self.pool.fetchval(Q("warmup_first_day"))
        return value if isinstance(value, date) else None


class Rounds:
    """The recorder's rounds (record_outcomes, start_sending), on a connection kept between them.

    A round runs every few milliseconds while messages flow: through the pool,
    each one paid a second round trip for the connection's reset on release
    (measured: as much engine CPU as the round itself). The connection is kept
    only while the pool has another one free for the rest of the worker
    (claims, throttle tokens), and given back when the recorder is idle; one
    that failed is dropped and the next round takes a fresh one.
    """

    def __init__(self, pool: asyncpg.Pool, session: str | None = None) -> None:
        self.pool = pool
        self.session = session  # run on each connection taken, before its first round
        self._conn: PoolConnectionProxy | None = None

    async def start(self, worker: str, delivery_ids: Sequence[int]) -> list[Started]:
        """Start marks, each the last check before its MAIL FROM: one statement, one commit."""
        rows = await self._fetch(Q("start_sending"), list(delivery_ids), worker)
        return [Started(*r) for r in rows]

    async def record(self, worker: str, outcomes: Sequence[OutcomeRow]) -> int:
        """Write outcomes with their archive rows and suppressions: one commit; rows written."""
        sent = [o for o in outcomes if o.archive is not None]
        rows = await self._fetch(
            Q("record_outcomes"),
            [o.delivery_id for o in outcomes],
            [o.status for o in outcomes],
            [o.code for o in outcomes],
            [o.reply for o in outcomes],
            [o.message_id for o in outcomes],
            [o.at for o in outcomes],
            [o.retry_at for o in outcomes],
            [o.skip_reason for o in outcomes],
            worker,
            [o.delivery_id for o in sent],
            [o.template_version_id for o in sent],
            [o.archive for o in sent],
            [o.sha256 for o in sent],
            [o.size for o in sent],
            [o.delivery_id for o in outcomes if o.hard_bounce],
        )
        return len(rows)

    async def _fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        for kept in (True, False):
            if self._conn is None:
                kept = False
                self._conn = await self.pool.acquire()
            try:
                if not kept and self.session is not None:
                    await self._conn.execute(self.session)
                rows = await self._conn.fetch(query, *args)
                break
            except asyncpg.InterfaceError:
                # A kept connection whose server side was lost: the pool took it back
                # before anything was sent; the round goes on a fresh one.
                with contextlib.suppress(Exception):
                    await self.close()  # released: the pool discards a broken connection
                if not kept:
                    raise
            except BaseException:
                await self.close()
                raise
        if not self.pool.get_idle_size() and self.pool.get_size() >= self.pool.get_max_size():
            await self.close()  # the last free connection: not kept from the others
        return rows

    async def setting(self, name: str) -> str:
        """A setting of the connection the rounds run on (what its session query made it)."""
        value = await self._fetch(Q("current_setting"), name)
        return str(value[0][0])

    async def close(self) -> None:
        """Give the connection back to the pool (a broken one is discarded by it)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await self.pool.release(conn)
