"""Lease renewal beside the recorder: the two write the same rows, and must not deadlock.

Postgres logged deadlocks between `renew_leases` and the recorder's start and outcome
writers of the same worker (each locks the worker's rows in its own order). One aborted
start round defers its messages by a minute: the kill -9 test once ended with two such rows
still `deferred`, their retry not yet due.
"""

from __future__ import annotations

import asyncio

import asyncpg

from mailer.demo.stores import Stores
from tests.engine_setup import add_contacts, sample_campaign

WORKER = "w1"


async def lock_waits(conn: asyncpg.Connection) -> int:
    """Sessions of this database waiting on a lock, as Postgres says."""
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
    )


async def test_renewing_leases_never_waits_for_a_row_the_recorder_is_writing(
    stores: Stores, conn: asyncpg.Connection, db_url: str
) -> None:
    await add_contacts(conn, 3)
    campaign = await sample_campaign(stores)
    claimed = await stores.send.claim_batch(campaign, 3, 60, WORKER)
    busy, *others = sorted(r.id for r in claimed)
    await conn.execute("UPDATE deliveries SET lease_until = now() + interval '5 seconds'")
    recorder = await asyncpg.connect(db_url)
    try:
        # The recorder in the middle of a statement: one of the worker's rows locked, more
        # to lock after it (in its own order, which a waiting renewal may hold).
        writing = recorder.transaction()
        await writing.start()
        await recorder.execute("UPDATE deliveries SET updated_at = now() WHERE id = $1", busy)
        renewing = asyncio.create_task(stores.send.renew_leases(WORKER, 600))
        # Whichever comes first, without a clock: the renewal ends, or it waits on the lock
        # (Postgres says so; no event to await for that).
        while not renewing.done() and await lock_waits(conn) == 0:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        waited = not renewing.done()
        await writing.rollback()
        await renewing
    finally:
        await recorder.close()
    assert not waited, "renewing leases waited for a row lock the recorder held"
    leases = {
        r["id"]: r["renewed"]
        for r in await conn.fetch(
            "SELECT id, lease_until > now() + interval '1 minute' AS renewed FROM deliveries"
        )
    }
    # The rows nobody else held were renewed; the one being written, a third of a lease later.
    assert leases == {busy: False, **dict.fromkeys(others, True)}
