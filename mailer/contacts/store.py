"""Contacts in Postgres: topics, the CSV import, suppression lists, a contact's story."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from mailer.contacts.csvfile import ContactRow, Rejected
from mailer.core.consent import (
    Action,
    Channel,
    ContactRecord,
    Kind,
    LedgerEntry,
    Suppression,
    SuppressionReason,
    SuppressionScope,
)
from mailer.db import Queries, affected

Q = Queries("mailer.contacts", "contacts.sql")


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
    "obtained_date_only",
    "ends_date_only",
)


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


class ContactStore:
    """The contacts' named queries (contacts.sql) on a pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def topic_upsert(
        self,
        slug: str,
        name: str | None,
        description: str = "",
        default_subscribed: bool = True,
        *,
        names: Mapping[str, str | None] | None = None,
    ) -> int:
        """Create or update a topic; return its id.

        `name` None keeps an existing topic's default name (a new one takes the slug);
        `names` per language are merged into those held, a None value removing one.
        """
        return int(
            await self.pool.fetchval(
                Q("topic_upsert"), slug, name, description, default_subscribed, dict(names or {})
            )
        )

    async def topics_list(self) -> list[Topic]:
        return [Topic(**r) for r in await self.pool.fetch(Q("topics_list"))]

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
            updated = affected(await conn.execute(Q("import_update_contacts")))
            lap("update_contacts")
            created = affected(await conn.execute(Q("import_insert_contacts"), default_locale))
            lap("insert_contacts")
            await conn.execute(Q("import_resolve_ids"))
            await conn.fetchval(Q("import_lock_contacts"))
            lap("resolve_ids")
            consents = affected(
                await conn.execute(Q("import_insert_consents"), import_id, file_name)
            )
            lap("insert_consents")
            topics = affected(await conn.execute(Q("import_insert_topics"), import_id))
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
                result.as_dict(),
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
            added = affected(
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
                {"added": added, "reason": reason, "scope": scope},
            )
        return SuppressionImportResult(valid, rejected, added)

    async def contact_story(self, email: str, email_hash: bytes) -> ContactStory | None:
        """The contact, its ledger in order, its preferences and the suppressions on its address."""
        async with self.pool.acquire() as conn:
            contact = await conn.fetchrow(Q("contact_by_email"), email)
            held = await conn.fetch(Q("suppressions_for_hash"), email_hash)
            suppressions = tuple(
                SuppressionLine(**{**dict(r), "detail": dict(r["detail"] or {})}) for r in held
            )
            if contact is None:
                return ContactStory(None, suppressions=suppressions) if suppressions else None
            cid = contact["id"]
            return ContactStory(
                Contact(**contact),
                ledger=tuple(LedgerLine(**r) for r in await conn.fetch(Q("contact_ledger"), cid)),
                topics=tuple(
                    TopicPreference(**r) for r in await conn.fetch(Q("contact_topic_prefs"), cid)
                ),
                channels=tuple(
                    ChannelPreference(**r)
                    for r in await conn.fetch(Q("contact_channel_prefs"), cid)
                ),
                suppressions=suppressions,
            )

    async def summary_counts(self) -> dict[str, int]:
        row = await self.pool.fetchrow(Q("summary_counts"))
        assert row is not None  # an aggregate always returns a row
        return {k: int(v) for k, v in row.items()}

    async def contact_rule_inputs(self, email: str) -> ContactRecord | None:
        """What the consent rules need to decide about one contact, as core values."""
        row = await self.pool.fetchrow(Q("contact_rule_inputs"), email)
        if row is None:
            return None
        return ContactRecord(
            email=row["email"],
            name=row["name"],
            locale=row["locale"],
            attributes=row["attributes"],
            last_activity_at=row["last_activity_at"],
            erased=row["erased_at"] is not None,
            ledger=tuple(
                LedgerEntry(
                    id=e["id"],
                    channel=Channel(e["channel"]),
                    action=Action(e["action"]),
                    kind=Kind(e["kind"]) if e["kind"] else None,
                    source=e["source"],
                    obtained_at=datetime.fromisoformat(e["obtained_at"]),
                    ends_at=_when(e["ends_at"]),
                    topic_id=e["topic_id"],
                    obtained_date_only=e["obtained_date_only"],
                )
                for e in row["ledger"]
            ),
            suppressions=tuple(
                Suppression(
                    SuppressionScope(s["scope"]),
                    SuppressionReason(s["reason"]),
                    Channel(s["channel"]) if s["channel"] else None,
                    s["topic_id"],
                )
                for s in row["suppressions"]
            ),
            channel_prefs={Channel(k): v for k, v in row["channels"].items()},
            topic_prefs={int(k): v for k, v in row["topics"].items()},
            subscribed_topics=frozenset(row["topic_slugs"]),
        )


def _when(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


@dataclass(frozen=True, slots=True)
class Topic:
    id: int
    slug: str
    name: str
    names: dict[str, str]  # per language (mailer.core.topics.topic_name falls back)
    description: str
    default_subscribed: bool


@dataclass(frozen=True, slots=True)
class Contact:
    id: int
    email: str
    name: str | None
    locale: str
    attributes: dict[str, Any]
    last_activity_at: datetime | None
    tracking: bool
    erased_at: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class LedgerLine:
    """One consent ledger row as `contacts show` prints it."""

    id: int
    channel: str
    action: str
    kind: str | None
    topic: str | None
    source: str
    obtained_at: datetime
    ends_at: datetime | None
    evidence: dict[str, Any]
    recorded_at: datetime
    obtained_date_only: bool  # given as a date: printed as given (mailer.core.consent_dates)
    ends_date_only: bool


@dataclass(frozen=True, slots=True)
class TopicPreference:
    slug: str
    subscribed: bool
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ChannelPreference:
    channel: str
    enabled: bool
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class SuppressionLine:
    scope: str
    channel: str | None
    topic: str | None
    reason: str
    source: str
    created_at: datetime
    detail: dict[str, Any] | None = None  # the evidence (delivery, inbound message, status)

    def evidence(self) -> str:
        """The evidence in one line: the inbound message, its status or type, the delivery."""
        d = self.detail or {}
        parts = [f"inbound message {d['inbound_id']}"] if d.get("inbound_id") else []
        for key in ("status", "feedback_type"):
            if d.get(key):
                parts.append(str(d[key]))
        if d.get("soft_bounces"):
            parts.append(f"{d['soft_bounces']} soft bounces in {d.get('within_days')} days")
        if d.get("delivery_id"):
            parts.append(f"delivery {d['delivery_id']}")
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class ContactStory:
    """A contact (None: only suppressions are held on the address) and its history."""

    contact: Contact | None
    ledger: tuple[LedgerLine, ...] = ()
    topics: tuple[TopicPreference, ...] = ()
    channels: tuple[ChannelPreference, ...] = ()
    suppressions: tuple[SuppressionLine, ...] = ()
