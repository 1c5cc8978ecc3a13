"""kill -9 of worker processes at random points: nobody gets the campaign twice, nobody is lost."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from collections import Counter

import asyncpg

from mailer.demo.stores import Stores
from tests.engine_setup import KEYS, add_contacts, sample_campaign
from tests.smtp_servers import smtp_server

RECIPIENTS = 20_000
KILLS = 20


def worker_env(db_url: str, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": db_url,
        "MAILER_SMTP_PORT": str(port),
        "MAILER_TOKEN_KEYS": KEYS,
        "MAILER_ENGINE_METRICS_PORT": "0",
        "MAILER_ENGINE_LEASE_SECONDS": "10",
        "MAILER_ENGINE_BATCH_SIZE": "100",
        "MAILER_THROTTLE_GLOBAL_RATE": "100000",
        "MAILER_THROTTLE_DEFAULT_DOMAIN_RATE": "100000",
        "MAILER_THROTTLE_DEFAULT_DOMAIN_CONCURRENCY": "8",
    }


async def start_worker(env: dict[str, str], *extra: str) -> asyncio.subprocess.Process:
    """A `mailer worker` process, returned once it says it runs (its signal handlers are set)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mailer",
        "worker",
        *extra,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    async with asyncio.timeout(60):
        while b"running" not in await proc.stdout.readline():
            pass
    return proc


async def test_kill_9_at_random_points_never_sends_twice_and_leaves_no_row_unresolved(
    stores: Stores, conn: asyncpg.Connection, db_url: str
) -> None:
    domains = tuple(f"d{i}.example" for i in range(8))
    await add_contacts(conn, RECIPIENTS, domains=domains)
    await sample_campaign(stores)
    rng = random.Random(7)
    in_flight_at_kills = 0
    with smtp_server() as (port, sink):
        env = worker_env(db_url, port)
        workers = [await start_worker(env) for _ in range(2)]
        for _ in range(KILLS):
            await asyncio.sleep(rng.uniform(0.2, 1.2))
            victim = rng.randrange(len(workers))
            in_flight_at_kills += await conn.fetchval(
                "SELECT count(*) FROM deliveries WHERE status = 'sending'"
            )
            workers[victim].send_signal(signal.SIGKILL)
            await workers[victim].wait()
            workers[victim] = await start_worker(env)
        for proc in workers:
            proc.send_signal(signal.SIGTERM)  # graceful: finish, hand back, exit 0
            assert await proc.wait() == 0
        # Leases of the killed workers expire; a last worker sweeps them and finishes.
        await asyncio.sleep(11)
        final = await start_worker(env, "--until-idle")
        assert await final.wait() == 0
        received = Counter(sink.recipients)
    rows: dict[str, int] = {
        r["status"]: r["n"]
        for r in await conn.fetch("SELECT status, count(*) AS n FROM deliveries GROUP BY status")
    }
    duplicates = {address: n for address, n in received.items() if n > 1}
    assert duplicates == {}
    assert set(rows) <= {"sent", "uncertain"}, rows
    assert rows.get("sent", 0) + rows.get("uncertain", 0) == RECIPIENTS
    assert rows.get("uncertain", 0) <= in_flight_at_kills
    sent = {
        r["email"]
        for r in await conn.fetch(
            "SELECT c.email FROM deliveries d JOIN contacts c ON c.id = d.contact_id "
            "WHERE d.status = 'sent'"
        )
    }
    # Every row marked sent was received; what the sink got beyond that is uncertain rows.
    assert sent <= set(received)
    assert len(received) - len(sent) <= rows.get("uncertain", 0)
