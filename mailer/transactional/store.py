"""The transactional messages' Postgres (transactional.sql): enqueue, claim, outcomes, report."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from mailer.core.consent import Channel, Suppression, SuppressionReason, SuppressionScope
from mailer.core.locks import CONTACT_CREATION
from mailer.core.settings import Settings
from mailer.db import Pool, Queries, affected

__all__ = [
    "AddressFacts",
    "Claimed",
    "KnownMessage",
    "MessageRecord",
    "NewMessage",
    "OverrideNote",
    "ReportLine",
    "TransactionalStore",
]

Q = Queries("mailer.transactional", "transactional.sql")
CHANNEL = "mailer_transactional"  # NOTIFY channel: a message is due


@dataclass(frozen=True, slots=True)
class KnownMessage:
    """The message a previous request with the same idempotency key created."""

    id: int
    template: str
    status: str
    refusal: str | None
    email: str | None


@dataclass(frozen=True, slots=True)
class AddressFacts:
    """What the refusal rules need about one address."""

    contact_id: int | None
    erased: bool
    email_enabled: bool | None
    suppressions: tuple[Suppression, ...]


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message to commit (queued, or refused with its reason)."""

    template: str
    version_name: str
    version_sha256: bytes
    version_files: Mapping[str, str]
    definition: Mapping[str, Any]
    basis: str
    email: str | None  # None: refused for erasure, no contact is created or named
    contact_id: int | None  # known already (address_facts), else created with the message
    email_hash: bytes
    domain: str | None
    locale: str | None
    data: Mapping[str, Any]
    idempotency_key: str | None
    status: str  # queued | refused
    refusal: str | None
    note: str | None
    consent: tuple[int, str, str, datetime, bool] | None = None  # id, kind, source, at, date only


@dataclass(frozen=True, slots=True)
class Claimed:
    """A message claimed by a lane, with everything composing and re-checking it needs."""

    id: int
    template: str
    basis: str
    definition: Mapping[str, Any]
    data: Mapping[str, Any]
    locale: str
    enqueued_at: datetime
    attempts: int
    first_attempt_at: datetime | None  # None until its first start
    consent: tuple[str, str, datetime, bool] | None
    domain: str
    email: str
    name: str | None
    tracking: bool
    erased: bool
    version_name: str
    files: Mapping[str, str]
    email_enabled: bool | None
    suppressions: tuple[Suppression, ...]


@dataclass(frozen=True, slots=True)
class ReportLine:
    template: str
    basis: str
    status: str
    refusal: str | None
    overrode: bool
    messages: int


class OverrideNote(NamedTuple):
    """A message delivered through an opt-out, and the rule that allowed it."""

    id: int
    template: str
    basis: str
    status: str
    note: str
    email: str | None


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """One message as `mailer transactional show` prints it."""

    id: int
    template: str
    basis: str
    status: str
    email: str | None
    refusal: str | None
    note: str | None
    idempotency_key: str | None
    attempts: int
    smtp_code: int | None
    smtp_reply: str | None
    skip_reason: str | None
    message_id: str | None
    enqueued_at: datetime
    replied_at: datetime | None
    sent_at: datetime | None
    next_attempt_at: datetime
    data: Mapping[str, Any]
    sha256: bytes | None
    size_bytes: int | None
    render_inputs: Mapping[str, Any] | None
    version_name: str
    files: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class MessageListed:
    """One message in the console's recent list."""

    id: int
    template: str
    basis: str
    status: str
    refusal: str | None
    smtp_code: int | None
    enqueued_at: datetime
    sent_at: datetime | None
    email: str | None


def _suppressions(rows: Sequence[Mapping[str, Any]]) -> tuple[Suppression, ...]:
    return tuple(
        Suppression(
            SuppressionScope(s["scope"]),
            SuppressionReason(s["reason"]),
            Channel(s["channel"]) if s["channel"] else None,
            s["topic_id"],
        )
        for s in rows
    )


