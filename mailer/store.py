"""The mailer's only door to Postgres: every statement is a named query.

No other module of the package imports asyncpg. Methods are named after the
queries they run, so a metric label, a method and a `-- name:` line share one
vocabulary.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, NamedTuple, TypeVar, cast

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from asyncpg.transaction import Transaction

from mailer import migrations, queries
from mailer.aimd import Aimd
from mailer.audience import CampaignSpec, audience_query, id_ranges
from mailer.contacts_file import ContactRow, Rejected

Q = queries.get
T = TypeVar("T")

_STAGING_COLUMNS = (
    "line",
    "email",
    "email_hash",
    "name",
    "locale",
    "attributes",
    "last_activity_at",
    "tracking",
    "channel",
    "kind",
    "source",
    "obtained_at",
    "ends_at",
    "topics",
)


# Postgres unreachable, restarting, shedding load or too slow: failures the
# engine waits out and retries. Any other database error is a bug to report
# with its traceback (a syntax error, a constraint the code should not break).
_UNAVAILABLE = (
    asyncpg.PostgresConnectionError,  # connection refused, reset, lost
    asyncpg.exceptions.OperatorInterventionError,  # shutdown, restart, statement timeout
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    OSError,
    TimeoutError,
)


def unavailable(error: BaseException) -> bool:
    """True when `error` says the database could not be reached or used just now."""
    if isinstance(error, _UNAVAILABLE):
        return True
    # asyncpg's own word for a connection found closed or a pool going away.
    return isinstance(error, asyncpg.InterfaceError) and "closed" in str(error)


class _OutageWithoutTraceback(logging.Filter):
    """asyncpg's pool logs each failed reconnect with a traceback: one line is enough.

    An outage is expected; the engine already summarises it (mailer.failure_log).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and unavailable(error):
            record.msg = f"{record.getMessage()} ({type(error).__name__}: {error})"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


_OUTAGE_FILTER = _OutageWithoutTraceback()


class CutState(NamedTuple):
    """A throttle bucket's adaptive state: the factor of its last cut, and seconds since."""

    factor: float
    since_cut_s: float | None  # None: never cut


class Grant(NamedTuple):
    """Tokens granted from a bucket, the wait for the next one when none, its cut state."""

    granted: int
    wait_s: float
    cut: CutState


class MigrationError(RuntimeError):
    """The database's migration history disagrees with the shipped files."""


class ImportRefused(ValueError):
    """An all-or-nothing import found invalid rows; nothing was written."""

    def __init__(self, rejected: int, valid: int) -> None:
        super().__init__(
            f"{rejected} invalid row(s) out of {rejected + valid}: nothing was imported "
            "(fix the rows listed in the rejects file, or pass --skip-invalid)"
        )
        self.rejected = rejected
        self.valid = valid
        # Filled by the import flow: the first rejected rows and where all are.
        self.examples: list[Rejected] = []
        self.rejects_file: Path | None = None


@dataclass(frozen=True)
class MigrationState:
    version: int
    name: str
    applied_at: datetime | None


@dataclass(frozen=True)
class ImportResult:
    import_id: int
    rows_read: int
    rows_valid: int
    rows_rejected: int
    contacts_created: int
    contacts_updated: int
    consents_added: int
    topics_added: int
    suppressed: int
    # Seconds per step, kept with the import record (where the time goes).
    seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SuppressionImportResult:
    rows_valid: int
    rows_rejected: int
    added: int


