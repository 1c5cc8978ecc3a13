"""The campaign report's Postgres: rollups folded forward from a per-campaign mark."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from mailer.db import Queries

Q = Queries("mailer.report", "report.sql")


@dataclass(frozen=True, slots=True)
class RecentActivity:
    """Opt-outs, bounces and complaints since a time (the console's dashboard)."""

    optouts: int
    hard_bounces: int
    soft_bounces: int
    complaints: int


@dataclass(frozen=True, slots=True)
class ContactDelivery:
    """One message of a campaign to one contact, as the ledger holds it."""

    id: int
    campaign: str
    status: str
    skip_reason: str | None
    smtp_code: int | None
    sent_at: datetime | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ContactEvent:
    """Something that happened after a contact's message: open, click, opt-out, bounce..."""

    at: datetime
    kind: str  # open, click, unsubscribe, hard_bounce, soft_bounce, complaint
    campaign: str | None
    machine: bool
    detail: str | None  # the link, the opt-out's scope, the DSN status, the feedback type
    ref: int  # keyset tie-breaker: the delivery (open, click) or the row's own id


class ReportStore:
    """The report's named queries (report.sql) on a pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def campaign_report_rows(self, campaign_id: int) -> dict[str, Any]:
        """A campaign's report rows, keyed as mailer.report.assemble takes them.

        Events come from the report_* rollups (migration 0002). Under the campaign's
        mark lock, the events of every transaction finished since the last report are
        folded in and kept; those committed after that horizon are folded inside a
        savepoint that is rolled back once read, so the figures are exact now while the
        rollups only ever hold windows that can no longer change.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            campaign = await conn.fetchrow(Q("report_campaign"), campaign_id)
            if campaign is None:
                raise LookupError(f"campaign {campaign_id} does not exist")
            await conn.execute(Q("report_session_settings"))
            await conn.execute(Q("report_mark_create"), campaign_id)
            mark = await conn.fetchval(Q("report_mark_lock"), campaign_id)
            horizon = max(mark, await conn.fetchval(Q("report_horizon")))
            if horizon > mark:
                folded = await conn.fetchrow(Q("report_fold"), campaign_id, mark, horizon)
                assert folded is not None  # an aggregate always returns a row
                await conn.execute(Q("report_mark_advance"), campaign_id, horizon, folded["events"])
            tail = conn.transaction()
            await tail.start()
            try:
                await conn.execute(Q("report_fold"), campaign_id, horizon, None)
                totals = await conn.fetch(Q("report_event_totals"), campaign_id)
                hours = await conn.fetch(Q("report_event_hours"), campaign_id)
            finally:
                await tail.rollback()
            return {
                "campaign": dict(campaign),
                "generated_at": campaign["generated_at"],
                "outcomes": [dict(r) for r in await conn.fetch(Q("report_outcomes"), campaign_id)],
                "outcome_details": [
                    dict(r) for r in await conn.fetch(Q("report_outcome_details"), campaign_id)
                ],
                "event_totals": [dict(r) for r in totals],
                "event_hours": [dict(r) for r in hours],
                "links": [dict(r) for r in await conn.fetch(Q("report_links"), campaign_id)],
                "unsubscribes": [
                    dict(r) for r in await conn.fetch(Q("report_unsubscribes"), campaign_id)
                ],
                "complaints": int(await conn.fetchval(Q("report_complaints"), campaign_id)),
                "soft_bounces": int(await conn.fetchval(Q("report_soft_bounces"), campaign_id)),
            }

    async def recent_activity(self, since: datetime) -> RecentActivity:
        row = await self.pool.fetchrow(Q("recent_activity"), since)
        assert row is not None  # scalar subqueries: always one row
        return RecentActivity(**row)

    async def contact_deliveries(
        self, contact_id: int, before: int | None, limit: int
    ) -> list[ContactDelivery]:
        """A keyset page of the contact's deliveries, newest first, below id `before`."""
        rows = await self.pool.fetch(Q("contact_deliveries"), contact_id, before, limit)
        return [ContactDelivery(**r) for r in rows]

    async def contact_activity(
        self, contact_id: int, before: tuple[datetime, str, int] | None, limit: int
    ) -> list[ContactEvent]:
        """A keyset page of the contact's events, newest first, below (time, kind, ref)."""
        at, kind, ref = before if before else (None, None, None)
        rows = await self.pool.fetch(Q("contact_activity"), contact_id, at, kind, ref, limit)
        return [ContactEvent(**r) for r in rows]
