"""`mailer api serve` as an operator runs it: serves the document, delivers webhooks from
its watched dispatcher, stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys

import aiohttp
import asyncpg

from mailer.core.settings import Settings
from tests.api_client import make_key
from tests.webhook_receiver import Receiver, receiving


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_api_serve_answers_dispatches_webhooks_and_stops_on_sigterm(
    settings: Settings, db_url: str
) -> None:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": db_url, "MAILER_WEBHOOKS_POLL_S": "0.1"}
    env.pop("MAILER_CONFIG", None)
    key = await make_key(settings, "webhooks:manage", "contacts:write")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mailer", "api", "serve", "--port", str(port),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(60):
            while b"api serving" not in await proc.stdout.readline():
                pass
        base = f"http://127.0.0.1:{port}/api/v1"
        auth = {"Authorization": f"Bearer {key}"}
        async with receiving(Receiver()) as receiver, aiohttp.ClientSession() as http:
            async with http.get(f"{base}/openapi.json") as r:
                assert r.status == 200
            hook = {"url": receiver.url, "events": ["contact.consent.granted"]}
            async with http.post(f"{base}/webhooks", json=hook, headers=auth) as r:
                assert r.status == 201
                receiver.secret = (await r.json())["secret"]
            people = {"contacts": [{"email": "a@example.com", "consent": {
                "kind": "express", "source": "web", "obtained_at": "2026-01-02"}}]}  # fmt: skip
            async with http.post(f"{base}/contacts", json=people, headers=auth) as r:
                assert r.status == 200
            delivered = 'mailer_webhook_deliveries_total{outcome="delivered"} 1.0'
            for _ in range(400):  # the outcome is counted once recorded, after the POST
                async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
                    metrics = await r.text()
                if delivered in metrics:
                    break
                await asyncio.sleep(0.05)
        assert receiver.received[0]["type"] == "contact.consent.granted"
        assert delivered in metrics
        assert "mailer_api_requests_total" in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 30)
    assert code == 0


async def _serve_until_it_exits(
    db_url: str, conn: asyncpg.Connection, break_it: str, *, after_start: bool
) -> tuple[int, str]:
    """Run `mailer api serve`, break a table a background task needs (before or once it
    serves), and wait for the process to end: its exit code and its stderr."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": db_url, "MAILER_WEBHOOKS_POLL_S": "0.1"}
    env.pop("MAILER_CONFIG", None)
    if not after_start:
        await conn.execute(break_it)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mailer", "api", "serve", "--port", str(port),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(60):
            while b"api serving" not in await proc.stdout.readline():
                pass
            if after_start:
                await conn.execute(break_it)
            # Not stalled: the process ends by itself once the task dies.
            code = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return code, (await proc.stderr.read()).decode(errors="replace")


async def test_api_serve_exits_non_zero_when_its_webhook_dispatcher_dies(
    db_url: str, conn: asyncpg.Connection
) -> None:
    code, errors = await _serve_until_it_exits(
        db_url, conn, "ALTER TABLE webhook_deliveries RENAME TO gone", after_start=True
    )
    assert code == 1
    assert "background task dispatcher stopped" in errors
    assert "webhook_deliveries" in errors  # the cause, named


async def test_api_serve_exits_non_zero_when_its_idempotency_purge_dies(
    db_url: str, conn: asyncpg.Connection
) -> None:
    code, errors = await _serve_until_it_exits(
        db_url, conn, "ALTER TABLE api_idempotency RENAME TO gone", after_start=False
    )
    assert code == 1
    assert "background task purge stopped" in errors
