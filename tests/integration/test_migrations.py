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
        "INSERT INTO contacts (email, email_hash) VALUES ('a@example.com', '\\x01') RETURNING id"
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
