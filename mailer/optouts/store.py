"""The opt-out's Postgres: optouts.sql, run on a connection whose transaction the caller holds.

The tracker (on its deadline-bound pool, mailer/db/bounded.py) and inbound (in the
transaction that marks the inbound message processed) both withdraw through here, so the
ledger rows, suppressions and switches an opt-out writes are the same whatever the door.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from mailer.db import Queries

Q = Queries("mailer.optouts", "optouts.sql")

# What pool.acquire() and BoundedPool lend; either carries the caller's transaction.
Conn = asyncpg.Connection | PoolConnectionProxy


@dataclass(frozen=True, slots=True)
class Withdrawal:
    """One opt-out as the ledger keeps it: what, from where, and the proof."""

    contact_id: int
    channels: Collection[str]
    topic_ids: Collection[int]
    source: str  # the ledger's source: one-click, unsubscribe page, mailto, complaint…
    evidence: Mapping[str, Any]  # CASL s.13: how we know the person asked
    # The message the person answered; None for an opt-out told by another system (API).
    # campaign_id None also: from a transactional message (no campaign).
    delivery_id: int | None = None
    campaign_id: int | None = None


def message_ref(delivery_id: int | None, campaign_id: int | None) -> dict[str, int | None]:
    """The message an opt-out answered, under the key of its own id sequence.

    A campaign delivery is `delivery_id`; a transactional message (no campaign) is
    `transactional_id`: its ids are another sequence, and recorded as a delivery_id they
    would name some campaign delivery (the audit export joins the ledger on that key).
    """
    if campaign_id is None and delivery_id is not None:
        return {"transactional_id": delivery_id, "campaign_id": None}
    return {"delivery_id": delivery_id, "campaign_id": campaign_id}


class OptOutStore:
    """The opt-out statements on the caller's connection (no pool of its own)."""

    @staticmethod
    async def lock_contact(conn: Conn, contact_id: int) -> bytes | None:
        """Lock the contact for this transaction; its address hash, or None once erased."""
        found = await conn.fetchval(Q("contact_lock"), contact_id)
        return None if found is None else bytes(found)

    @staticmethod
    async def withdraw(conn: Conn, email_hash: bytes, w: Withdrawal) -> int:
        """Append the withdraw rows, suppressions and switch changes; how many rows changed."""
        detail: dict[str, Any] = message_ref(w.delivery_id, w.campaign_id)
        if "inbound_id" in w.evidence:  # a mailto unsubscribe: the mail it came in, kept
            detail["inbound_id"] = w.evidence["inbound_id"]
        changed = 0
        if w.channels:
            changed += await conn.fetchval(
                Q("channels_withdraw"),
                w.contact_id,
                sorted(w.channels),
                email_hash,
                w.source,
                dict(w.evidence),
                detail,
            )
        if w.topic_ids:
            changed += await conn.fetchval(
                Q("topics_withdraw"),
                w.contact_id,
                sorted(w.topic_ids),
                email_hash,
                w.source,
                dict(w.evidence),
                detail,
            )
        if changed:
            # The webhooks' contact.unsubscribed, in this transaction (written only while an
            # endpoint subscribes to it): the other systems' cue to stop too.
            what = {
                "channels": sorted(w.channels),
                "topic_ids": sorted(w.topic_ids),
                "source": w.source,
                **message_ref(w.delivery_id, w.campaign_id),
            }
            what.pop("campaign_id")  # the event carries it beside its data
            await conn.fetchval(Q("outbox_unsubscribed"), w.contact_id, w.campaign_id, what)
        return int(changed)

    @staticmethod
    async def contact_by_email(conn: Conn, email: str) -> int | None:
        """The live contact with this (normalised) address."""
        found = await conn.fetchval(Q("contact_by_email"), email)
        return None if found is None else int(found)

    @staticmethod
    async def topic_ids(conn: Conn, slugs: Collection[str]) -> dict[str, int]:
        """The ids of the topics named (unknown slugs are absent)."""
        return {
            r["slug"]: int(r["id"]) for r in await conn.fetch(Q("topic_ids_by_slug"), list(slugs))
        }

    @classmethod
    async def opt_out(cls, conn: Conn, w: Withdrawal) -> bool | None:
        """Lock and withdraw: True if anything changed, False if already so, None if erased."""
        email_hash = await cls.lock_contact(conn, w.contact_id)
        if email_hash is None:
            return None
        return await cls.withdraw(conn, email_hash, w) > 0
