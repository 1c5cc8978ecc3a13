"""Campaigns in Postgres: the audience and its freeze, the lifecycle, templates (the typed
rows it returns are in rows.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Iterable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, TypeVar, cast

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from asyncpg.transaction import Transaction

from mailer.campaigns.audience import CampaignSpec, audience_query, id_ranges
from mailer.campaigns.rows import (
    AudienceRow,
    Campaign,
    CampaignListing,
    CampaignOverview,
    ExpiringConsent,
    FreezeResult,
    ReasonBreakdown,
    Unbuilt,
)
from mailer.campaigns.template_set import TemplateSet
from mailer.db import Queries, affected

Q = Queries("mailer.campaigns", "campaigns.sql")
T = TypeVar("T")
# A connection whose transaction a caller holds (its operator-log line commits with it).
Conn = PoolConnectionProxy


class CampaignStore:
    """The campaigns' named queries (campaigns.sql) on a pool."""

    def __init__(self, pool: asyncpg.Pool, *, audience_parts: int = 1) -> None:
        self.pool = pool
        # Connections that compute a whole audience at once, each over a range of
        # contact ids; never all of the pool (a launch must not starve the rest).
        self.audience_parts = max(1, min(audience_parts, pool.get_max_size() - 1))

    async def campaign_spec(self, slug: str) -> CampaignSpec | None:
        """What the audience of a campaign depends on."""
        row = await self.pool.fetchrow(Q("campaign_spec"), slug)
        return None if row is None else CampaignSpec.from_row(row)

    async def campaign_insert_minimal(
        self,
        slug: str,
        topic_id: int,
        *,
        channel: str = "email",
        policy: str = "casl",
        segment: str | None = None,
        active_within_months: int | None = None,
        definition: dict[str, Any] | None = None,
    ) -> int:
        """A campaign row with the columns the audience needs (campaign files fill the rest)."""
        return int(
            await self.pool.fetchval(
                Q("campaign_insert_minimal"),
                slug,
                slug,
                topic_id,
                channel,
                policy,
                segment,
                active_within_months,
                definition or {},
            )
        )

    async def audience(
        self, spec: CampaignSpec, at: datetime, contact_ids: list[int] | None = None
    ) -> list[AudienceRow]:
        """Every contact (or the given ones) with its first failing reason or its consent."""
        sql, args = audience_query(spec, at, contact_ids)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(Q("audience_session_settings"))
            rows = await conn.fetch(sql, *args)
        return [AudienceRow(*row) for row in rows]

    @asynccontextmanager
    async def _audience_connections(self) -> AsyncIterator[list[PoolConnectionProxy]]:
        """The connections that compute one whole audience, one contact-id range each."""
        async with contextlib.AsyncExitStack() as stack:
            yield [
                await stack.enter_async_context(self.pool.acquire())
                for _ in range(self.audience_parts)
            ]

    async def audience_counts(self, spec: CampaignSpec, at: datetime) -> dict[str, int]:
        """Eligible count and excluded counts by reason, without freezing anything."""
        async with self._audience_connections() as conns:
            ranges = await _contact_ranges(conns[0], len(conns))
            parts = await _gather_all(
                _count_part(conn, spec, at, part, len(ranges))
                for conn, part in zip(conns, ranges, strict=False)
            )
        return _sum_counts(parts)

    async def freeze_audience(self, campaign_id: int, at: datetime) -> FreezeResult:
        """Turn the campaign's audience into delivery rows, once, with counts by reason.

        Several connections compute and insert it at once, each over a range of
        contact ids, in transactions committed together once all succeeded (the
        first one, holding the campaign's lock, last). A crash in the few
        milliseconds between those commits leaves the campaign unlaunched with
        part of its rows; launching it again completes them (rows already
        frozen are skipped), as after a crash between the freeze and the status
        change.
        """
        async with self._audience_connections() as conns:
            lead = conns[0]
            transactions = [conn.transaction() for conn in conns]
            started: list[Transaction] = []
            try:
                await transactions[0].start()
                started.append(transactions[0])
                row = await lead.fetchrow(Q("campaign_lock"), campaign_id)
                if row is None:
                    raise LookupError(f"campaign {campaign_id} does not exist")
                if row["status"] in ("done", "cancelled"):
                    # Checked under the lock: a cancel committed since the caller looked
                    # must not get fresh queued rows that nothing will ever send.
                    raise LookupError(f"campaign {campaign_id} is {row['status']}")
                # The others start once the lock is held: not idle in a transaction
                # while another launch of this campaign holds it.
                for transaction in transactions[1:]:
                    await transaction.start()
                    started.append(transaction)
                ranges = await _contact_ranges(lead, len(conns))
                parts = await _gather_all(
                    _freeze_part(conn, row, at, part, len(ranges))
                    for conn, part in zip(conns, ranges, strict=False)
                )
                counts = _sum_counts(counts for _, counts in parts)
                await lead.execute(Q("audience_record"), campaign_id, at, counts)
                for transaction in reversed(transactions):
                    await transaction.commit()
            except BaseException:
                for transaction in started:
                    with contextlib.suppress(Exception):
                        await transaction.rollback()
                raise
        return FreezeResult(sum(added for added, _ in parts), counts)

    async def consents_expiring(
        self, channel: str, start: datetime, end: datetime
    ) -> list[ExpiringConsent]:
        """Implied consents lapsing in [start, end), for contacts without express consent."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(Q("audience_session_settings"))
            rows = await conn.fetch(Q("consents_expiring"), channel, start, end)
        return [ExpiringConsent(**r) for r in rows]

    async def template_version_upsert(
        self, name: str, sha256: bytes, files: dict[str, str], conn: Conn | None = None
    ) -> int:
        db = self.pool if conn is None else conn
        found = await db.fetchval(Q("template_version_upsert"), name, sha256, files)
        if found is None:  # inserted at the same moment by a transaction now committed
            found = await db.fetchval(Q("template_version_find"), name, sha256)
        return int(found)

    async def campaign_create(
        self,
        definition: dict[str, Any],
        *,
        topic_id: int,
        template_version_id: int,
        scheduled_at: datetime | None,
        conn: Conn | None = None,
    ) -> int | None:
        """Insert a campaign row in `draft` from a validated definition (on `conn` if given);
        None if a campaign has that slug already."""
        d = definition
        db = self.pool if conn is None else conn
        created = await db.fetchval(
            Q("campaign_create"),
            d["slug"],
            d["name"],
            d["kind"],
            topic_id,
            d["channel"],
            d["policy"],
            d.get("segment"),
            d.get("active_within_months"),
            d,
            template_version_id,
            scheduled_at,
        )
        return None if created is None else int(created)

    async def campaign_by_slug(self, slug: str, conn: Conn | None = None) -> Campaign | None:
        row = await (self.pool if conn is None else conn).fetchrow(Q("campaign_by_slug"), slug)
        return None if row is None else Campaign(**row)

    async def campaigns_list(self) -> list[CampaignListing]:
        return [CampaignListing(**r) for r in await self.pool.fetch(Q("campaigns_list"))]

    async def campaign_templates(self, campaign_id: int) -> TemplateSet:
        """The template files a campaign was created with (its template version)."""
        row = await self.pool.fetchrow(Q("campaign_templates"), campaign_id)
        if row is None:
            raise LookupError(f"campaign {campaign_id} has no template version")
        return TemplateSet(row["name"], row["files"])

    async def topic_ids(self) -> dict[str, int]:
        """Topic ids by slug: what a campaign file may name."""
        return {r["slug"]: r["id"] for r in await self.pool.fetch(Q("topic_ids"))}

    async def campaign_status_counts(
        self, campaign_id: int, conn: Conn | None = None
    ) -> dict[str, int]:
        rows = await (self.pool if conn is None else conn).fetch(
            Q("campaign_status_counts"), campaign_id
        )
        return {r["status"]: int(r["n"]) for r in rows}

    async def campaign_unbuilt(self, campaign_id: int, limit: int = 5) -> list[Unbuilt]:
        """The first `limit` messages that could not be built, with their contact's address."""
        rows = await self.pool.fetch(Q("campaign_unbuilt"), campaign_id, limit)
        return [Unbuilt(r["email"], r["skip_reason"], r["smtp_reply"]) for r in rows]

    async def campaigns_overview(
        self, finished: int = 20, *, finished_counts: bool = True
    ) -> list[CampaignOverview]:
        """Every unfinished campaign and the `finished` latest finished ones, with progress;
        without `finished_counts`, a finished one's counts hold only its uncertain rows."""
        rows = await self.pool.fetch(Q("campaigns_overview"), finished, finished_counts)
        return [CampaignOverview(**r) for r in rows]

    async def audience_breakdown(
        self, spec: CampaignSpec, at: datetime, sample: int = 5
    ) -> list[ReasonBreakdown]:
        """Counts by reason with the first `sample` addresses of each (one audience pass)."""
        sql, args = audience_query(spec, at, None)
        wrapper = Q("audience_breakdown_wrapper").replace(":audience", sql)
        wrapper = wrapper.replace(":sample", f"${len(args) + 1}")
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(Q("audience_session_settings"))
            rows = await conn.fetch(wrapper, *args, sample)
        return [ReasonBreakdown(r["reason"], int(r["contacts"]), list(r["sample"])) for r in rows]

    async def campaign_set_status(
        self,
        campaign_id: int,
        allowed_from: list[str],
        to: str,
        conn: Conn | None = None,
    ) -> bool:
        """Move a campaign to `to` if it is in one of `allowed_from`; False if it was not.

        With `conn`, inside that connection's transaction: the caller's line in the operator
        log commits with the change, or neither does (the API's writes, the console's).
        """
        async with contextlib.AsyncExitStack() as stack:
            if conn is None:
                conn = await stack.enter_async_context(self.pool.acquire())
            await stack.enter_async_context(conn.transaction())
            changed = await conn.fetchval(Q("campaign_set_status"), campaign_id, allowed_from, to)
            if changed and to == "cancelled":
                await conn.execute(Q("cancel_remaining"), campaign_id)
        return changed is not None

    async def campaign_pause_for_reputation(self, campaign_id: int, reason: dict[str, Any]) -> bool:
        """Pause a running campaign with the guard's reason; False if it was not running."""
        paused = await self.pool.fetchval(Q("campaign_pause_for_reputation"), campaign_id, reason)
        return paused is not None

    async def resend_uncertain(self, campaign_id: int, conn: Conn | None = None) -> int:
        """Queue the uncertain rows again and, if the campaign was done, run it again (on
        `conn`'s transaction if given: the caller's, with its operator-log line)."""
        async with contextlib.AsyncExitStack() as stack:
            if conn is None:
                conn = await stack.enter_async_context(self.pool.acquire())
            async with conn.transaction():
                count = affected(await conn.execute(Q("resend_uncertain"), campaign_id))
                if count:
                    await conn.execute(Q("campaign_reopen"), campaign_id)
        return count


