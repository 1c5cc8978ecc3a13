"""Discovering the numbered migrations shipped with the package.

Migrations are the only source of the schema: plain SQL files named
`NNNN_description.sql`, applied in order, each in its own transaction, and
recorded with a checksum so an edited, already-applied file is noticed.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from importlib import resources

import asyncpg

from mailer.db.queries import Queries

Q = Queries("mailer.db", "db.sql")

_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")
# pg_advisory_lock key shared by every migrator ("mailer" in ASCII).
ADVISORY_LOCK_KEY = 0x6D61696C6572


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> bytes:
        return hashlib.sha256(self.sql.encode("utf-8")).digest()


def available() -> list[Migration]:
    """All migrations in version order; a malformed name or a gap is an error."""
    folder = resources.files("mailer.db").joinpath("sql/migrations")
    found: list[Migration] = []
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _NAME.fullmatch(entry.name)
        if match is None:
            raise ValueError(f"migration file {entry.name!r}: expected NNNN_description.sql")
        found.append(Migration(int(match.group(1)), match.group(2), entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise ValueError(f"migration {expected:04d} is missing (found {migration.version:04d})")
    return found


class MigrationError(RuntimeError):
    """The database's migration history disagrees with the shipped files."""


@dataclass(frozen=True)
class MigrationState:
    version: int
    name: str
    applied_at: datetime | None


async def migrate(pool: asyncpg.Pool) -> list[Migration]:
    """Apply pending migrations in order, each in its own transaction; return those applied."""
    shipped = available()
    applied_now: list[Migration] = []
    async with pool.acquire() as conn:
        # Lock first: even CREATE TABLE IF NOT EXISTS races between sessions.
        await conn.execute(Q("migrations_lock"), ADVISORY_LOCK_KEY)
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
            await conn.execute(Q("migrations_unlock"), ADVISORY_LOCK_KEY)
    return applied_now


def schema_error(error: BaseException) -> bool:
    """True for the errors of a schema older than the code: a table, column or function missing."""
    return isinstance(
        error,
        asyncpg.UndefinedTableError
        | asyncpg.UndefinedColumnError
        | asyncpg.UndefinedFunctionError
        | asyncpg.UndefinedObjectError,
    )


async def pending(pool: asyncpg.Pool) -> list[Migration]:
    """The shipped migrations this database has not applied; reads only."""
    async with pool.acquire() as conn:
        if not await conn.fetchval(Q("migrations_table_exists")):
            return available()
        done = {r["version"] for r in await conn.fetch(Q("migrations_applied"))}
    return [m for m in available() if m.version not in done]


async def migration_status(pool: asyncpg.Pool) -> list[MigrationState]:
    """Every shipped migration with when it was applied (None = pending)."""
    async with pool.acquire() as conn:
        await conn.execute(Q("migrations_bootstrap"))
        done = {r["version"]: r["applied_at"] for r in await conn.fetch(Q("migrations_applied"))}
    return [MigrationState(m.version, m.name, done.get(m.version)) for m in available()]
