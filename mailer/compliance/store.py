"""Compliance in Postgres: the archive, hygiene and erasure, data-subject and auditor exports."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, NamedTuple

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from mailer.core.evidence import DETAIL_KEPT_AFTER_ERASURE, InboundEvidence
from mailer.db import Queries, affected

Q = Queries("mailer.compliance", "compliance.sql")

ActorKind = Literal["api_key", "operator", "cli"]
# A pool (the write is the log line alone) or the connection whose transaction
# holds the write being logged (the usual case: both commit, or neither).
Executor = asyncpg.Pool | asyncpg.Connection | PoolConnectionProxy
# A connection whose transaction the caller holds (the API's write, with its log line).
Conn = PoolConnectionProxy


@dataclass(frozen=True, slots=True)
class OperatorAction:
    """One line of the append-only operator log."""

    id: int
    at: datetime
    actor_kind: str
    actor_id: str
    action: str
    object_kind: str | None
    object_id: str | None
    detail: dict[str, Any]


async def log_operator_action(
    conn: Executor,
    actor_kind: ActorKind,
    actor_id: str,
    action: str,
    object_kind: str | None = None,
    object_id: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> int:
    """Append one write to the operator log, on `conn` (in its transaction); the line's id."""
    row = await conn.fetchrow(
        Q("operator_log_insert"),
        actor_kind,
        actor_id,
        action,
        object_kind,
        object_id,
        dict(detail or {}),
    )
    assert row is not None  # INSERT … RETURNING
    return int(row["id"])


class SuppressionEvidence(NamedTuple):
    """A suppression made from inbound mail, the address it is on, and the message."""

    reason: str
    created_at: datetime
    email: str | None  # None: no live contact holds the address (erased, or never one)
    evidence: InboundEvidence