async def _contact_ranges(conn: PoolConnectionProxy, parts: int) -> list[tuple[int, int]]:
    bounds = await conn.fetchrow(Q("contact_id_bounds"))
    assert bounds is not None  # an aggregate always returns its row
    return id_ranges(bounds["lo"], bounds["hi"], parts)


async def _gather_all(work: Iterable[Awaitable[T]]) -> list[T]:
    """Every result, or the first error once ALL are finished: a connection
    still running a statement cannot be rolled back or handed back."""
    results = await asyncio.gather(*work, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return cast(list[T], results)


async def _part_settings(conn: PoolConnectionProxy, parts: int) -> None:
    await conn.execute(Q("audience_session_settings"))
    if parts > 1:
        await conn.execute(Q("audience_part_settings"))


async def _count_part(
    conn: PoolConnectionProxy, spec: CampaignSpec, at: datetime, part: tuple[int, int], parts: int
) -> dict[str, int]:
    sql, args = audience_query(spec, at, None, part)
    async with conn.transaction():
        await _part_settings(conn, parts)
        rows = await conn.fetch(Q("audience_count_wrapper").replace(":audience", sql), *args)
    return {r["reason"]: int(r["contacts"]) for r in rows}


async def _freeze_part(
    conn: PoolConnectionProxy, campaign: Any, at: datetime, part: tuple[int, int], parts: int
) -> tuple[int, dict[str, int]]:
    """One range's audience into delivery rows, inside the caller's transaction."""
    sql, args = audience_query(CampaignSpec.from_row(campaign), at, None, part)
    await _part_settings(conn, parts)
    await conn.execute(Q("audience_result_create").replace(":audience", sql), *args)
    if campaign["kind"] == "repermission":
        await conn.execute(
            Q("audience_repermission_filter"), at, campaign["repermission_window_days"]
        )
    added = affected(await conn.execute(Q("audience_freeze"), campaign["id"]))
    rows = await conn.fetch(Q("audience_result_counts"))
    return added, {r["reason"]: int(r["contacts"]) for r in rows}


def _sum_counts(parts: Iterable[dict[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for counts in parts:
        total.update(counts)
    return dict(sorted(total.items()))
