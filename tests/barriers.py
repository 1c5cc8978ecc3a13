"""Waits on a condition, never on the clock: what a test checks after one of these is final."""

from __future__ import annotations

import asyncio
import time

import asyncpg


async def waiting_on_a_lock(conn: asyncpg.Connection, sessions: int = 1) -> None:
    """Return once `sessions` other sessions of this database wait on a lock (Postgres says so)."""
    deadline = time.monotonic() + 30
    while True:
        waiting = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        if waiting >= sessions:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{waiting} session(s) waiting on a lock, expected {sessions}")
        await asyncio.sleep(0.01)
