"""Contacts in Postgres: topics, the CSV import, suppression lists, a contact's story."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

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
from mailer.core.evidence import InboundEvidence
from mailer.core.locks import CONTACT_CREATION
from mailer.db import Queries, affected

Q = Queries("mailer.contacts", "contacts.sql")
# A pooled connection whose transaction a caller holds (the API's write transaction).
Conn = PoolConnectionProxy
# pg_advisory_xact_lock key of the contact import (see mailer/core/locks.py).
IMPORT_LOCK_KEY = CONTACT_CREATION
# Above every contact id: import_write_ledger's first created id when a batch created none.
_NO_ID = 2**63 - 1


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


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


class ImportRefused(ValueError):
    """An all-or-nothing import found invalid rows; nothing was written."""

    def __init__(
        self,
        rejected: int,
        valid: int,
        *,
        examples: Sequence[Rejected] = (),
        where: Path | None = None,
    ) -> None:
        super().__init__(
            f"{rejected} invalid row(s) out of {rejected + valid}: nothing was imported "
            "(fix the rows listed in the rejects file, or pass --skip-invalid)"
        )
        self.rejected = rejected
        self.valid = valid
        # The first rejected rows, and the file that lists them all.
        self.examples = list(examples)
        self.rejects_file = where


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
    # How the file was read (mailer/contacts/textfile.py).
    encoding: str = "utf-8"
    delimiter: str = ","
    # Seconds per step, kept with the import record (where the time goes).
    seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SuppressionImportResult:
    rows_valid: int
    rows_rejected: int
    added: int


class ContactImport:
    """An import in progress on its connection: batches written, then finished."""

    def __init__(
        self,
        conn: PoolConnectionProxy,
        import_id: int,
        floor: int,
        file_name: str,
        default_locale: str,
    ) -> None:
        self._conn, self.import_id, self._floor = conn, import_id, floor
        self._file_name, self._default_locale = file_name, default_locale
        self._counts = dict.fromkeys(("created", "consents", "topics"), 0)
        self.seconds: dict[str, float] = {}
        self._batches = 0

    async def load(self, batch: Sequence[ContactRow]) -> None:
        """COPY one batch (each address once) into staging, in place of the last one."""
        clock = time.perf_counter()
        await self._conn.execute(Q("import_clear_batch"))
        await self._conn.copy_records_to_table(
            "import_rows", records=batch, columns=_STAGING_COLUMNS
        )
        await self._loaded(clock)

    async def load_copy(self, data: bytes) -> None:
        """COPY one batch already encoded (mailer/contacts/copydata.py), as `load` does."""
        clock = time.perf_counter()
        await self._conn.execute(Q("import_clear_batch"))
        await self._conn.copy_to_table(
            "import_rows", source=_once(data), columns=_STAGING_COLUMNS, format="binary"
        )
        await self._loaded(clock)

    async def _loaded(self, clock: float) -> None:
        if not self._batches:
            await self._conn.execute(Q("import_analyze_batch"))
        self._batches += 1
        self._lap("copy", clock)

    async def merge(self) -> None:
        """Merge the loaded batch set-based: contacts, then ledger, consent_current, topics."""
        conn, counts, lap = self._conn, self._counts, self._lap
        clock = time.perf_counter()
        written = await conn.fetchrow(Q("import_write_contacts"), self._default_locale)
        assert written is not None  # an aggregate always returns a row
        counts["created"] += written["created"]
        clock = lap("contacts", clock)
        if written["found"]:
            await conn.execute(Q("import_lock_found"), self._floor)
            clock = lap("lock_found", clock)
        first_created = written["first_created"]
        ledger = await conn.fetchrow(
            Q("import_write_ledger"),
            self.import_id,
            {"import_id": self.import_id, "file": self._file_name},
            _NO_ID if first_created is None else first_created,
        )
        assert ledger is not None
        counts["consents"] += ledger["consents"]
        counts["topics"] += ledger["topics"]
        lap("ledger_and_topics", clock)

    async def finish(
        self, *, valid: int, rejected: int, file_sha256: bytes, encoding: str, delimiter: str
    ) -> ImportResult:
        """Apply the file's values to the contacts that existed; record the import."""
        conn, counts = self._conn, self._counts
        clock = time.perf_counter()
        updated = int(await conn.fetchval(Q("import_update_contacts"), self._floor))
        suppressed = int(await conn.fetchval(Q("import_suppressed"), self._floor))
        self._lap("update_contacts", clock)
        result = ImportResult(
            import_id=self.import_id,
            rows_read=valid + rejected,
            rows_valid=valid,
            rows_rejected=rejected,
            contacts_created=counts["created"],
            contacts_updated=updated,
            consents_added=counts["consents"],
            topics_added=counts["topics"],
            suppressed=suppressed,
            encoding=encoding,
            delimiter=delimiter,
            seconds={k: round(v, 3) for k, v in self.seconds.items()},
        )
        await conn.execute(
            Q("import_finish"),
            self.import_id,
            result.rows_read,
            result.rows_valid,
            result.rows_rejected,
            result.as_dict(),
            file_sha256,
        )
        return result

    def _lap(self, step: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[step] = self.seconds.get(step, 0.0) + now - since
        return now


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
        conn: Conn | None = None,
    ) -> int:
        """Create or update a topic; return its id.

        `name` None keeps an existing topic's default name (a new one takes the slug);
        `names` per language are merged into those held, a None value removing one. With
        `conn`, in its transaction (the CLI's, which logs the change with it).
        """
        return int(
            await (conn or self.pool).fetchval(
                Q("topic_upsert"), slug, name, description, default_subscribed, dict(names or {})
            )
        )

    async def topics_list(self) -> list[Topic]:
        return [Topic(**r) for r in await self.pool.fetch(Q("topics_list"))]

    @asynccontextmanager
    async def contact_import(
        self,
        *,
        file_name: str,
        default_locale: str,
        conn: PoolConnectionProxy | None = None,
    ) -> AsyncIterator[ContactImport]:
        """One contact import in one transaction: all of it commits, or nothing.

        The caller writes batches as the file is read and finishes; leaving the
        block by an exception (a refused file, invalid rows) rolls everything back.
        With `conn`, the import runs inside that connection's transaction (the API
        commits it with its idempotency record and operator log line).
        """
        if conn is not None:
            async with conn.transaction():
                yield await self._import_begin(conn, file_name, default_locale)
            return
        async with self.pool.acquire() as own, own.transaction():
            yield await self._import_begin(own, file_name, default_locale)

    @staticmethod
    async def _import_begin(
        conn: PoolConnectionProxy, file_name: str, default_locale: str
    ) -> ContactImport:
        await conn.execute(Q("import_lock"), IMPORT_LOCK_KEY)
        await conn.execute(Q("import_session_settings"))
        # The hash is recorded at the end: the file is hashed as it is read.
        import_id = int(await conn.fetchval(Q("import_begin"), "contacts", file_name, b""))
        floor = int(await conn.fetchval(Q("import_id_floor")))
        await conn.execute(Q("import_create_staging"))
        return ContactImport(conn, import_id, floor, file_name, default_locale)

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
        conn: PoolConnectionProxy | None = None,
    ) -> SuppressionImportResult:
        """Suppress (line, address hash) pairs in one transaction; repeats are no-ops.

        With `conn`, inside that connection's transaction (the API's, with its log line).
        """
        valid = 0

        def records() -> Iterator[tuple[int, bytes]]:
            nonlocal valid
            for item in hashes:
                valid += 1
                yield item

        async with contextlib.AsyncExitStack() as stack:
            if conn is None:
                conn = await stack.enter_async_context(self.pool.acquire())
            await stack.enter_async_context(conn.transaction())
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
                None,
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

    async def inbound_evidence(self, email: str, email_hash: bytes) -> list[InboundEvidence]:
        """The inbound messages behind an address's suppressions and opt-outs, oldest first."""
        rows = await self.pool.fetch(Q("contact_inbound_evidence"), email, email_hash)
        return [InboundEvidence.from_row(dict(r)) for r in rows]

    async def contacts_page(self, after: int, limit: int) -> list[ContactSummary]:
        """Live contacts with an id above `after`, in id order (a keyset page)."""
        return [
            ContactSummary(**r) for r in await self.pool.fetch(Q("contacts_page"), after, limit)
        ]

    async def summary_counts(self) -> dict[str, int]:
        row = await self.pool.fetchrow(Q("summary_counts"))
        assert row is not None  # an aggregate always returns a row
        return {k: int(v) for k, v in row.items()}

    async def contacts_search(
        self, query: str, *, after: str = "", limit: int = 50
    ) -> list[ContactListing]:
        """Contacts whose address starts with `query` (when it holds an @ or a dot) or whose
        name contains it; one page in address order, after the address `after`."""
        text = query.strip()
        by_address = "@" in text or "." in text or not text
        rows = await self.pool.fetch(
            Q("contacts_search"), by_address, text.lower() if by_address else text, after, limit
        )
        return [ContactListing(**r) for r in rows]

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
class ContactSummary:
    id: int
    email: str
    name: str | None
    locale: str
    created_at: datetime


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
class ContactListing:
    email: str
    name: str | None
    locale: str
    last_activity_at: datetime | None


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
        """The evidence in one line: the inbound message, its status or type, the delivery
        (a campaign's) or the notice (a transactional message's: numbered apart)."""
        d = self.detail or {}
        parts = [f"inbound message {d['inbound_id']}"] if d.get("inbound_id") else []
        for key in ("status", "feedback_type"):
            if d.get(key):
                parts.append(str(d[key]))
        if d.get("soft_bounces"):
            parts.append(f"{d['soft_bounces']} soft bounces in {d.get('within_days')} days")
        if d.get("delivery_id"):
            parts.append(f"delivery {d['delivery_id']}")
        if d.get("transactional_id"):
            parts.append(f"transactional message {d['transactional_id']}")
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class ContactStory:
    """A contact (None: only suppressions are held on the address) and its history."""

    contact: Contact | None
    ledger: tuple[LedgerLine, ...] = ()
    topics: tuple[TopicPreference, ...] = ()
    channels: tuple[ChannelPreference, ...] = ()
    suppressions: tuple[SuppressionLine, ...] = ()
