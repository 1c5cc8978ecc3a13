from __future__ import annotations

import asyncio

import asyncpg
import pytest

from mailer.db import connect, migrations
from mailer.db.migrations import MigrationError, migrate, migration_status


async def test_migrations_apply_to_an_empty_database_and_record_each_version(
    empty_db_url: str,
) -> None:
    async with connect(empty_db_url) as pool:
        applied = await migrate(pool)
        status = await migration_status(pool)
    assert [m.version for m in applied] == [m.version for m in migrations.available()]
    assert all(s.applied_at is not None for s in status)


async def test_migrating_twice_applies_nothing_the_second_time(empty_db_url: str) -> None:
    async with connect(empty_db_url) as pool:
        await migrate(pool)
        assert await migrate(pool) == []


async def test_concurrent_migrators_apply_each_migration_exactly_once(empty_db_url: str) -> None:
    async def migrate_once() -> int:
        async with connect(empty_db_url, max_size=1) as pool:
            return len(await migrate(pool))

    results = await asyncio.gather(*(migrate_once() for _ in range(4)))
    assert sorted(results) == [0, 0, 0, len(migrations.available())]
    conn = await asyncpg.connect(empty_db_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(
            migrations.available()
        )
    finally:
        await conn.close()


async def test_an_applied_migration_edited_afterwards_is_refused(empty_db_url: str) -> None:
    async with connect(empty_db_url) as pool:
        await migrate(pool)
        conn = await asyncpg.connect(empty_db_url)
        try:
            await conn.execute("UPDATE schema_migrations SET checksum = '\\x00' WHERE version = 1")
        finally:
            await conn.close()
        with pytest.raises(MigrationError, match="edited after it was applied"):
            await migrate(pool)


async def test_the_consent_ledger_refuses_updates_and_deletes(conn: asyncpg.Connection) -> None:
    contact = await conn.fetchval(
        "INSERT INTO contacts (email, email_hash)"
        " VALUES ('a@example.com', sha256('a@example.com'::bytea)) RETURNING id"
    )
    await conn.execute(
        "INSERT INTO consents (contact_id, channel, action, kind, source, obtained_at) "
        "VALUES ($1, 'email', 'grant', 'express', 'form', now())",
        contact,
    )
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await conn.execute("UPDATE consents SET source = 'forged'")
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await conn.execute("DELETE FROM consents")


async def test_event_partitions_are_created_per_month(conn: asyncpg.Connection) -> None:
    await conn.execute("SELECT ensure_event_partitions('2026-11-15', 2)")
    await conn.execute("SELECT ensure_event_partitions('2026-11-01', 2)")  # idempotent
    names = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'events'::regclass ORDER BY 1"
    )
    assert [r["relname"] for r in names] == ["events_2026_11", "events_2026_12", "events_default"]


async def test_a_contact_hash_that_is_not_its_address_digest_is_refused(
    conn: asyncpg.Connection,
) -> None:
    """The hash has no unique index of its own (an import paid a random-page insert per
    contact for it): it is checked to be the address's digest, so the address's unique index
    makes it unique, and a suppression keyed by it always meets its contact."""
    with pytest.raises(asyncpg.CheckViolationError, match="contacts_email_hash_is_digest"):
        await conn.execute(
            "INSERT INTO contacts (email, email_hash) VALUES ('a@example.com', '\\x01')"
        )
    await conn.execute(
        "INSERT INTO contacts (email, email_hash)"
        " VALUES ('a@example.com', sha256(convert_to('a@example.com', 'UTF8')))"
    )
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute(
            "INSERT INTO contacts (email, email_hash)"
            " VALUES ('a@example.com', sha256(convert_to('a@example.com', 'UTF8')))"
        )
    # Erased: neither address nor hash.
    await conn.execute("UPDATE contacts SET email = NULL, email_hash = NULL, erased_at = now()")


async def test_migrating_repairs_a_contact_hash_that_is_not_its_address_digest(
    empty_db_url: str,
) -> None:
    mine = next(m for m in migrations.available() if m.name == "import_indexes")
    conn = await asyncpg.connect(empty_db_url)
    try:
        async with connect(empty_db_url, max_size=1) as pool:
            await pool.execute(migrations.Q("migrations_bootstrap"))
            for m in migrations.available():
                if m.version >= mine.version:
                    break
                async with pool.acquire() as c, c.transaction():
                    await c.execute(m.sql)
                    await c.execute(
                        migrations.Q("migrations_record"), m.version, m.name, m.checksum
                    )
            await conn.execute(
                "INSERT INTO contacts (email, email_hash) VALUES ('a@example.com', '\\x01')"
            )
            await migrate(pool)
        digest = await conn.fetchval("SELECT sha256(convert_to('a@example.com', 'UTF8'))")
        assert await conn.fetchval("SELECT email_hash FROM contacts") == digest
    finally:
        await conn.close()
