"""Transactional lane benchmark: enqueue-to-250 latency with a campaign idle and at full speed.

In one run, one `mailer worker` process (engine + transactional lane, uvloop, one render
process, as an operator runs it) against a minimal SMTP sink in its own process
(mailer.demo.sink), on a scratch database:
  (1) idle: notices enqueued every --every seconds through the ENQUEUE operation
      (mailer/transactional/enqueue.py), no campaign running;
  (2) a campaign of --recipients launched; once it runs at full speed, three windows of
      --window seconds: (A) campaign alone, (B) campaign + notices every --every seconds,
      (C) campaign alone again.
Latency: from the committed enqueue to the relay's 250 (both stamped by Postgres:
transactional_messages.enqueued_at, replied_at). Campaign throughput: deliveries sent per
second in each window (deliveries.sent_at). Goals (issue #18): p99 under load <= 2 x idle p99
and under one second; B's campaign rate >= 90 % of the mean of A and C.

    DATABASE_URL=… python bench/transactional.py [--recipients 100000] [--connections 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.scratch import create_database, drop_database, server_dsn  # noqa: E402
from bench.send import CONSENTS_SQL, CONTACTS_SQL, KEYS, TEMPLATES, free_port, listening  # noqa: E402
from mailer.campaigns import lifecycle  # noqa: E402
from mailer.demo.stores import open_stores  # noqa: E402
from mailer.transactional.enqueue import enqueue  # noqa: E402
from mailer.transactional.store import TransactionalStore  # noqa: E402

PARTS = {"order": "BC-1", "part": "Front brake pads", "vehicle": "Toyota RAV4 2019"}


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def notices(store: TransactionalStore, tag: str, seconds: float, every: float) -> list[int]:
    """Enqueue a notice every `every` seconds for `seconds`; their ids."""
    ids = []
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        started = time.monotonic()
        result = await enqueue(
            store,
            template="parts_received",
            to=f"walkin-{tag}-{i}@d{i % 20}.example",
            data={**PARTS, "order": f"{tag}-{i}"},
            idempotency_key=f"{tag}-{i}",
        )
        ids.append(result.message_id)
        i += 1
        await asyncio.sleep(max(0.0, every - (time.monotonic() - started)))
    return ids


async def latencies(store: TransactionalStore, ids: list[int]) -> list[float]:
    """Enqueue-to-reply seconds of these messages, once every one has its reply."""
    for _ in range(600):
        rows = await store.pool.fetch(
            "SELECT extract(epoch FROM replied_at - enqueued_at) AS s, status "
            "FROM transactional_messages WHERE id = ANY($1::bigint[])",
            ids,
        )
        if all(r["s"] is not None for r in rows) and len(rows) == len(ids):
            bad = [r["status"] for r in rows if r["status"] != "sent"]
            assert not bad, bad
            return [float(r["s"]) for r in rows]
        await asyncio.sleep(0.1)
    raise SystemExit("transactional messages not sent within a minute")


async def sent_between(store: TransactionalStore, start: datetime, end: datetime) -> int:
    return int(
        await store.pool.fetchval(
            "SELECT count(*) FROM deliveries WHERE status = 'sent' AND sent_at >= $1 "
            "AND sent_at < $2",
            start,
            end,
        )
    )


async def window(
    store: TransactionalStore, seconds: float, *, with_notices: str | None, every: float
) -> tuple[float, list[int]]:
    """(campaign msgs/s over the window, notices enqueued in it)."""
    start = await store.pool.fetchval("SELECT clock_timestamp()")
    ids: list[int] = []
    if with_notices:
        ids = await notices(store, with_notices, seconds, every)
    else:
        await asyncio.sleep(seconds)
    end = await store.pool.fetchval("SELECT clock_timestamp()")
    rate = await sent_between(store, start, end) / (end - start).total_seconds()
    return rate, ids


def summary(name: str, values: list[float]) -> str:
    return (
        f"{name}: n={len(values)} p50 {quantile(values, 0.5) * 1000:.1f} ms, "
        f"p99 {quantile(values, 0.99) * 1000:.1f} ms, max {max(values) * 1000:.1f} ms"
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--window", type=float, default=10.0, help="seconds per window")
    parser.add_argument("--every", type=float, default=0.1, help="seconds between notices")
    args = parser.parse_args()
    dsn = server_dsn()
    port = free_port()
    url = await create_database(dsn, "bench_tx")
    sink = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mailer.demo.sink", "--port", str(port), cwd=ROOT
    )
    worker = None
    try:
        await listening(port)
        async with open_stores(url, max_size=4) as stores:
            print(f"preparing {args.recipients:,} recipients …", flush=True)
            await stores.contacts.topic_upsert("service", "Service reminders")
            await stores.pool.execute(CONTACTS_SQL, args.recipients)
            await stores.pool.execute(CONSENTS_SQL)
            await stores.pool.execute("ANALYZE")
            text = (TEMPLATES / "service_reminder.toml").read_text(encoding="utf-8")
            text = text.replace("rate = 20.0", "rate = 1000000.0")
            text = text.replace("concurrency = 4", f"concurrency = {args.connections}")
            path = ROOT / "bench" / ".data" / "bench_tx_campaign.toml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            _, definition = await lifecycle.create(stores.campaigns, path, TEMPLATES)
            store = TransactionalStore(stores.pool, TEMPLATES / "transactional")
            env = {
                **os.environ,
                "DATABASE_URL": url,
                "MAILER_SMTP_PORT": str(port),
                "MAILER_SMTP_CONNECTIONS": str(args.connections),
                "MAILER_TOKEN_KEYS": KEYS,
                "MAILER_ENGINE_METRICS_PORT": "0",
                "MAILER_THROTTLE_GLOBAL_RATE": "1000000",
                "MAILER_THROTTLE_DEFAULT_DOMAIN_RATE": "1000000",
                "MAILER_THROTTLE_DEFAULT_DOMAIN_CONCURRENCY": str(args.connections),
                "MAILER_TRANSACTIONAL_TEMPLATES_DIR": str(TEMPLATES / "transactional"),
            }
            worker = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "mailer", "worker", env=env, cwd=ROOT,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            assert worker.stdout is not None
            while b"running" not in await worker.stdout.readline():
                pass
            load_before = os.getloadavg()[0]

            print("(1) idle: notices, no campaign …", flush=True)
            _, idle_ids = await window(store, args.window, with_notices="idle", every=args.every)
            idle = await latencies(store, idle_ids)

            await lifecycle.launch(stores.campaigns, definition.slug, datetime.now(UTC))
            warm = max(2_000, args.recipients // 20)
            sent_sql = "SELECT count(*) FROM deliveries WHERE status = 'sent'"
            while await stores.pool.fetchval(sent_sql) < warm:  # noqa: ASYNC110 - polls Postgres
                await asyncio.sleep(0.2)
            print("(2) campaign at full speed: A alone, B with notices, C alone …", flush=True)
            rate_a, _ = await window(store, args.window, with_notices=None, every=args.every)
            rate_b, busy_ids = await window(
                store, args.window, with_notices="busy", every=args.every
            )
            rate_c, _ = await window(store, args.window, with_notices=None, every=args.every)
            busy = await latencies(store, busy_ids)
            left = await stores.pool.fetchval(
                "SELECT count(*) FROM deliveries WHERE status IN ('queued', 'deferred')"
            )
            load_after = os.getloadavg()[0]
        baseline = (rate_a + rate_c) / 2
        print()
        print(summary("idle          ", idle))
        print(summary("campaign at speed", busy))
        ratio = quantile(busy, 0.99) / quantile(idle, 0.99)
        print(
            f"p99 under load / idle p99: {ratio:.2f} (goal <= 2, and p99 < 1 s: "
            f"{'met' if ratio <= 2 and quantile(busy, 0.99) < 1 else 'NOT met'})"
        )
        print(
            f"campaign: A {rate_a:,.0f} msg/s, B (with notices) {rate_b:,.0f}, "
            f"C {rate_c:,.0f}; B / mean(A, C) = {rate_b / baseline:.3f} (goal >= 0.90); "
            f"campaign still queued at the end: {left:,} (it was at full speed throughout: "
            f"{'yes' if left else 'NO, windows too long for --recipients'})"
        )
        print(f"load average: {load_before:.1f} before, {load_after:.1f} after (2 cores)")
    finally:
        for proc in (worker, sink):
            if proc is not None and proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 30)
                except TimeoutError:
                    proc.kill()
        await drop_database(dsn, url)


if __name__ == "__main__":
    asyncio.run(main())
