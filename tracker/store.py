"""The tracker's only door to Postgres: every statement is a named query in queries.sql.

No other tracker module imports asyncpg (its pool is mailer/db/bounded.py). Opt-outs and
preference changes run in one transaction each, serialised per contact, and commit before
the handler answers. Every call ends by a deadline (tracker.db_timeout_ms): past it, or when
Postgres is away, it raises Unavailable, its transaction not committed (mailer/db/bounded.py says
how, and the one case no client can settle).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

import asyncpg

from mailer.core.settings import TrackerSettings
from mailer.db.bounded import BoundedPool, Conn
from mailer.db.bounded import (
    Unavailable as Unavailable,  # what every method raises; handlers catch it
)
from mailer.db.queries import QueryFileError, parse
from mailer.optouts.store import OptOutStore, Withdrawal
from tracker.events import Event
from tracker.preferences import (
    Changes,
    LedgerRow,
    SuppressionRow,
    TopicRow,
    changes,
    current,
)
from tracker.rows import ConsentRequest, Link, Recipient, SentDelivery, Snapshot

log = logging.getLogger(__name__)

_EVENT_COLUMNS = Event._fields  # the inbox table's columns, in the same order
# Background work (the event flusher, partition upkeep) keeps no one waiting, and a batch of
# 50,000 events may take seconds: it gets longer timeouts than a request, the server's again
# shorter than ours (mailer/db/bounded.py). A hung server still cannot hold the flusher (and so
# shutdown) forever.
BACKGROUND_TIMEOUT_S = 30.0
_BACKGROUND_STATEMENT_MS = 25_000


@cache
def queries() -> dict[str, str]:
    """Every named query of tracker/queries.sql, read once."""
    text = resources.files("tracker").joinpath("queries.sql").read_text(encoding="utf-8")
    return parse(text, "tracker/queries.sql")


REQUIRED = frozenset(
    {
        "ping",
        "background_timeouts",
        "ensure_event_partitions",
        "events_inbox_create",
        "events_inbox_move",
        "click_target",
        "recipient",
        "contact_ledger",
        "contact_channels",
        "contact_topics",
        "contact_suppressions",
        "channels_grant",
        "topics_grant",
        "confirm_campaign",
        "express_grant",
    }
)


def _q(name: str) -> str:
    return queries()[name]


class TrackerStore:
    """A connection pool and the tracker's named queries."""

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        timeout_ms: int = TrackerSettings.db_timeout_ms,
        statement_timeout_ms: int = TrackerSettings.db_statement_timeout_ms,
    ) -> None:
        missing = sorted(REQUIRED - set(queries()))
        if missing:
            raise QueryFileError(f"tracker/queries.sql lacks queries: {', '.join(missing)}")
        self._db = BoundedPool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            timeout_s=timeout_ms / 1000,
            statement_timeout_ms=statement_timeout_ms,
        )

    @property
    def bounded(self) -> BoundedPool:
        """The deadline-bound pool, lent to the sign-up forms' store (mailer/forms/store.py)."""
        return self._db

    async def start(self) -> bool:
        """Open the pool; False when Postgres is unreachable (the pool then connects lazily)."""
        return await self._db.start()

    async def close(self) -> None:
        """Close the pool."""
        await self._db.close()

    async def ping(self) -> bool:
        """Whether a pooled connection answers a trivial query in time."""
        try:
            async with self._db.connection() as conn:
                await conn.fetchval(_q("ping"))
            return True
        except (Unavailable, asyncpg.PostgresError):
            return False

    async def _background(self, conn: Conn) -> None:
        """Lift this transaction's server-side timeouts to the background deadline."""
        await conn.execute(_q("background_timeouts"), str(_BACKGROUND_STATEMENT_MS))

    async def ensure_event_partitions(self) -> None:
        """Create the event partitions for this month and the next two."""
        async with self._db.connection(transaction=True, timeout_s=BACKGROUND_TIMEOUT_S) as conn:
            await self._background(conn)
            await conn.execute(_q("ensure_event_partitions"), timeout=BACKGROUND_TIMEOUT_S)

    # ------------------------------------------------------------ events

    async def write_events(self, events: Sequence[Event]) -> int:
        """COPY a batch into the events table; returns the rows that landed."""
        async with self._db.connection(transaction=True, timeout_s=BACKGROUND_TIMEOUT_S) as conn:
            await self._background(conn)
            await conn.execute(_q("events_inbox_create"))
            await conn.copy_records_to_table(
                "tracker_events_inbox",
                records=events,
                columns=_EVENT_COLUMNS,
                timeout=BACKGROUND_TIMEOUT_S,
            )
            status = await conn.execute(_q("events_inbox_move"), timeout=BACKGROUND_TIMEOUT_S)
        return int(status.rpartition(" ")[2])

    async def click_target(
        self, delivery_id: int, link_id: int
    ) -> tuple[Link | None, SentDelivery | None]:
        """The link as registered and the delivery's campaign and send time (None if unknown)."""
        async with self._db.connection() as conn:
            row = await conn.fetchrow(_q("click_target"), delivery_id, link_id)
        if row is None:
            return None, None
        link = Link(row["url"], row["campaign_id"])
        if row["delivery_campaign_id"] is None:
            return link, None
        return link, SentDelivery(row["delivery_campaign_id"], row["sent_at"])

    # ------------------------------------------------------------ pages

    async def recipient(self, delivery_id: int) -> Recipient | None:
        """The contact, campaign and topic behind a delivery, or None."""
        async with self._db.connection() as conn:
            row = await conn.fetchrow(_q("recipient"), delivery_id)
        if row is None:
            return None
        return Recipient(
            delivery_id=row["delivery_id"],
            campaign_id=row["campaign_id"],
            contact_id=row["contact_id"],
            email=row["email"],
            email_hash=bytes(row["email_hash"]) if row["email_hash"] is not None else None,
            name=row["name"],
            locale=row["locale"],
            erased=row["erased"],
            sender=row["sender"],
            channel=row["channel"],
            topic_id=row["topic_id"],
            topic_name=row["topic_name"] or "",
            topic_slug=row["topic_slug"] or "",
            topic_names=row["topic_names"] or {},
            timezone=row["timezone"],
        )

    async def snapshot(self, recipient: Recipient, now: datetime) -> Snapshot:
        """The contact's ledger and switch positions, as the preference centre shows them."""
        async with self._db.connection(transaction=True, readonly=True) as conn:
            return await self._snapshot(conn, recipient, now)

    async def _snapshot(self, conn: Conn, recipient: Recipient, now: datetime) -> Snapshot:
        contact = recipient.contact_id
        ledger = tuple(
            LedgerRow(
                id=r["id"],
                channel=r["channel"],
                action=r["action"],
                kind=r["kind"],
                topic_id=r["topic_id"],
                topic_name=r["topic_name"],
                source=r["source"],
                obtained_at=r["obtained_at"],
                ends_at=r["ends_at"],
                obtained_date_only=r["obtained_date_only"],
                ends_date_only=r["ends_date_only"],
                topic_slug=r["topic_slug"],
                topic_names=r["topic_names"] or {},
                form_source=r["form_source"],
                form_requested_at=r["form_requested_at"],
                form_confirmed_at=r["form_confirmed_at"],
            )
            for r in await conn.fetch(_q("contact_ledger"), contact)
        )
        channel_prefs = {
            r["channel"]: r["enabled"] for r in await conn.fetch(_q("contact_channels"), contact)
        }
        topics = [
            TopicRow(
                r["id"],
                r["name"],
                r["description"],
                r["default_subscribed"],
                r["subscribed"],
                slug=r["slug"],
                names=r["names"],
            )
            for r in await conn.fetch(_q("contact_topics"), contact)
        ]
        suppressions = [
            SuppressionRow(r["scope"], r["channel"], r["topic_id"], r["reason"])
            for r in await conn.fetch(_q("contact_suppressions"), recipient.email_hash)
        ]
        return Snapshot(ledger, current(ledger, channel_prefs, topics, suppressions, now))

    # ------------------------------------------------------------ re-permission

    async def consent_request(self, campaign_id: int) -> ConsentRequest | None:
        """What a re-permission campaign asks for; None for any other campaign."""
        async with self._db.connection() as conn:
            row = await conn.fetchrow(_q("confirm_campaign"), campaign_id)
        if row is None or not row["consent_text"]:
            return None
        return ConsentRequest(f"repermission: {row['slug']}", row["consent_text"])

    async def grant_express(
        self, recipient: Recipient, source: str, evidence: Mapping[str, Any]
    ) -> bool | None:
        """Append an express email grant, committed; False if already held, None if erased."""
        async with self._db.connection(transaction=True) as conn:
            if await OptOutStore.lock_contact(conn, recipient.contact_id) is None:
                return None
            added = await conn.fetchval(
                _q("express_grant"), recipient.contact_id, source, dict(evidence)
            )
        return bool(added)

    # ------------------------------------------------------------ opt-outs

    async def opt_out(
        self,
        recipient: Recipient,
        *,
        channels: Collection[str],
        topic_ids: Collection[int],
        source: str,
        evidence: Mapping[str, Any],
    ) -> bool | None:
        """Withdraw channels and/or topics durably; True if anything changed, None if erased."""
        async with self._db.connection(transaction=True) as conn:
            email_hash = await OptOutStore.lock_contact(conn, recipient.contact_id)
            if email_hash is None:
                return None
            changed = await self._withdraw(
                conn, recipient, email_hash, channels, topic_ids, source, evidence
            )
        return changed > 0

    async def _withdraw(
        self,
        conn: Conn,
        recipient: Recipient,
        email_hash: bytes,
        channels: Collection[str],
        topic_ids: Collection[int],
        source: str,
        evidence: Mapping[str, Any],
    ) -> int:
        withdrawal = Withdrawal(
            contact_id=recipient.contact_id,
            channels=channels,
            topic_ids=topic_ids,
            source=source,
            evidence=evidence,
            delivery_id=recipient.delivery_id,
            campaign_id=recipient.campaign_id,
        )
        return await OptOutStore.withdraw(conn, email_hash, withdrawal)

    async def save_preferences(
        self,
        recipient: Recipient,
        *,
        channels_wanted: Collection[str],
        topics_wanted: Collection[int],
        topics_shown: Collection[int],
        evidence: Mapping[str, Any],
        now: datetime,
    ) -> Changes | None:
        """Apply a submitted preference form; the changes made, or None if the contact is erased.

        The switches are judged against the state read under the contact's lock, so a
        double submit or a concurrent one-click cannot log the same change twice.
        """
        async with self._db.connection(transaction=True) as conn:
            email_hash = await OptOutStore.lock_contact(conn, recipient.contact_id)
            if email_hash is None:
                return None
            snap = await self._snapshot(conn, recipient, now)
            diff = changes(snap.preferences, channels_wanted, topics_wanted, topics_shown)
            source = "preference centre"
            await self._withdraw(
                conn, recipient, email_hash, diff.channels_off, diff.topics_off, source, evidence
            )
            if diff.channels_on:
                await conn.execute(
                    _q("channels_grant"),
                    recipient.contact_id,
                    sorted(diff.channels_on),
                    email_hash,
                    dict(evidence),
                )
            if diff.topics_on:
                await conn.execute(
                    _q("topics_grant"),
                    recipient.contact_id,
                    sorted(diff.topics_on),
                    email_hash,
                    dict(evidence),
                )
        return diff
