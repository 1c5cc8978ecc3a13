"""Inbound mail's Postgres: the raw store, the processor's batch transaction, the guard's
rates and the operator's views, every statement a named query of inbound.sql."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from mailer.db import Queries
from mailer.optouts.store import OptOutStore, Withdrawal

Q = Queries("mailer.inbound", "inbound.sql")


class Stored(NamedTuple):
    """A stored message as the processor claims it."""

    id: int
    source: str
    mail_from: str | None
    rcpt_to: list[str]
    raw: bytes
    received_at: datetime


class Attribution(NamedTuple):
    """The delivery a message is about, how it was found, and whose it is."""

    inbound_id: int
    delivery_id: int | None
    how: str | None  # token, message_id, recipient
    campaign_id: int | None
    contact_id: int | None
    status: str | None  # the delivery's state before this message
    email_hash: bytes | None  # None once the contact is erased
    erased: bool
    # delivery_id names a transactional notice (mailer/transactional): no campaign.
    notice: bool = False


class Lookup(NamedTuple):
    """What one message offers to find its delivery by (classify.References, resolved)."""

    inbound_id: int
    token_delivery_id: int | None
    message_id_delivery_id: int | None
    message_id: str | None
    # The normalised address reported: found by the contacts' address index
    # (contacts.email_hash has no index of its own; it is the address's digest).
    recipient: str | None


class BounceRow(NamedTuple):
    delivery_id: int
    campaign_id: int
    contact_id: int
    inbound_id: int
    hard: bool
    status: str | None
    diagnostic: str | None


class ComplaintRow(NamedTuple):
    delivery_id: int
    campaign_id: int
    inbound_id: int
    feedback_type: str


class SuppressionRow(NamedTuple):
    email_hash: bytes
    reason: str  # hard_bounce | complaint
    source: str
    detail: dict[str, Any]


class Done(NamedTuple):
    """A message's verdict as batch_done writes it."""

    id: int
    kind: str
    delivery_id: int | None
    attributed_by: str | None
    detail: dict[str, Any]
    erased: bool = False  # about an erased contact: the raw bytes and sender are not kept
    notice: bool = False  # delivery_id is a transactional notice's id (transactional_id)


@dataclass(frozen=True, slots=True)
class CampaignRates:
    """What a running campaign sent in the guard's window, and how much of it came back."""

    campaign_id: int
    slug: str
    overrides: dict[str, Any]
    sent: int
    bounced: int
    complaints: int


@dataclass(frozen=True, slots=True)
class UnmatchedMessage:
    id: int
    received_at: datetime
    source: str
    peer: str | None
    mail_from: str | None
    rcpt_to: list[str]
    detail: dict[str, Any]
    delivery_id: int | None
    attributed_by: str | None


class Batch:
    """One processing transaction: claimed messages, their lookups and effects, their state."""

    def __init__(self, conn: PoolConnectionProxy, messages: list[Stored]) -> None:
        self._conn = conn
        self.messages = messages

    async def attribute(self, lookups: Sequence[Lookup], within_days: int) -> list[Attribution]:
        """Find each message's delivery (batch_attribute), in the order given."""
        rows = await self._conn.fetch(
            Q("batch_attribute"),
            [x.inbound_id for x in lookups],
            [x.token_delivery_id for x in lookups],
            [x.message_id_delivery_id for x in lookups],
            [x.message_id for x in lookups],
            [x.recipient for x in lookups],
            within_days,
        )
        by_id = {
            r["inbound_id"]: Attribution(
                r["inbound_id"],
                r["delivery_id"],
                r["how"],
                r["campaign_id"],
                r["contact_id"],
                r["status"],
                None if r["email_hash"] is None else bytes(r["email_hash"]),
                bool(r["erased"]),
                bool(r["notice"]),
            )
            for r in rows
        }
        return [by_id[x.inbound_id] for x in lookups]

    async def bounce(self, rows: Sequence[BounceRow]) -> None:
        """Record bounces; the hard ones make their deliveries `bounced`."""
        if not rows:
            return
        hard = sorted({r.delivery_id for r in rows if r.hard})
        if hard:
            await self._conn.execute(Q("deliveries_bounce"), hard)
        columns = list(zip(*rows, strict=True))
        await self._conn.execute(Q("bounces_insert"), *(list(c) for c in columns))

    async def bounce_notices(self, ids: Sequence[int]) -> None:
        """Hard-bounced transactional notices become `bounced` (notices_bounce)."""
        if ids:
            await self._conn.execute(Q("notices_bounce"), sorted(set(ids)))

    async def complain(self, rows: Sequence[ComplaintRow]) -> None:
        """Record complaints per delivery (the guard's complaint rate)."""
        if rows:
            columns = list(zip(*rows, strict=True))
            await self._conn.execute(Q("complaints_insert"), *(list(c) for c in columns))

    async def suppress(self, rows: Sequence[SuppressionRow]) -> None:
        """Suppress addresses on email (hard bounce, complaint); repeats are no-ops."""
        if rows:
            ordered = sorted(rows, key=lambda r: r.email_hash)
            await self._conn.execute(
                Q("suppressions_insert"),
                [r.email_hash for r in ordered],
                [r.reason for r in ordered],
                [r.source for r in ordered],
                [r.detail for r in ordered],
            )

    async def soft_bounce_rule(self, contact_ids: Sequence[int], limit: int, days: int) -> int:
        """Suppress contacts past `limit` soft bounces in `days`; how many were suppressed."""
        if not contact_ids:
            return 0
        rows = await self._conn.fetch(Q("soft_bounce_suppress"), sorted(contact_ids), limit, days)
        return len(rows)

    async def opt_out(self, withdrawal: Withdrawal) -> bool | None:
        """The shared opt-out, in this transaction; None when the contact is erased."""
        return await OptOutStore.opt_out(self._conn, withdrawal)

    async def done(self, verdicts: Sequence[Done]) -> dict[int, float]:
        """Mark the messages processed; seconds each waited since it was received, by id."""
        rows = await self._conn.fetch(
            Q("batch_done"),
            [v.id for v in verdicts],
            [v.kind for v in verdicts],
            [v.delivery_id for v in verdicts],
            [v.attributed_by for v in verdicts],
            [v.detail for v in verdicts],
            [v.erased for v in verdicts],
            [v.notice for v in verdicts],
        )
        return {r["id"]: float(r["waited_s"]) for r in rows}


