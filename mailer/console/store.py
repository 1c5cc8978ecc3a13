"""The console's own tables (console.sql): operators, sessions, failed logins."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from mailer.console.accounts import Operator, Role
from mailer.db import Queries, affected

# A pooled connection whose transaction a caller holds (a write and its operator-log line).
Conn = asyncpg.Connection | PoolConnectionProxy

Q = Queries("mailer.console", "console.sql")


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    email: str
    role: Role
    locale: str
    password_hash: str | None
    disabled: bool


@dataclass(frozen=True, slots=True)
class AccountListing:
    id: int
    email: str
    role: Role
    locale: str
    has_password: bool
    disabled: bool
    created_at: datetime
    last_seen_at: datetime | None


@dataclass(frozen=True, slots=True)
class Upload:
    """A file uploaded for import in the console, and how its import ended."""

    id: int
    kind: str  # contacts | suppressions
    file_name: str
    operator_email: str
    options: Mapping[str, Any]
    state: str  # running | done | refused | failed | interrupted (its process died)
    import_id: int | None
    summary: Mapping[str, Any]
    error: str | None
    rows_rejected: int
    has_rejects: bool
    started_at: datetime
    finished_at: datetime | None
    rejects_erased_at: datetime | None  # its rejects held an address since erased


@dataclass(frozen=True, slots=True)
class ImportRecord:
    """A row of `imports`, and the console upload behind it if any."""

    id: int
    kind: str
    file_name: str
    rows_read: int
    rows_valid: int
    rows_rejected: int
    imported_by: str
    imported_at: datetime
    upload_id: int | None
    operator_email: str | None


@dataclass(frozen=True, slots=True)
class SuppressionListed:
    """A suppression as the console lists it: by the hash of its address."""

    id: int
    scope: str
    channel: str | None
    topic: str | None
    reason: str
    source: str
    created_at: datetime
    email_hash: bytes

    @property
    def hash_prefix(self) -> str:
        """The start of the address's SHA-256, enough to tell rows apart."""
        return self.email_hash.hex()[:12]


def _account(row: asyncpg.Record | None) -> Account | None:
    if row is None:
        return None
    return Account(
        row["id"],
        row["email"],
        Role.parse(row["role"]),
        row["locale"],
        row["password_hash"],
        row["disabled"],
    )


