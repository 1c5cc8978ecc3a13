"""Operator API benchmark: contacts upsert over HTTP against the CSV import, and webhooks.

In one run, on scratch databases of the server DATABASE_URL names:
  (a) the CSV import (`mailer contacts import`'s operation) of --rows contacts with an
      implied-purchase consent each, in this process: rows/s;
  (b) the same rows through POST /api/v1/contacts in batches of 1,000 to a `mailer api
      serve` process (uvloop, as an operator runs it), --clients requests in flight:
      rows/s and the ratio to (a) (goal: >= 0.5);
  (c) a burst of --burst unsubscribes (8 connections opting out as fast as they can,
      through mailer.optouts, as the tracker and inbound do), with one endpoint subscribed
      to contact.unsubscribed: a `mailer webhooks dispatch` process delivers them to a
      local receiver that verifies every signature (standardwebhooks): events/s, and the
      outbox lag (age of the oldest undelivered event, sampled every 250 ms) during the
      burst and until the last event is delivered.

    DATABASE_URL=… python bench/api.py [--rows 100000] [--burst 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry
from standardwebhooks import Webhook

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.scratch import create_database, drop_database, server_dsn  # noqa: E402
from mailer.api.store import ApiStore  # noqa: E402
from mailer.contacts import imports  # noqa: E402
from mailer.contacts.csvfile import Defaults  # noqa: E402
from mailer.core.settings import WebhookSettings  # noqa: E402
from mailer.core.spreadsheet import csv_writer  # noqa: E402
from mailer.db import connect  # noqa: E402
from mailer.optouts.rules import DIGITAL  # noqa: E402
from mailer.optouts.store import OptOutStore, Withdrawal  # noqa: E402
from mailer.webhooks.dispatcher import WebhookMetrics, dispatch  # noqa: E402
from mailer.webhooks.endpoints import new_secret  # noqa: E402
from mailer.webhooks.store import WebhookStore  # noqa: E402


def people(n: int) -> list[dict[str, Any]]:
    return [
        {
            "email": f"p{i}@d{i % 50}.example",
            "name": f"Person {i}",
            "locale": "fr" if i % 3 else "en",
            "consent": {
                "kind": "implied_purchase",
                "source": "DMS nightly",
                "obtained_at": f"2025-{1 + i % 12:02d}-{1 + i % 28:02d}",
            },
        }
        for i in range(n)
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def csv_import(url: str, rows: list[dict[str, Any]], folder: Path) -> float:
    path = folder / "bench-api.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        out = csv_writer(f)
        out.writerow(["email", "name", "locale", "consent", "consent_source", "consent_date"])
        for r in rows:
            c = r["consent"]
            out.writerow([r["email"], r["name"], r["locale"], c["kind"], c["source"],
                          c["obtained_at"]])  # fmt: skip
    async with connect(url, max_size=2) as pool:
        from mailer.contacts.store import ContactStore

        started = time.perf_counter()
        outcome = await imports.import_contacts(
            ContactStore(pool), path, Defaults(), default_locale="en", skip_invalid=False
        )
        seconds = time.perf_counter() - started
    assert outcome.result.contacts_created == len(rows)
    path.unlink()
    return len(rows) / seconds


async def start(*argv: str, env: dict[str, str], ready: bytes) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mailer", *argv,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, cwd=ROOT,
    )  # fmt: skip
    assert proc.stdout is not None
    async with asyncio.timeout(60):
        while ready not in await proc.stdout.readline():
            pass
    return proc


async def stop(proc: asyncio.subprocess.Process) -> None:
    proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(proc.wait(), 60)


async def api_upsert(url: str, rows: list[dict[str, Any]], clients: int) -> float:
    async with connect(url, max_size=1) as pool:
        _, key = await ApiStore(pool).key_create("bench", ["contacts:write"], None)
    port = free_port()
    env = {**os.environ, "DATABASE_URL": url, "MAILER_API_DISPATCH_WEBHOOKS": "false",
           "MAILER_API_RATE_PER_KEY": "100000", "MAILER_API_RATE_BURST": "100000"}  # fmt: skip
    proc = await start("api", "serve", "--port", str(port), env=env, ready=b"api serving")
    batches = [rows[i : i + 1000] for i in range(0, len(rows), 1000)]
    queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
    for b in batches:
        queue.put_nowait(b)
    headers = {"Authorization": f"Bearer {key}"}
    try:
        async with aiohttp.ClientSession() as http:

            async def client() -> None:
                while not queue.empty():
                    batch = queue.get_nowait()
                    async with http.post(
                        f"http://127.0.0.1:{port}/api/v1/contacts",
                        json={"contacts": batch},
                        headers=headers,
                    ) as r:
                        assert r.status == 200, await r.text()

            started = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(clients)))
            seconds = time.perf_counter() - started
    finally:
        await stop(proc)
    return len(rows) / seconds


async def webhook_burst(url: str, burst: int) -> dict[str, float]:
    received: dict[str, float] = {}
    replayed: dict[str, float] = {}
    all_in = asyncio.Event()
    secret = new_secret()
    verifier = Webhook(secret)

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        verifier.verify(body, dict(request.headers))
        seen = replayed if len(received) >= burst else received
        seen.setdefault(request.headers["webhook-id"], time.perf_counter())
        if len(seen) >= burst:
            all_in.set()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    async with connect(url, max_size=10) as pool:
        ids = [
            r[0] for r in await pool.fetch("SELECT id FROM contacts ORDER BY id LIMIT $1", burst)
        ]
        assert len(ids) == burst
        await WebhookStore(pool).endpoint_add(
            f"http://127.0.0.1:{port}/hook", ["contact.unsubscribed"], secret
        )
        env = {**os.environ, "DATABASE_URL": url}
        dispatcher = await start("webhooks", "dispatch", env=env, ready=b"dispatching")
        lag_max = 0.0
        done = asyncio.Event()

        async def sample() -> None:
            nonlocal lag_max
            while not done.is_set():
                lag_max = max(lag_max, (await WebhookStore(pool).backlog()).oldest_s)
                await asyncio.sleep(0.25)

        async def opt_outs(part: list[int]) -> None:
            async with pool.acquire() as conn:
                for contact_id in part:
                    async with conn.transaction():
                        await OptOutStore.opt_out(conn, Withdrawal(
                            contact_id, [c.value for c in DIGITAL], (), "bench", {}))  # fmt: skip

        sampler = asyncio.create_task(sample())
        started = time.perf_counter()
        await asyncio.gather(*(opt_outs(ids[i::8]) for i in range(8)))
        written = time.perf_counter()
        await all_in.wait()
        finished = time.perf_counter()
        done.set()
        await sampler
        await stop(dispatcher)
        # The dispatcher alone: the same events replayed, all due at once; then once more
        # with the dispatcher in this process (the receiver's), for the same events.
        endpoint = (await WebhookStore(pool).endpoint_list())[0].id
        alone: dict[str, float] = {}
        for where in ("process", "in_process"):
            all_in.clear()
            replayed.clear()
            queued = await WebhookStore(pool).replay(
                endpoint, datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC)
            )
            assert queued == burst
            cpu = time.process_time()
            if where == "process":
                dispatcher = await start("webhooks", "dispatch", env=env, ready=b"dispatching")
                child = cpu_seconds(dispatcher.pid)
                replay_started = time.perf_counter()  # from ready: process start excluded
                await all_in.wait()
                alone["process_s"] = time.perf_counter() - replay_started
                alone["process_cpu"] = cpu_seconds(dispatcher.pid) - child
                await stop(dispatcher)
            else:
                stopping = asyncio.Event()
                replay_started = time.perf_counter()
                task = asyncio.create_task(
                    dispatch(WebhookStore(pool), WebhookSettings(),
                             WebhookMetrics(CollectorRegistry()), stopping)
                )  # fmt: skip
                await all_in.wait()
                alone["in_process_s"] = time.perf_counter() - replay_started
                stopping.set()
                await task
            alone[f"{where}_receiver_cpu"] = time.process_time() - cpu
    await runner.cleanup()
    return {
        "burst_seconds": written - started,
        "optouts_per_s": burst / (written - started),
        "events_per_s": burst / alone["process_s"],
        "in_process_events_per_s": burst / alone["in_process_s"],
        # CPU ms per event: the dispatcher process's, and this process's (the receiver, and
        # in process the dispatcher too).
        "process_ms": 1000 * alone["process_cpu"] / burst,
        "process_receiver_ms": 1000 * alone["process_receiver_cpu"] / burst,
        "in_process_ms": 1000 * alone["in_process_receiver_cpu"] / burst,
        "drain_after_burst_s": finished - written,
        "lag_max_s": lag_max,
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process so far (/proc/PID/stat, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--burst", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=2)
    args = parser.parse_args()
    dsn = server_dsn()
    rows = people(args.rows)
    folder = ROOT / "bench" / ".data"
    folder.mkdir(exist_ok=True)
    urls = [await create_database(dsn, "bench_api") for _ in range(2)]
    try:
        imported = await csv_import(urls[0], rows, folder)
        print(f"(a) CSV import:            {imported:9,.0f} rows/s ({args.rows:,} rows)")
        pushed = await api_upsert(urls[1], rows, args.clients)
        print(
            f"(b) API upsert, 1,000/req: {pushed:9,.0f} rows/s = {pushed / imported:.2f} x import"
        )
        figures = await webhook_burst(urls[1], min(args.burst, args.rows))
        print(
            f"(c) {args.burst:,} unsubscribes in {figures['burst_seconds']:.1f} s "
            f"({figures['optouts_per_s']:,.0f}/s): outbox lag max {figures['lag_max_s']:.1f} s, "
            f"last event {figures['drain_after_burst_s']:.1f} s after the last opt-out"
        )
        print(
            f"(d) dispatcher alone (the burst replayed): {figures['events_per_s']:,.0f} events/s "
            f"as a process ({figures['process_ms']:.2f} ms CPU/event, receiver "
            f"{figures['process_receiver_ms']:.2f}), {figures['in_process_events_per_s']:,.0f} "
            f"events/s in the receiver's process ({figures['in_process_ms']:.2f} ms CPU/event "
            "for both), to a verifying local receiver"
        )
    finally:
        for url in urls:
            await drop_database(dsn, url)


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(main())
    else:
        uvloop.run(main())