class TransactionalStore:
    """The named queries of transactional.sql on a pool; knows where the templates live."""

    def __init__(self, pool: Pool, templates_dir: Path = Path("templates/transactional")) -> None:
        self.pool = pool
        self.templates_dir = templates_dir
        self._versions: dict[tuple[str, bytes], int] = {}

    @classmethod
    def for_settings(cls, pool: Pool, settings: Settings) -> TransactionalStore:
        """On `pool`, with the templates of `transactional.templates_dir`."""
        return cls(pool, Path(settings.transactional.templates_dir))

    # ------------------------------------------------------------ enqueue

    async def message_by_key(self, key: str) -> KnownMessage | None:
        row = await self.pool.fetchrow(Q("message_by_key"), key)
        return None if row is None else KnownMessage(*row.values())

    async def address_facts(self, email: str, email_hash: bytes) -> AddressFacts:
        row = await self.pool.fetchrow(Q("address_facts"), email, email_hash)
        assert row is not None  # one row, with or without a contact
        return AddressFacts(
            row["contact_id"], bool(row["erased"]), row["email_enabled"],
            _suppressions(row["suppressions"]),
        )  # fmt: skip

    async def topic_for_rules(self, slug: str) -> tuple[int, bool] | None:
        row = await self.pool.fetchrow(Q("topic_for_rules"), slug)
        return None if row is None else (row["id"], row["default_subscribed"])

    async def insert(self, new: NewMessage) -> tuple[int, bool]:
        """Commit the message (and the walk-in's contact); (id, False), or the key's (id, True)."""
        version = await self._version(new)
        consent = new.consent or (None, None, None, None, False)
        if new.contact_id is not None or new.email is None:
            # A known contact (or none, refused for erasure): one statement, its own commit.
            message_id = await self.pool.fetchval(
                Q("message_insert"), *self._values(new, version, new.contact_id), *consent, False
            )
        else:
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute(Q("contact_create_lock"), CONTACT_CREATION)
                contact_id = await conn.fetchval(
                    Q("contact_create"), new.email, new.email_hash, new.locale or "en"
                )
                created = contact_id is not None
                if contact_id is None:  # created meanwhile by another request
                    contact_id = await conn.fetchval(Q("contact_find"), new.email)
                message_id = await conn.fetchval(
                    Q("message_insert"), *self._values(new, version, contact_id), *consent, created
                )
        if message_id is not None:
            return int(message_id), False
        # The same key committed first (the insert waited for it): its message is the answer.
        assert new.idempotency_key is not None
        known = await self.message_by_key(new.idempotency_key)
        assert known is not None
        return known.id, True

    async def _version(self, new: NewMessage) -> int:
        # Versions are immutable and never deleted: an id, once known, holds for the process.
        key = (new.version_name, new.version_sha256)
        version = self._versions.get(key)
        if version is None:
            args = (Q("template_version_upsert"), key[0], key[1], dict(new.version_files))
            found = await self.pool.fetchval(*args)
            if found is None:
                # Inserted at the same moment by another request: ours did nothing, and the
                # statement's snapshot predates theirs. A second statement sees it.
                found = await self.pool.fetchval(*args)
            version = self._versions[key] = int(found)
        return version

    @staticmethod
    def _values(new: NewMessage, version: int, contact_id: int | None) -> tuple[object, ...]:
        return (
            new.template,
            version,
            dict(new.definition),
            new.basis,
            contact_id,
            new.domain,
            new.locale,
            dict(new.data),
            new.idempotency_key,
            new.status,
            new.refusal,
            new.note,
        )

    # ------------------------------------------------------------ the lane

    async def claim(self, limit: int, lease_s: float, worker: str) -> list[Claimed]:
        rows = await self.pool.fetch(Q("claim"), limit, lease_s, worker)
        return [
            Claimed(
                id=r["id"],
                template=r["template"],
                basis=r["basis"],
                definition=r["definition"],
                data=r["data"],
                locale=r["message_locale"] or r["locale"],
                enqueued_at=r["enqueued_at"],
                attempts=r["attempts"],
                first_attempt_at=r["first_attempt_at"],
                consent=None
                if r["consent_kind"] is None
                else (
                    r["consent_kind"],
                    r["consent_source"],
                    r["consent_obtained_at"],
                    r["consent_date_only"],
                ),
                domain=r["domain"],
                email=r["email"] or "",
                name=r["name"],
                tracking=r["tracking"],
                erased=r["erased"],
                version_name=r["version_name"],
                files=r["files"],
                email_enabled=r["email_enabled"],
                suppressions=_suppressions(r["suppressions"]),
            )
            for r in rows
        ]

    async def record_outcome(
        self,
        message_id: int,
        worker: str,
        status: str,
        *,
        code: int | None = None,
        reply: str | None = None,
        skip_reason: str | None = None,
        retry_at: datetime | None = None,
        smtp_message_id: str | None = None,
        archive: Mapping[str, Any] | None = None,
        sha256: bytes | None = None,
        size: int | None = None,
        refusal: str | None = None,
        hard_bounce: bool = False,
    ) -> bool:
        """Write one outcome (and the archive); False when the claim no longer held."""
        written = await self.pool.fetchval(
            Q("record_outcome"),
            message_id,
            worker,
            status,
            code,
            reply,
            skip_reason,
            retry_at,
            smtp_message_id,
            None if archive is None else dict(archive),
            sha256,
            size,
            refusal,
            hard_bounce,
        )
        return bool(written)

    async def release(self, ids: Sequence[int], worker: str) -> int:
        if not ids:
            return 0
        return affected(await self.pool.execute(Q("release"), list(ids), worker))

    async def renew_leases(self, ids: Sequence[int], lease_s: float, worker: str) -> None:
        if ids:
            await self.pool.execute(Q("renew_leases"), list(ids), lease_s, worker)

    async def sweep_leases(self) -> int:
        """Hand back dead workers' claimed messages; their started ones become uncertain."""
        return int(await self.pool.fetchval(Q("sweep_leases")))

    async def start_sending(self, message_id: int, worker: str) -> bool:
        """The start mark and last check, committed: True when the message may go now."""
        return await self.pool.fetchval(Q("start_sending"), message_id, worker) is not None

    @contextlib.asynccontextmanager
    async def notifications(self, wake: Callable[[], None]) -> AsyncIterator[None]:
        """Call `wake` whenever a message is enqueued, for the block's lifetime (LISTEN)."""

        def listener(*_: object) -> None:
            wake()

        async with self.pool.acquire() as conn:
            await conn.add_listener(CHANNEL, listener)
            try:
                yield
            finally:
                with contextlib.suppress(Exception):  # a dead connection has no listener left
                    await conn.remove_listener(CHANNEL, listener)

    # ------------------------------------------------------------ report

    async def report(self, since: datetime) -> list[ReportLine]:
        rows = await self.pool.fetch(Q("report"), since)
        return [ReportLine(*r.values()) for r in rows]

    async def report_notes(self, since: datetime, limit: int = 50) -> list[OverrideNote]:
        rows = await self.pool.fetch(Q("report_notes"), since, limit)
        return [OverrideNote(*r.values()) for r in rows]

    async def message(self, message_id: int) -> MessageRecord | None:
        row = await self.pool.fetchrow(Q("message_show"), message_id)
        if row is None:
            return None
        values = dict(row)
        values.pop("template_version_id")
        return MessageRecord(**values)

    async def messages_page(
        self, before: int | None, template: str | None, limit: int
    ) -> list[MessageListed]:
        """Messages newest first, below id `before`, of one template or all."""
        rows = await self.pool.fetch(Q("messages_page"), before, template, limit)
        return [MessageListed(**dict(r)) for r in rows]