class Store:
    """A pool of connections and the named queries run on them."""

    def __init__(self, pool: asyncpg.Pool, *, audience_parts: int = 1) -> None:
        self.pool = pool
        # Connections that compute a whole audience at once, each over a range of
        # contact ids; never all of the pool (a launch must not starve the rest).
        self.audience_parts = max(1, min(audience_parts, pool.get_max_size() - 1))

    @classmethod
    @asynccontextmanager
    async def open(
        cls, dsn: str, *, min_size: int = 1, max_size: int = 10, audience_parts: int = 2
    ) -> AsyncIterator[Store]:
        """Connect a pool for the block's lifetime, closing it on the way out."""
        if _OUTAGE_FILTER not in logging.getLogger("asyncpg.pool").filters:
            logging.getLogger("asyncpg.pool").addFilter(_OUTAGE_FILTER)
        # UTC sessions: interval arithmetic on timestamptz (consent expiry,
        # "active within N months") follows the session zone.
        pool = await asyncpg.create_pool(
            dsn, min_size=min_size, max_size=max_size, server_settings={"timezone": "UTC"}
        )
        try:
            yield cls(pool, audience_parts=audience_parts)
        finally:
            await pool.close()

    # ------------------------------------------------------------ migrations

    async def migrate(self) -> list[migrations.Migration]:
        """Apply pending migrations in order, each in its own transaction; return those applied."""
        shipped = migrations.available()
        applied_now: list[migrations.Migration] = []
        async with self.pool.acquire() as conn:
            # Lock first: even CREATE TABLE IF NOT EXISTS races between sessions.
            await conn.execute(Q("migrations_lock"), migrations.ADVISORY_LOCK_KEY)
            try:
                await conn.execute(Q("migrations_bootstrap"))
                done = {r["version"]: r for r in await conn.fetch(Q("migrations_applied"))}
                for migration in shipped:
                    row = done.get(migration.version)
                    if row is not None:
                        if bytes(row["checksum"]) != migration.checksum:
                            raise MigrationError(
                                f"migration {migration.version:04d}_{migration.name} was edited "
                                "after it was applied; add a new migration instead"
                            )
                        continue
                    async with conn.transaction():
                        await conn.execute(migration.sql)
                        await conn.execute(
                            Q("migrations_record"),
                            migration.version,
                            migration.name,
                            migration.checksum,
                        )
                    applied_now.append(migration)
            finally:
                await conn.execute(Q("migrations_unlock"), migrations.ADVISORY_LOCK_KEY)
        return applied_now

    async def migration_status(self) -> list[MigrationState]:
        """Every shipped migration with when it was applied (None = pending)."""
        async with self.pool.acquire() as conn:
            await conn.execute(Q("migrations_bootstrap"))
            done = {
                r["version"]: r["applied_at"] for r in await conn.fetch(Q("migrations_applied"))
            }
        return [
            MigrationState(m.version, m.name, done.get(m.version)) for m in migrations.available()
        ]

    # ------------------------------------------------------------ topics

    async def topic_upsert(
        self, slug: str, name: str, description: str = "", default_subscribed: bool = True
    ) -> int:
        """Create or update a topic; return its id."""
        return int(
            await self.pool.fetchval(Q("topic_upsert"), slug, name, description, default_subscribed)
        )

    async def topics_list(self) -> list[dict[str, Any]]:
        return [dict(r) for r in await self.pool.fetch(Q("topics_list"))]

    # ------------------------------------------------------------ contact import

    async def import_contacts(
        self,
        rows: Iterable[ContactRow | Rejected],
        *,
        file_name: str,
        file_sha256: bytes,
        default_locale: str,
        skip_invalid: bool,
        on_reject: Any,
    ) -> ImportResult:
        """COPY validated rows into a staging table, then merge set-based, in one transaction."""
        counts = {"valid": 0, "rejected": 0}

        def records() -> Iterator[ContactRow]:
            for row in rows:
                if isinstance(row, Rejected):
                    counts["rejected"] += 1
                    on_reject(row)
                    continue
                counts["valid"] += 1
                yield row  # a NamedTuple in staging column order

        timings: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(step: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timings[step] = round(now - clock, 3)
            clock = now

        async with self.pool.acquire() as conn, conn.transaction():
            import_id = int(
                await conn.fetchval(Q("import_begin"), "contacts", file_name, file_sha256)
            )
            # Bulk statements: JIT compilation costs more than it saves here,
            # and the merge's sorts and hashes want more than 4 MB.
            await conn.execute(Q("import_session_settings"))
            await conn.execute(Q("import_create_staging"))
            await conn.copy_records_to_table(
                "import_rows", records=records(), columns=_STAGING_COLUMNS
            )
            lap("read_and_copy")
            if counts["rejected"] and not skip_invalid:
                raise ImportRefused(counts["rejected"], counts["valid"])
            await conn.execute(Q("import_index_staging"))
            await conn.execute(Q("import_analyze_staging"))
            await conn.execute(Q("import_merge_rows"))
            await conn.execute(Q("import_index_merged"))
            lap("merge_rows")
            updated = _affected(await conn.execute(Q("import_update_contacts")))
            lap("update_contacts")
            created = _affected(await conn.execute(Q("import_insert_contacts"), default_locale))
            lap("insert_contacts")
            await conn.execute(Q("import_resolve_ids"))
            await conn.fetchval(Q("import_lock_contacts"))
            lap("resolve_ids")
            consents = _affected(
                await conn.execute(Q("import_insert_consents"), import_id, file_name)
            )
            lap("insert_consents")
            topics = _affected(await conn.execute(Q("import_insert_topics"), import_id))
            lap("insert_topics")
            suppressed = int(await conn.fetchval(Q("import_suppressed_count")))
            result = ImportResult(
                import_id=import_id,
                rows_read=counts["valid"] + counts["rejected"],
                rows_valid=counts["valid"],
                rows_rejected=counts["rejected"],
                contacts_created=created,
                contacts_updated=updated,
                consents_added=consents,
                topics_added=topics,
                suppressed=suppressed,
                seconds=timings,
            )
            await conn.execute(
                Q("import_finish"),
                import_id,
                result.rows_read,
                result.rows_valid,
                result.rows_rejected,
                json.dumps(result.as_dict()),
            )
        return result

    async def import_suppressions(
        self,
        hashes: Iterable[tuple[int, bytes]],
        *,
        file_name: str,
        file_sha256: bytes,
        reason: str,
        scope: str,
        channel: str | None,
        topic_id: int | None,
        source: str,
        rejected: int,
    ) -> SuppressionImportResult:
        """Suppress (line, address hash) pairs in one transaction; repeats are no-ops."""
        valid = 0

        def records() -> Iterator[tuple[int, bytes]]:
            nonlocal valid
            for item in hashes:
                valid += 1
                yield item

        async with self.pool.acquire() as conn, conn.transaction():
            import_id = int(
                await conn.fetchval(Q("import_begin"), "suppressions", file_name, file_sha256)
            )
            await conn.execute(Q("suppress_create_staging"))
            await conn.copy_records_to_table(
                "import_suppressions", records=records(), columns=("line", "email_hash")
            )
            added = _affected(
                await conn.execute(
                    Q("suppress_insert"), scope, channel, topic_id, reason, source, import_id
                )
            )
            await conn.execute(
                Q("import_finish"),
                import_id,
                valid + rejected,
                valid,
                rejected,
                json.dumps({"added": added, "reason": reason, "scope": scope}),
            )
        return SuppressionImportResult(valid, rejected, added)

    # ------------------------------------------------------------ audience

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
                json.dumps(definition or {}),
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
                await lead.execute(Q("audience_record"), campaign_id, at, json.dumps(counts))
                for transaction in reversed(transactions):
                    await transaction.commit()
            except BaseException:
                for transaction in started:
                    with contextlib.suppress(Exception):
                        await transaction.rollback()
                raise
        return FreezeResult(sum(added for added, _ in parts), counts)

    async def contact_rule_inputs(self, email: str) -> dict[str, Any] | None:
        """One contact's ledger, preferences and suppressions, as plain values."""
        row = await self.pool.fetchrow(Q("contact_rule_inputs"), email)
        if row is None:
            return None
        out = dict(row)
        for key in ("ledger", "channels", "topics", "suppressions", "attributes"):
            out[key] = json.loads(out[key])
        return out

    async def consents_expiring(
        self, channel: str, start: datetime, end: datetime
    ) -> list[dict[str, Any]]:
        """Implied consents lapsing in [start, end), for contacts without express consent."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(Q("audience_session_settings"))
            rows = await conn.fetch(Q("consents_expiring"), channel, start, end)
        return [dict(r) for r in rows]

    # ------------------------------------------------------------ campaigns and templates

    async def template_version_upsert(self, name: str, sha256: bytes, files: dict[str, str]) -> int:
        return int(
            await self.pool.fetchval(Q("template_version_upsert"), name, sha256, json.dumps(files))
        )

    async def campaign_create(
        self,
        definition: dict[str, Any],
        *,
        topic_id: int,
        template_version_id: int,
        scheduled_at: datetime | None,
    ) -> int:
        """Insert a campaign row in `draft` from a validated definition."""
        d = definition
        return int(
            await self.pool.fetchval(
                Q("campaign_create"),
                d["slug"],
                d["name"],
                d["kind"],
                topic_id,
                d["channel"],
                d["policy"],
                d.get("segment"),
                d.get("active_within_months"),
                json.dumps(d),
                template_version_id,
                scheduled_at,
            )
        )

    async def campaign_by_slug(self, slug: str) -> dict[str, Any] | None:
        row = await self.pool.fetchrow(Q("campaign_by_slug"), slug)
        if row is None:
            return None
        out = dict(row)
        out["definition"] = json.loads(out["definition"])
        out["audience_counts"] = json.loads(out["audience_counts"] or "{}")
        return out

    async def campaign_for_engine(self, campaign_id: int) -> dict[str, Any]:
        """Definition, template files and registered links of a campaign."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(Q("campaign_for_engine"), campaign_id)
            if row is None:
                raise LookupError(f"campaign {campaign_id} has no template version")
            links = {r["url"]: r["id"] for r in await conn.fetch(Q("campaign_links"), campaign_id)}
        out = dict(row)
        out["definition"] = json.loads(out["definition"])
        out["files"] = json.loads(out["files"])
        out["links"] = links
        return out

    async def links_register(self, campaign_id: int, urls: list[str]) -> dict[str, int]:
        rows = await self.pool.fetch(Q("links_register"), campaign_id, urls)
        return {r["url"]: r["id"] for r in rows}

    async def campaigns_list(self) -> list[dict[str, Any]]:
        return [dict(r) for r in await self.pool.fetch(Q("campaigns_list"))]

    # ------------------------------------------------------------ send engine

    async def running_campaigns(self) -> list[int]:
        """Start scheduled campaigns whose time has come; return the running ones."""
        async with self.pool.acquire() as conn:
            await conn.execute(Q("start_due_campaigns"))
            return [r["id"] for r in await conn.fetch(Q("running_campaigns"))]

    async def claim_batch(
        self, campaign_id: int, limit: int, lease_seconds: float, worker: str
    ) -> list[asyncpg.Record]:
        """Take up to `limit` due deliveries of a running campaign, `sending` under a lease."""
        return list(
            await self.pool.fetch(Q("claim_batch"), campaign_id, limit, lease_seconds, worker)
        )

    async def renew_leases(self, worker: str, lease_seconds: float) -> None:
        await self.pool.execute(Q("renew_leases"), worker, lease_seconds)

    async def release_batch(self, delivery_ids: list[int], worker: str) -> int:
        """Hand rows never given to SMTP back to the queue (graceful shutdown)."""
        return _affected(await self.pool.execute(Q("release_batch"), delivery_ids, worker))

    async def record_outcomes(self, worker: str, batch: Sequence[OutcomeRow]) -> int:
        """Write outcomes, their archive rows and hard-bounce suppressions, atomically."""
        if not batch:
            return 0
        async with self.pool.acquire() as conn, conn.transaction():
            written = {
                r["id"]
                for r in await conn.fetch(
                    Q("record_outcomes"),
                    [o.delivery_id for o in batch],
                    [o.status for o in batch],
                    [o.code for o in batch],
                    [o.reply for o in batch],
                    [o.message_id for o in batch],
                    [o.at for o in batch],
                    [o.retry_at for o in batch],
                    [o.skip_reason for o in batch],
                    worker,
                )
            }
            # Archive and suppress exactly the rows whose outcome was recorded.
            sent = [o for o in batch if o.archive is not None and o.delivery_id in written]
            hard = [o.delivery_id for o in batch if o.hard_bounce and o.delivery_id in written]
            if sent:
                await conn.execute(
                    Q("archive_insert"),
                    [o.delivery_id for o in sent],
                    [o.template_version_id for o in sent],
                    [json.dumps(o.archive) for o in sent],
                    [o.sha256 for o in sent],
                    [o.size for o in sent],
                )
            if hard:
                await conn.execute(Q("suppress_hard_bounces"), hard)
        return len(written)

    async def sweep_uncertain(self) -> int:
        """Rows whose worker died mid-send become `uncertain` (reported, never resent)."""
        return len(await self.pool.fetch(Q("sweep_uncertain")))

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

    async def campaign_status_counts(self, campaign_id: int) -> dict[str, int]:
        rows = await self.pool.fetch(Q("campaign_status_counts"), campaign_id)
        return {r["status"]: int(r["n"]) for r in rows}

    async def campaign_set_status(self, campaign_id: int, allowed_from: list[str], to: str) -> bool:
        """Move a campaign to `to` if it is in one of `allowed_from`; False if it was not."""
        async with self.pool.acquire() as conn, conn.transaction():
            changed = await conn.fetchval(Q("campaign_set_status"), campaign_id, allowed_from, to)
            if changed and to == "cancelled":
                await conn.execute(Q("cancel_remaining"), campaign_id)
        return changed is not None

    async def resend_uncertain(self, campaign_id: int) -> int:
        """Queue the uncertain rows again and, if the campaign was done, run it again."""
        async with self.pool.acquire() as conn, conn.transaction():
            count = _affected(await conn.execute(Q("resend_uncertain"), campaign_id))
            if count:
                await conn.execute(Q("campaign_reopen"), campaign_id)
        return count

    # ------------------------------------------------------------ archive

    async def archive_by_delivery(self, delivery_id: int) -> dict[str, Any] | None:
        row = await self.pool.fetchrow(Q("archive_by_delivery"), delivery_id)
        if row is None:
            return None
        out = dict(row)
        out["render_inputs"] = json.loads(out["render_inputs"])
        out["files"] = json.loads(out["files"])
        return out

    async def archive_for_campaign(self, campaign_id: int) -> AsyncIterator[dict[str, Any]]:
        """Stream a campaign's archived messages (a server-side cursor: flat memory)."""
        async with self.pool.acquire() as conn, conn.transaction():
            async for row in conn.cursor(Q("archive_for_campaign"), campaign_id, prefetch=200):
                out = dict(row)
                out["render_inputs"] = json.loads(out["render_inputs"])
                out["files"] = json.loads(out["files"])
                out["consent_evidence"] = json.loads(out["consent_evidence"] or "null")
                yield out

    # ------------------------------------------------------------ a contact's story

    async def contact_story(self, email: str, email_hash: bytes) -> dict[str, Any] | None:
        """The contact, its ledger in order, its preferences and the suppressions on its address."""
        async with self.pool.acquire() as conn:
            contact = await conn.fetchrow(Q("contact_by_email"), email)
            suppressions = [
                dict(r) for r in await conn.fetch(Q("suppressions_for_hash"), email_hash)
            ]
            if contact is None:
                return {"contact": None, "suppressions": suppressions} if suppressions else None
            cid = contact["id"]
            return {
                "contact": dict(contact),
                "ledger": [dict(r) for r in await conn.fetch(Q("contact_ledger"), cid)],
                "topics": [dict(r) for r in await conn.fetch(Q("contact_topic_prefs"), cid)],
                "channels": [dict(r) for r in await conn.fetch(Q("contact_channel_prefs"), cid)],
                "suppressions": suppressions,
            }

    async def summary_counts(self) -> dict[str, int]:
        row = await self.pool.fetchrow(Q("summary_counts"))
        assert row is not None  # an aggregate always returns a row
        return {k: int(v) for k, v in row.items()}

    # ------------------------------------------------------------ report

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
                "outcomes": [
                    dict(r) for r in await conn.fetch(Q("campaign_status_counts"), campaign_id)
                ],
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
            }

    # ------------------------------------------------------------ privacy

    def _hygiene_candidates_sql(self) -> str:
        """The purge's target query: one text for the dry run's count and the real run."""
        return Q("hygiene_candidates").replace(":flags", Q("hygiene_flags"))

    async def hygiene_report(
        self, cutoff: datetime, now: datetime, unengaged_after: int
    ) -> dict[str, int]:
        """Live contacts counted by hygiene rule: inactive, without express consent, purgeable…"""
        sql = Q("hygiene_report").replace(":flags", Q("hygiene_flags"))
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(Q("privacy_session_settings"))
            row = await conn.fetchrow(sql, cutoff, now, unengaged_after)
        assert row is not None  # an aggregate always returns a row
        return {k: int(v) for k, v in row.items()}

    async def hygiene_candidate_count(self, cutoff: datetime, now: datetime) -> int:
        """How many contacts a purge with this cutoff would erase now (the dry run)."""
        sql = Q("hygiene_candidate_count").replace(":candidates", self._hygiene_candidates_sql())
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(Q("privacy_session_settings"))
            # $3 (the "unengaged" window) does not enter the purge rule.
            return int(await conn.fetchval(sql, cutoff, now, 1))

    async def hygiene_purge(
        self,
        cutoff: datetime,
        now: datetime,
        *,
        rule: str,
        os_user: str | None,
        evidence_kept: Sequence[str],
    ) -> dict[str, Any]:
        """Erase every purge candidate in one transaction, suppress and log; counts per table."""
        return await self._erase(
            self._hygiene_candidates_sql(),
            (cutoff, now, 1),
            action="purge",
            rule=rule,
            source="hygiene purge",
            subject_hash=None,
            os_user=os_user,
            evidence_kept=evidence_kept,
        )

    async def contact_erase(
        self,
        email: str,
        email_hash: bytes,
        *,
        rule: str,
        os_user: str | None,
        evidence_kept: Sequence[str],
    ) -> dict[str, Any]:
        """Erase one address's personal data everywhere, suppress its hash and log it."""
        return await self._erase(
            Q("erase_target_by_email"),
            (email,),
            action="erase",
            rule=rule,
            source="erasure request",
            subject_hash=email_hash,
            os_user=os_user,
            evidence_kept=evidence_kept,
        )

    async def _erase(
        self,
        targets_sql: str,
        args: tuple[Any, ...],
        *,
        action: str,
        rule: str,
        source: str,
        subject_hash: bytes | None,
        os_user: str | None,
        evidence_kept: Sequence[str],
    ) -> dict[str, Any]:
        async with self.pool.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            try:
                await conn.execute(Q("privacy_session_settings"))
                await conn.execute(Q("erase_ledger_rewrite"))
                await conn.execute(
                    Q("erase_targets_create").replace(":targets", targets_sql), *args
                )
                await conn.execute(Q("erase_targets_analyze"))
                counts: dict[str, int] = {
                    "contacts": _affected(await conn.execute(Q("erase_contacts"))),
                    "deliveries_skipped": _affected(await conn.execute(Q("erase_deliveries_skip"))),
                }
                # Checked after the skip, which locks the queued rows: a claim that
                # won the race shows here as `sending`, and nothing is written.
                busy = int(await conn.fetchval(Q("erase_targets_sending")))
                if busy:
                    await tx.rollback()
                    return {"busy": busy}
                hashes = [subject_hash] if subject_hash is not None else []
                detail = json.dumps({"rule": rule})
                counts["suppressions"] = _affected(
                    await conn.execute(Q("erase_suppress"), source, detail, hashes)
                )
                counts["deliveries_scrubbed"] = _affected(
                    await conn.execute(Q("erase_deliveries_scrub"))
                )
                counts["consents_scrubbed"] = _affected(
                    await conn.execute(Q("erase_consents"), list(evidence_kept))
                )
                counts["events_scrubbed"] = _affected(await conn.execute(Q("erase_events")))
                counts["archive_scrubbed"] = _affected(await conn.execute(Q("erase_archive")))
                log = await conn.fetchrow(
                    Q("privacy_log_insert"),
                    action,
                    rule,
                    counts["contacts"],
                    json.dumps(counts),
                    subject_hash,
                    os_user,
                )
                assert log is not None  # INSERT … RETURNING
            except BaseException:
                await tx.rollback()
                raise
            await tx.commit()
        return {
            **counts,
            "busy": 0,
            "log_id": log["id"],
            "db_user": log["db_user"],
            "performed_at": log["performed_at"],
        }

    async def privacy_log_recent(self, limit: int = 10) -> list[dict[str, Any]]:
        """The latest purges and erasures, newest first."""
        rows = await self.pool.fetch(Q("privacy_log_recent"), limit)
        return [{**dict(r), "details": json.loads(r["details"])} for r in rows]

    async def contact_export(self, email: str, email_hash: bytes) -> dict[str, Any]:
        """Every row of every table held about an address, each as {column: value} (JSON types)."""
        data = await self.pool.fetchval(Q("contact_export"), email, email_hash)
        return dict(json.loads(data))

    async def audit_contact_id(self, email: str) -> int | None:
        """The contact id of an address (erased contacts have none)."""
        value = await self.pool.fetchval(Q("audit_contact_id"), email)
        return None if value is None else int(value)

    async def audit_rows(
        self, campaign_id: int | None, contact_id: int | None
    ) -> AsyncIterator[dict[str, Any]]:
        """Stream deliveries with their frozen consent, archive record and opt-outs (a cursor)."""
        async with self.pool.acquire() as conn, conn.transaction():
            cursor = conn.cursor(Q("audit_rows"), campaign_id, contact_id, prefetch=200)
            async for row in cursor:
                out = dict(row)
                for key in ("consent_evidence", "render_inputs", "files"):
                    out[key] = None if out[key] is None else json.loads(out[key])
                out["optouts"] = json.loads(out["optouts"])
                yield out

    async def unsubscribe_sla(self, campaign_id: int | None) -> dict[str, Any]:
        """Opt-outs, how many a later delivery followed, sends after an opt-out, max processing."""
        row = await self.pool.fetchrow(Q("unsubscribe_sla"), campaign_id)
        assert row is not None  # an aggregate always returns a row
        out = dict(row)
        out["violating"] = list(out["violating"])
        return out


class AudienceRow(NamedTuple):
    contact_id: int
    domain: str
    reason: str | None
    consent_id: int | None
    consent_kind: str | None
    consent_source: str | None
    consent_obtained_at: datetime | None
    consent_valid_until: datetime | None = None  # None: no end (express) or not eligible


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


@dataclass(frozen=True)
class FreezeResult:
    added: int
    counts: dict[str, int]


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
    added = _affected(await conn.execute(Q("audience_freeze"), campaign["id"]))
    rows = await conn.fetch(Q("audience_result_counts"))
    return added, {r["reason"]: int(r["contacts"]) for r in rows}


def _sum_counts(parts: Iterable[dict[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for counts in parts:
        total.update(counts)
    return dict(sorted(total.items()))


def _affected(status: str) -> int:
    """Rows affected, from a command tag such as 'INSERT 0 42' or 'UPDATE 7'."""
    return int(status.rsplit(" ", 1)[-1])
