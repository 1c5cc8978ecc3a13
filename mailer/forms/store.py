"""Sign-up forms in Postgres: every statement is a named query of forms.sql.

The store borrows connections from a `Lender`: the CLI's plain pool (PoolLender) or the
tracker's deadline-bound pool (mailer/db/bounded.py), so the same operations run behind
either door and a slow database costs a visitor at most the tracker's deadline.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from mailer.core.locks import CONTACT_CREATION
from mailer.db import Queries
from mailer.forms.model import ConsentText, Form, Topic, text_sha256
from mailer.optouts.store import OptOutStore

Q = Queries("mailer.forms", "forms.sql")

Conn = asyncpg.Connection | PoolConnectionProxy


class Lender(Protocol):
    """Lends a connection for one call, in a transaction if asked (BoundedPool's shape)."""

    def connection(
        self, *, transaction: bool = False, readonly: bool = False, timeout_s: float | None = None
    ) -> AbstractAsyncContextManager[Conn]: ...


class PoolLender:
    """A plain asyncpg pool as a Lender (the CLI, the demo, the API)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @asynccontextmanager
    async def connection(
        self, *, transaction: bool = False, readonly: bool = False, timeout_s: float | None = None
    ) -> AsyncIterator[Conn]:
        async with self.pool.acquire() as conn:
            if transaction:
                async with conn.transaction(readonly=readonly):
                    yield conn
            else:
                yield conn


class ConnLender:
    """One connection whose transaction the caller holds (the CLI's write and its
    operator-log line): every call runs on it, one asking for a transaction in a savepoint."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    @asynccontextmanager
    async def connection(
        self, *, transaction: bool = False, readonly: bool = False, timeout_s: float | None = None
    ) -> AsyncIterator[Conn]:
        if transaction:
            # A savepoint takes no access mode: reads here see the caller's writes.
            async with self.conn.transaction():
                yield self.conn
        else:
            yield self.conn


@dataclass(frozen=True, slots=True)
class AddressState:
    """What the database knows about an address that decides a sign-up's fate."""

    blocked: bool  # hard bounce, complaint, erasure, registry, manual: never a mail
    unsubscribed: bool  # its own unsubscribe: only a confirmed double opt-in lifts it
    recently_mailed: bool  # a confirmation mail went to it within the interval


@dataclass(frozen=True, slots=True)
class PendingRequest:
    """A sign-up request as stored; personal fields are None once confirmed."""

    id: int
    form_id: int
    text_id: int
    email_hash: bytes
    state: str
    email: str | None
    name: str | None
    locale: str | None
    topic_ids: tuple[int, ...]
    evidence: Mapping[str, Any] | None
    requested_at: datetime
    expires_at: datetime
    confirmed_at: datetime | None
    expired: bool


# What confirm() asks of its caller: the ledger source and the evidence of both steps.
Compose = Callable[[PendingRequest], tuple[str, Mapping[str, Any]]]


@dataclass(frozen=True, slots=True)
class FormCounts:
    pending: int
    confirmed: int


def _text(row: asyncpg.Record) -> ConsentText:
    return ConsentText(
        row["id"], row["locale"], row["version"], row["text"], bytes(row["sha256"]),
        row["created_at"],
    )  # fmt: skip


def _request(row: asyncpg.Record) -> PendingRequest:
    return PendingRequest(
        id=row["id"],
        form_id=row["form_id"],
        text_id=row["text_id"],
        email_hash=bytes(row["email_hash"]),
        state=row["state"],
        email=row["email"],
        name=row["name"],
        locale=row["locale"],
        topic_ids=tuple(row["topic_ids"]),
        evidence=row["evidence"],
        requested_at=row["requested_at"],
        expires_at=row["expires_at"],
        confirmed_at=row["confirmed_at"],
        expired=row["expired"],
    )


# The idempotency key of a request's confirmation mail is this prefix and the request's id:
# the link by which expiry finds (and scrubs) what the mail left on the transactional lane.
CONFIRMATION_KEY_PREFIX = "signup-confirmation-"


class FormStore:
    """Forms, their consent texts and sign-up requests."""

    def __init__(self, db: Lender) -> None:
        self.db = db

    # ------------------------------------------------------------ forms (CLI)

    async def topic_ids(self, slugs: Sequence[str]) -> dict[str, int]:
        """The ids of the topics named (a slug not in the result does not exist)."""
        async with self.db.connection() as conn:
            rows = await conn.fetch(Q("topics_by_slug"), list(slugs))
        return {r["slug"]: r["id"] for r in rows}

    async def add(
        self,
        *,
        slug: str,
        source: str,
        topic_ids: Sequence[int],
        locales: Sequence[str],
        double_opt_in: bool,
        welcome: str | None,
        redirect_url: str | None,
        origins: Sequence[str],
        proof_of_work: bool,
        texts: Mapping[str, str],
    ) -> int | None:
        """Create a form with version 1 of each text; None when the slug is taken."""
        async with self.db.connection(transaction=True) as conn:
            form_id = await conn.fetchval(
                Q("form_insert"),
                slug,
                source,
                list(topic_ids),
                list(locales),
                double_opt_in,
                welcome,
                redirect_url,
                list(origins),
                proof_of_work,
            )
            if form_id is None:
                return None
            for locale, text in texts.items():
                await conn.fetchval(Q("form_text_add"), form_id, locale, text, text_sha256(text))
        return int(form_id)

    async def edit_text(self, slug: str, locale: str, text: str) -> int | None:
        """Add a version of a form's text; its number, 0 if unchanged, None if no such form."""
        async with self.db.connection(transaction=True) as conn:
            form_id = await conn.fetchval(Q("form_lock"), slug)
            if form_id is None:
                return None
            version = await conn.fetchval(
                Q("form_text_add"), form_id, locale, text, text_sha256(text)
            )
        return int(version or 0)

    async def disable(self, slug: str) -> bool:
        """Stop a form taking sign-ups (its evidence stays); False if no such form."""
        async with self.db.connection() as conn:
            return await conn.fetchval(Q("form_disable"), slug) is not None

    async def form(self, slug: str) -> Form | None:
        """A form with its topics and current texts, or None."""
        async with self.db.connection(transaction=True, readonly=True) as conn:
            row = await conn.fetchrow(Q("form_by_slug"), slug)
            if row is None:
                return None
            return (await self._forms(conn, [row]))[0]

    async def forms(self) -> list[Form]:
        """Every form, by slug."""
        async with self.db.connection(transaction=True, readonly=True) as conn:
            return await self._forms(conn, await conn.fetch(Q("forms_all")))

    async def _forms(self, conn: Conn, rows: Sequence[asyncpg.Record]) -> list[Form]:
        ids = [r["id"] for r in rows]
        texts: dict[int, dict[str, ConsentText]] = {}
        for t in await conn.fetch(Q("form_texts_latest"), ids):
            texts.setdefault(t["form_id"], {})[t["locale"]] = _text(t)
        topic_ids = sorted({t for r in rows for t in r["topic_ids"]})
        topics = {
            t["id"]: Topic(t["id"], t["slug"], t["name"], t["names"] or {})
            for t in await conn.fetch(Q("form_topics"), topic_ids)
        }
        return [
            Form(
                id=r["id"],
                slug=r["slug"],
                source=r["source"],
                locales=tuple(r["locales"]),
                double_opt_in=r["double_opt_in"],
                topics=tuple(topics[t] for t in r["topic_ids"] if t in topics),
                texts=texts.get(r["id"], {}),
                origins=tuple(r["origins"]),
                proof_of_work=r["proof_of_work"],
                welcome=r["welcome"],
                redirect_url=r["redirect_url"],
                disabled_at=r["disabled_at"],
                created_at=r["created_at"],
            )
            for r in rows
        ]

    async def text_history(self, form_id: int) -> list[ConsentText]:
        """Every version of every text of a form, by language then version."""
        async with self.db.connection() as conn:
            return [_text(r) for r in await conn.fetch(Q("form_text_history"), form_id)]

    async def text(self, form_id: int, text_id: int) -> ConsentText | None:
        """One version of one of this form's texts, or None."""
        async with self.db.connection() as conn:
            row = await conn.fetchrow(Q("form_text_by_id"), text_id, form_id)
        return None if row is None else _text(row)

    async def counts(self) -> dict[int, FormCounts]:
        """Pending and confirmed requests per form id."""
        async with self.db.connection() as conn:
            rows = await conn.fetch(Q("form_counts"))
        return {r["form_id"]: FormCounts(r["pending"], r["confirmed"]) for r in rows}

    # ------------------------------------------------------------ sign-up

    async def address_state(self, email_hash: bytes, interval: timedelta) -> AddressState:
        async with self.db.connection() as conn:
            row = await conn.fetchrow(Q("address_state"), email_hash, interval)
        assert row is not None  # a SELECT of three EXISTS always has its row
        return AddressState(row["blocked"], row["unsubscribed"], row["recently_mailed"])

    async def insert_request(
        self,
        *,
        form_id: int,
        text_id: int,
        email_hash: bytes,
        email: str,
        name: str | None,
        locale: str,
        topic_ids: Sequence[int],
        evidence: Mapping[str, Any],
        mailed: bool,
        lifetime: timedelta,
    ) -> tuple[int, datetime]:
        """Store a pending request; its id and request time."""
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                Q("request_insert"),
                form_id,
                text_id,
                email_hash,
                email,
                name,
                locale,
                list(topic_ids),
                dict(evidence),
                mailed,
                lifetime,
            )
        assert row is not None
        return int(row["id"]), row["requested_at"]

    async def drop_request(self, request_id: int) -> None:
        """Forget a request whose confirmation mail could not be queued."""
        async with self.db.connection() as conn:
            await conn.execute(Q("request_unmail"), request_id)

    async def peek(self, request_id: int) -> PendingRequest | None:
        """A request as it stands, read only (the confirmation page's GET)."""
        async with self.db.connection() as conn:
            row = await conn.fetchrow(Q("request_peek"), request_id)
        return None if row is None else _request(row)

    async def confirm(
        self, request_id: int, compose: Compose, interval: timedelta
    ) -> tuple[PendingRequest | None, int | None]:
        """Turn a pending request into the express grant, in one transaction.

        Returns the request as it was (None if unknown) and the new grant's id (None when
        nothing was recorded: already confirmed, expired, or the address blocked since).
        `compose(request)` gives the ledger's source and the evidence of both steps.
        """
        async with self.db.connection(transaction=True) as conn:
            row = await conn.fetchrow(Q("request_lock"), request_id)
            if row is None:
                return None, None
            request = _request(row)
            if request.state != "pending" or request.expired or request.email is None:
                return request, None
            state = await conn.fetchrow(Q("address_state"), request.email_hash, interval)
            if state is not None and state["blocked"]:  # bounced or complained meanwhile
                return request, None
            source, evidence = compose(request)
            args = (request.email, request.email_hash, request.name, request.locale)
            await conn.execute(Q("contact_create_lock"), CONTACT_CREATION)
            contact_id = await conn.fetchval(Q("contact_upsert"), *args)
            if contact_id is None:  # created by a concurrent transaction a moment ago
                contact_id = await conn.fetchval(Q("contact_upsert"), *args)
            await OptOutStore.lock_contact(conn, contact_id)
            await conn.execute(Q("contact_name_fill"), contact_id, request.name)
            grant_id = await conn.fetchval(
                Q("signup_grant"),
                contact_id,
                request.email_hash,
                source,
                dict(evidence),
                list(request.topic_ids),
            )
            await conn.execute(Q("request_confirmed"), request_id)
        return request, int(grant_id)

    async def expire(self, limit: int = 10_000) -> dict[str, int]:
        """Delete requests past their time; pending ones deleted, per form slug.

        With them goes what an unconfirmed request left on the transactional lane: its
        confirmation message is scrubbed and the contact the lane created for it deleted
        (unless something else refers to it), in the same statement (forms.sql).
        """
        async with self.db.connection(transaction=True) as conn:
            await conn.execute(Q("contact_delete_allow"))
            rows = await conn.fetch(Q("requests_expire"), limit, CONFIRMATION_KEY_PREFIX)
        return {r["slug"]: int(r["expired"]) for r in rows}