class InboundStore:
    """inbound.sql on a pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def store(
        self,
        raw: bytes,
        *,
        source: str,
        peer: str | None,
        mail_from: str | None,
        rcpt_to: Sequence[str],
    ) -> tuple[int, bool]:
        """Store a message durably (committed on return); (id, False) if it was already."""
        digest = hashlib.sha256(raw).digest()
        row = await self.pool.fetchrow(
            Q("message_store"), digest, source, peer, mail_from, list(rcpt_to), raw
        )
        if row is None:  # the same bytes committed by another session meanwhile
            found = await self.pool.fetchval(Q("message_find"), digest)
            return int(found), False
        return int(row["id"]), bool(row["fresh"])

    @asynccontextmanager
    async def batch(self, limit: int) -> AsyncIterator[Batch]:
        """Claim up to `limit` pending messages; what the block does commits with their state."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(Q("batch_claim"), limit)
            yield Batch(
                conn,
                [
                    Stored(
                        r["id"],
                        r["source"],
                        r["mail_from"],
                        list(r["rcpt_to"]),
                        bytes(r["raw"]),
                        r["received_at"],
                    )
                    for r in rows
                ],
            )

    async def oldest_pending(self) -> int | None:
        """The id the next batch would start with."""
        async with self.batch(1) as batch:
            return batch.messages[0].id if batch.messages else None

    async def mark_failed(self, inbound_id: int, error: str) -> None:
        """Set a message that cannot be processed aside, as unmatched with the error."""
        await self.pool.execute(Q("message_failed"), inbound_id, error[:500])

    async def guard_rates(self, window_s: float) -> list[CampaignRates]:
        """Every running campaign's sends, bounces and complaints in the guard's window."""
        rows = await self.pool.fetch(Q("guard_rates"), window_s)
        return [
            CampaignRates(
                r["id"],
                r["slug"],
                dict(r["overrides"] or {}),
                r["sent"],
                r["bounced"],
                r["complaints"],
            )
            for r in rows
        ]

    async def unmatched_backlog(self) -> int:
        """Unmatched messages not yet dismissed."""
        return int(await self.pool.fetchval(Q("unmatched_backlog")))

    async def unmatched(self, limit: int = 50) -> list[UnmatchedMessage]:
        """The newest unmatched messages nobody dismissed."""
        rows = await self.pool.fetch(Q("unmatched_list"), limit)
        return [
            UnmatchedMessage(
                r["id"],
                r["received_at"],
                r["source"],
                r["peer"],
                r["mail_from"],
                list(r["rcpt_to"]),
                dict(r["detail"]),
                r["delivery_id"],
                r["attributed_by"],
            )
            for r in rows
        ]

    async def dismiss(self, ids: Sequence[int]) -> int:
        """Mark unmatched messages as seen by the operator; how many were."""
        status = await self.pool.execute(Q("unmatched_dismiss"), list(ids))
        return int(status.rpartition(" ")[2])

    async def raw(self, inbound_id: int) -> bytes | None:
        """A stored message's bytes, as received."""
        found = await self.pool.fetchval(Q("message_raw"), inbound_id)
        return None if found is None else bytes(found)

    async def kind_counts(self) -> dict[str, int]:
        """Messages by kind ('pending' for those not processed yet)."""
        return {r["kind"]: int(r["n"]) for r in await self.pool.fetch(Q("kind_counts"))}
