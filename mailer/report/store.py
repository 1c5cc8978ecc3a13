"""The campaign report's Postgres: rollups folded forward from a per-campaign mark."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from mailer.db import Queries
from mailer.report.across import CampaignLine
from mailer.report.figures import Engagement

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
    tie: int = 1  # among rows of the same (at, kind, ref): 1, 2… (report.sql contact_activity)


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
        self, contact_id: int, before: tuple[datetime, str, int, int] | None, limit: int
    ) -> list[ContactEvent]:
        """A keyset page of the contact's events, newest first, below (time, kind, ref, tie)."""
        at, kind, ref, tie = before if before else (None, None, None, None)
        rows = await self.pool.fetch(Q("contact_activity"), contact_id, at, kind, ref, limit, tie)
        return [ContactEvent(**r) for r in rows]

    async def across_campaigns(
        self, since: datetime, until: datetime, limit: int
    ) -> list[CampaignLine]:
        """Figures of the campaigns started in [since, until), newest first, `limit` at most.

        Each campaign's new events are folded first, as its own report does: up to two fold
        statements per campaign (the final window, kept; the tail, read then rolled back);
        the marks are created, locked and advanced in one statement each.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            campaigns = await conn.fetch(Q("across_campaigns"), since, until, limit)
            ids = [int(r["id"]) for r in campaigns]
            if not ids:
                return []
            await conn.execute(Q("report_session_settings"))
            await conn.execute(Q("report_marks_create_many"), ids)
            marks = {
                r["campaign_id"]: r["xact"]
                for r in await conn.fetch(Q("report_marks_lock_many"), ids)
            }
            horizon = await conn.fetchval(Q("report_horizon"))
            behind = [i for i in ids if horizon > marks[i]]
            read = []
            for i in behind:
                folded = await conn.fetchrow(Q("report_fold"), i, marks[i], horizon)
                assert folded is not None  # an aggregate always returns a row
                read.append(int(folded["events"]))
            if behind:
                await conn.execute(Q("report_marks_advance_many"), behind, horizon, read)
            # Events of transactions past the horizon (it is the whole server's: another
            # database's long transaction holds it back) are folded in a savepoint rolled
            # back once read, as campaign_report_rows does: exact now, rollups stay final.
            tail = conn.transaction()
            await tail.start()
            try:
                for i in ids:
                    await conn.execute(Q("report_fold"), i, max(horizon, marks[i]), None)
                found = {int(r["id"]): r for r in await conn.fetch(Q("across_figures"), ids)}
            finally:
                await tail.rollback()
        lines = []
        for c in campaigns:
            r = found[int(c["id"])]
            scopes = r["unsubscribes_by_scope"]
            if isinstance(scopes, str):  # jsonb arrives as text without a codec
                scopes = json.loads(scopes)
            lines.append(
                CampaignLine(
                    c["slug"],
                    c["name"],
                    c["status"],
                    c["started_at"],
                    sent=int(r["sent"]),
                    opens=Engagement(
                        int(r["opens_human_events"]),
                        int(r["opens_machine_events"]),
                        int(r["opens_unique_all"]),
                        int(r["opens_unique_human"]),
                    ),
                    clicks=Engagement(
                        int(r["clicks_human_events"]),
                        int(r["clicks_machine_events"]),
                        int(r["clicks_unique_all"]),
                        int(r["clicks_unique_human"]),
                    ),
                    hard_bounces=int(r["hard_bounces"]),
                    soft_bounces=int(r["soft_bounces"]),
                    unsubscribed=int(r["unsubscribed_people"]),
                    unsubscribes_by_scope={str(k): int(v) for k, v in scopes.items()},
                    complaints=int(r["complaints"]),
                )
            )
        return lines