class ConsoleStore:
    """Named queries of console.sql on a pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def operator_add(
        self,
        email: str,
        role: Role,
        locale: str,
        *,
        password_hash: str | None = None,
        setup_token_hash: bytes | None = None,
        setup_expires_at: datetime | None = None,
        conn: Conn | None = None,
    ) -> int | None:
        """The new operator's id, or None when the address already has an account (on
        `conn`'s transaction if given: the caller's, with its operator-log line)."""
        found = await (conn or self.pool).fetchval(
            Q("operator_add"),
            email,
            role.label,
            locale,
            password_hash,
            setup_token_hash,
            setup_expires_at,
        )
        return None if found is None else int(found)

    async def operator_by_email(self, email: str) -> Account | None:
        return _account(await self.pool.fetchrow(Q("operator_by_email"), email))

    async def operator_by_setup_token(self, token_hash: bytes) -> Account | None:
        return _account(await self.pool.fetchrow(Q("operator_by_setup_token"), token_hash))

    async def operator_set_password(
        self, operator_id: int, password_hash: str, conn: Conn | None = None
    ) -> None:
        """Set it (on `conn`'s transaction if given: the caller's, with its log line)."""
        await (conn or self.pool).execute(Q("operator_set_password"), operator_id, password_hash)

    async def operator_set_locale(self, operator_id: int, locale: str) -> None:
        await self.pool.execute(Q("operator_set_locale"), operator_id, locale)

    async def operators_list(self) -> list[AccountListing]:
        rows = await self.pool.fetch(Q("operators_list"))
        return [
            AccountListing(
                r["id"],
                r["email"],
                Role.parse(r["role"]),
                r["locale"],
                r["has_password"],
                r["disabled"],
                r["created_at"],
                r["last_seen_at"],
            )
            for r in rows
        ]

    async def session_create(
        self, token_hash: bytes, operator_id: int, csrf: str, ip: str | None, agent: str | None
    ) -> None:
        await self.pool.execute(Q("session_create"), token_hash, operator_id, csrf, ip, agent)

    async def session_touch(
        self, token_hash: bytes, idle_s: float, absolute_s: float
    ) -> Operator | None:
        row = await self.pool.fetchrow(Q("session_touch"), token_hash, idle_s, absolute_s)
        if row is None:
            return None
        return Operator(
            row["id"],
            row["email"],
            Role.parse(row["role"]),
            row["locale"],
            row["csrf_token"],
            row["created_at"],
        )

    async def session_delete(self, token_hash: bytes) -> None:
        await self.pool.execute(Q("session_delete"), token_hash)

    async def sessions_delete_for_operator(self, operator_id: int) -> None:
        await self.pool.execute(Q("sessions_delete_for_operator"), operator_id)

    async def sessions_sweep(self, idle_s: float, absolute_s: float) -> None:
        await self.pool.execute(Q("sessions_sweep"), idle_s, absolute_s)

    async def login_locked_until(self, keys: list[str]) -> datetime | None:
        found: datetime | None = await self.pool.fetchval(Q("login_locked_until"), keys)
        return found

    async def login_failure_record(
        self,
        keys: list[str],
        *,
        max_failures: int,
        ip_max_failures: int,
        lockout_s: float,
        lockout_max_s: float,
        quiet_window_s: float,
    ) -> datetime | None:
        """Count a failure against each key (from zero again after a quiet window); the
        latest lock it caused, if any."""
        rows = await self.pool.fetch(
            Q("login_failure_record"),
            keys,
            max_failures,
            lockout_s,
            lockout_max_s,
            ip_max_failures,
            quiet_window_s,
        )
        locks = [r["locked_until"] for r in rows if r["locked_until"] is not None]
        return max(locks, default=None)

    async def login_failures_clear(self, key: str) -> None:
        await self.pool.execute(Q("login_failures_clear"), key)

    # ------------------------------------------------------------ uploads

    async def upload_begin(
        self,
        kind: str,
        file_name: str,
        operator_email: str,
        options: Mapping[str, Any],
        lease_s: float,
    ) -> int:
        """A new upload's id; expired rejects files go on the way (one retention rule)."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(Q("uploads_rejects_expire"))
            return int(
                await conn.fetchval(
                    Q("upload_begin"), kind, file_name, operator_email, dict(options), lease_s
                )
            )

    async def upload_leases_renew(self, upload_ids: list[int], lease_s: float) -> None:
        await self.pool.execute(Q("upload_leases_renew"), upload_ids, lease_s)

    async def uploads_interrupted(self) -> list[int]:
        """Mark the running uploads whose lease ran out `interrupted`; their ids."""
        return [int(r["id"]) for r in await self.pool.fetch(Q("uploads_interrupted"))]

    async def uploads_rejects_expire(self) -> int:
        """Drop the rejects files past their retention (console.sql); how many."""
        return affected(await self.pool.execute(Q("uploads_rejects_expire")))

    async def upload_finish(
        self,
        upload_id: int,
        state: str,
        *,
        import_id: int | None,
        summary: Mapping[str, Any],
        error: str | None,
        rows_rejected: int,
        rejects_gz: bytes | None,
        rejects_hashes: list[bytes] | None,
    ) -> None:
        await self.pool.execute(
            Q("upload_finish"),
            upload_id,
            state,
            import_id,
            dict(summary),
            error,
            rows_rejected,
            rejects_gz,
            rejects_hashes,
        )

    async def upload_get(self, upload_id: int) -> Upload | None:
        row = await self.pool.fetchrow(Q("upload_get"), upload_id)
        return None if row is None else Upload(**dict(row))

    async def upload_rejects(self, upload_id: int) -> bytes | None:
        found: bytes | None = await self.pool.fetchval(Q("upload_rejects"), upload_id)
        return found

    async def uploads_page(self, before: int | None, limit: int) -> list[Upload]:
        return [Upload(**dict(r)) for r in await self.pool.fetch(Q("uploads_page"), before, limit)]

    # ------------------------------------------------------------ listings

    async def import_records_page(self, before: int | None, limit: int) -> list[ImportRecord]:
        rows = await self.pool.fetch(Q("import_records_page"), before, limit)
        return [ImportRecord(**dict(r)) for r in rows]

    async def suppressions_page(
        self, before: int | None, reason: str | None, limit: int
    ) -> list[SuppressionListed]:
        rows = await self.pool.fetch(Q("suppressions_page"), before, reason, limit)
        return [SuppressionListed(**dict(r)) for r in rows]
