"""The reputation guard where campaigns are sent: `mailer worker` (and `campaign send`) run it,
and the engine's own first-hop refusals count, with no `inbound serve` anywhere."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import sys
import time
import urllib.request

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from mailer.core.settings import Settings
from mailer.demo.stores import Stores
from mailer.inbound.guard import GuardDied, guard_for, guarded
from mailer.inbound.metrics import GuardMetrics
from tests.cli_run import run_cli
from tests.engine_setup import KEYS, add_contacts, engine_for, sample_campaign, settings_for
from tests.smtp_servers import Faults, free_port, smtp_server

RECIPIENTS = 300


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
        return str(page.read().decode())


async def test_a_worker_alone_pauses_a_campaign_whose_first_hop_5xx_rate_crosses_the_threshold(
    stores: Stores, conn: asyncpg.Connection, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    emails = await add_contacts(conn, RECIPIENTS)
    await sample_campaign(stores)
    slug = await conn.fetchval("SELECT slug FROM campaigns")
    # One in five refused at RCPT by the first hop: 20 %, far over the 5 % threshold.
    dead = {e: "550 5.1.1 no such user" for e in emails[::5]}
    metrics_port = free_port()
    with smtp_server(Faults(rcpt=dead)) as (port, sink):
        env = {
            **os.environ,
            "DATABASE_URL": db_url,
            "MAILER_SMTP_PORT": str(port),
            "MAILER_TOKEN_KEYS": KEYS,
            "MAILER_ENGINE_METRICS_PORT": str(metrics_port),
            "MAILER_ENGINE_BATCH_SIZE": "10",
            # Slow enough that the whole campaign takes ~10 s: the guard must stop it early.
            "MAILER_THROTTLE_GLOBAL_RATE": "30",
            "MAILER_THROTTLE_DEFAULT_DOMAIN_RATE": "30",
            "MAILER_GUARD_MIN_SAMPLE": "40",
            "MAILER_GUARD_INTERVAL_S": "0.2",
        }
        env.pop("MAILER_CONFIG", None)
        worker = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mailer",
            "worker",
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while await conn.fetchval("SELECT status FROM campaigns") == "running":
                assert time.monotonic() < deadline, "the guard never paused the campaign"
                assert worker.returncode is None
                await asyncio.sleep(0.1)
            assert await conn.fetchval("SELECT status FROM campaigns") == "paused"
            # The pause is the guard's, and the worker exports it for the alert rule.
            text = await asyncio.to_thread(_metrics, metrics_port)
            assert 'mailer_guard_pauses_total{reason="hard_bounce_rate"} 1.0' in text
            worker.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(worker.wait(), 30) == 0
        finally:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()
        received = len(sink.recipients)
    reason = json.loads(await conn.fetchval("SELECT pause_reason FROM campaigns"))
    assert reason["by"] == "reputation guard"
    assert reason["reason"] == "hard_bounce_rate"
    assert reason["sent"] >= 40
    rows = await conn.fetch("SELECT status, count(*) AS n FROM deliveries GROUP BY status")
    counts: dict[str, int] = {r["status"]: r["n"] for r in rows}
    # Stopped early: most of the audience is still queued, and nothing is in flight.
    assert counts.get("queued", 0) > RECIPIENTS // 2, counts
    assert "sending" not in counts
    assert counts.get("sent", 0) == received
    code, out = await run_cli(monkeypatch, db_url, "campaign", "status", slug)
    assert code == 0
    assert "paused by the reputation guard: hard-bounce rate" in out


async def test_a_guard_that_dies_stops_the_engine_beside_it_gracefully_and_says_so(
    stores: Stores, conn: asyncpg.Connection, settings: Settings
) -> None:
    await add_contacts(conn, 200)
    await sample_campaign(stores)
    # A schema the guard's query cannot run on: an error that is not an outage, so it dies.
    await conn.execute("ALTER TABLE complaints RENAME TO complaints_gone")
    stop = asyncio.Event()
    with smtp_server() as (port, _):
        slow = settings_for(port)
        slow = dataclasses.replace(
            slow, throttle=dataclasses.replace(slow.throttle, global_rate=20.0)
        )
        engine = engine_for(stores, slow, stop=stop)
        guard = guard_for(stores.pool, slow, GuardMetrics(CollectorRegistry()))
        with pytest.raises(GuardDied) as died:
            await asyncio.wait_for(guarded(engine.run(), guard, stop), 30)
    assert isinstance(died.value.__cause__, asyncpg.UndefinedTableError)
    assert stop.is_set()
    rows = await conn.fetch("SELECT status, count(*) AS n FROM deliveries GROUP BY status")
    counts = {r["status"]: r["n"] for r in rows}
    # Stopped as on SIGTERM: what was in hand finished or was handed back, nothing in flight.
    assert "sending" not in counts, counts
    assert counts.get("queued", 0) > 0, counts