class ComplianceStore:
    """The compliance named queries (compliance.sql) on a pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def archive_by_delivery(self, delivery_id: int) -> dict[str, Any] | None:
        row = await self.pool.fetchrow(Q("archive_by_delivery"), delivery_id)
        if row is None:
            return None
        return dict(row)

    async def archive_for_campaign(self, campaign_id: int) -> AsyncIterator[dict[str, Any]]:
        """Stream a campaign's archived messages (a server-side cursor: flat memory)."""
        async with self.pool.acquire() as conn, conn.transaction():
            async for row in conn.cursor(Q("archive_for_campaign"), campaign_id, prefetch=200):
                yield dict(row)

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

    async def hygiene_suppression_sources(self) -> dict[tuple[str, str], int]:
        """Hard-bounce and complaint suppressions by (reason, source)."""
        rows = await self.pool.fetch(Q("hygiene_suppression_sources"))
        return {(r["reason"], r["source"]): int(r["n"]) for r in rows}

    async def hygiene_inbound_evidence(self, limit: int) -> list[SuppressionEvidence]:
        """The latest suppressions made from inbound mail, newest first, with the message."""
        rows = await self.pool.fetch(Q("hygiene_inbound_evidence"), limit)
        return [
            SuppressionEvidence(
                r["reason"], r["created_at"], r["email"], InboundEvidence.from_row(dict(r))
            )
            for r in rows
        ]

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
        conn: PoolConnectionProxy | None = None,
    ) -> dict[str, Any]:
        """Erase every purge candidate in one transaction, suppress and log; counts per table.

        With `conn`, inside that connection's transaction (the CLI's, with its operator-log line).
        """
        return await self._erase(
            self._hygiene_candidates_sql(),
            (cutoff, now, 1),
            action="purge",
            rule=rule,
            source="hygiene purge",
            subject_hash=None,
            os_user=os_user,
            evidence_kept=evidence_kept,
            conn=conn,
        )

    async def contact_erase(
        self,
        email: str,
        email_hash: bytes,
        *,
        rule: str,
        os_user: str | None,
        evidence_kept: Sequence[str],
        conn: PoolConnectionProxy | None = None,
    ) -> dict[str, Any]:
        """Erase one address's personal data everywhere, suppress its hash and log it.

        With `conn`, inside that connection's transaction (the API's, with its operator-log
        line): a savepoint, rolled back alone when a message to the person is in flight.
        """
        return await self._erase(
            Q("erase_target_by_email"),
            (email,),
            action="erase",
            rule=rule,
            source="erasure request",
            subject_hash=email_hash,
            os_user=os_user,
            evidence_kept=evidence_kept,
            conn=conn,
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
        conn: PoolConnectionProxy | None = None,
    ) -> dict[str, Any]:
        async with contextlib.AsyncExitStack() as stack:
            if conn is None:
                conn = await stack.enter_async_context(self.pool.acquire())
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
                    "contacts": affected(await conn.execute(Q("erase_contacts"))),
                    "deliveries_skipped": affected(await conn.execute(Q("erase_deliveries_skip"))),
                }
                # Checked after the skip, which locks the queued and claimed rows: a
                # start that won the race shows here as `sending`, and nothing is written.
                busy = int(await conn.fetchval(Q("erase_targets_sending")))
                if busy:
                    await tx.rollback()
                    return {"busy": busy}
                hashes = [subject_hash] if subject_hash is not None else []
                detail = {"rule": rule}
                counts["suppressions"] = affected(
                    await conn.execute(Q("erase_suppress"), source, detail, hashes)
                )
                counts["deliveries_scrubbed"] = affected(
                    await conn.execute(Q("erase_deliveries_scrub"))
                )
                counts["consents_scrubbed"] = affected(
                    await conn.execute(Q("erase_consents"), list(evidence_kept))
                )
                counts["events_scrubbed"] = affected(await conn.execute(Q("erase_events")))
                counts["archive_scrubbed"] = affected(await conn.execute(Q("erase_archive")))
                counts["inbound_scrubbed"] = affected(
                    await conn.execute(Q("erase_inbound"), list(DETAIL_KEPT_AFTER_ERASURE), hashes)
                )
                await conn.execute(Q("erase_bounces"))
                await conn.execute(Q("erase_suppression_detail"), hashes)
                counts["transactional_scrubbed"] = affected(
                    await conn.execute(Q("erase_transactional"))
                )
                counts["rejects_dropped"] = affected(await conn.execute(Q("erase_rejects"), hashes))
                log = await conn.fetchrow(
                    Q("privacy_log_insert"),
                    action,
                    rule,
                    counts["contacts"],
                    counts,
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
        return [dict(r) for r in rows]

    async def contact_export(self, email: str, email_hash: bytes) -> dict[str, Any]:
        """Every row of every table held about an address, each as {column: value} (JSON types)."""
        data = await self.pool.fetchval(Q("contact_export"), email, email_hash)
        return dict(data)

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
                yield dict(row)

    async def unsubscribe_sla(self, campaign_id: int | None) -> dict[str, Any]:
        """Opt-outs, how many a later delivery followed, sends after an opt-out, max processing."""
        row = await self.pool.fetchrow(Q("unsubscribe_sla"), campaign_id)
        assert row is not None  # an aggregate always returns a row
        out = dict(row)
        out["violating"] = list(out["violating"])
        return out

    async def log_operator_action(
        self,
        actor_kind: ActorKind,
        actor_id: str,
        action: str,
        object_kind: str | None = None,
        object_id: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> int:
        """Append one write to the operator log on its own (no other change to commit with)."""
        return await log_operator_action(
            self.pool, actor_kind, actor_id, action, object_kind, object_id, detail
        )

    async def operator_log(
        self,
        *,
        before: int | None = None,
        limit: int = 50,
        object_kind: str | None = None,
        object_id: str | None = None,
    ) -> list[OperatorAction]:
        """The operator log, newest first, a keyset page below id `before`."""
        rows = await self.pool.fetch(Q("operator_log_page"), before, limit, object_kind, object_id)
        return [OperatorAction(**{**dict(r), "detail": dict(r["detail"])}) for r in rows]
