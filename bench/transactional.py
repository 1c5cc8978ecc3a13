"""Transactional lane benchmark: enqueue-to-250 latency with a campaign idle and at full speed.

In one run, one `mailer worker` process (engine + transactional lane, uvloop, one render
process, as an operator runs it) against a minimal SMTP sink in its own process
(mailer.demo.sink), on a scratch database:
  (1) idle: notices enqueued every --every seconds through the ENQUEUE operation
      (mailer/transactional/enqueue.py), no campaign running;
  (2) a campaign of --recipients launched; once it runs at full speed, --rounds pairs of
      --window-second windows, alternating: (A) campaign alone, (B) campaign + notices every
      --every seconds. Alternating short windows, so that a change of the machine's load (2
      cores shared with other work) weighs on both sides alike.
Latency: from the committed enqueue to the relay's 250 (both stamped by Postgres:
transactional_messages.enqueued_at, replied_at). Campaign throughput: deliveries sent per
second in each window (deliveries.sent_at), and per CPU second of the worker (its process
tree: engine, lane, render process), which the machine's other work moves less. Goals (issue
#18): p99 under load <= 2 x idle p99 and under one second; B's campaign rate >= 90 % of A's.

    DATABASE_URL=… python bench/transactional.py [--recipients 100000] [--connections 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
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


def tree_cpu(root: int) -> float:
    """CPU seconds used so far by process `root` and its descendants (Linux /proc)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += times.get(pid, 0.0)
        todo.extend(child for child, parent in parents.items() if parent == pid)
    return total


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
    store: TransactionalStore, seconds: float, worker: int, *, notices_tag: str | None, every: float
) -> tuple[float, float, list[int]]:
    """(campaign msgs/s, campaign msgs per worker CPU second, notices enqueued) of one window."""
    start = await store.pool.fetchval("SELECT clock_timestamp()")
    cpu = tree_cpu(worker)
    ids: list[int] = []
    if notices_tag:
        ids = await notices(store, notices_tag, seconds, every)
    else:
        await asyncio.sleep(seconds)
    end = await store.pool.fetchval("SELECT clock_timestamp()")
    used = tree_cpu(worker) - cpu
    sent = await sent_between(store, start, end)
    return sent / (end - start).total_seconds(), sent / used if used else 0.0, ids


async def commit_probe(store: TransactionalStore, count: int = 100) -> tuple[float, float]:
    """(p50, p99) ms of a trivial transaction: how loaded the shared Postgres is right now."""
    took = []
    async with store.pool.acquire() as conn:
        for _ in range(count):
            started = time.perf_counter()
            async with conn.transaction():
                await conn.execute("SELECT pg_notify('bench_probe', '')")
            took.append(time.perf_counter() - started)
            await asyncio.sleep(0.005)
    return quantile(took, 0.5) * 1000, quantile(took, 0.99) * 1000


def summary(name: str, values: list[float]) -> str:
    return (
        f"{name}: n={len(values)} p50 {quantile(values, 0.5) * 1000:.1f} ms, "
        f"p99 {quantile(values, 0.99) * 1000:.1f} ms, max {max(values) * 1000:.1f} ms"
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--window", type=float, default=4.0, help="seconds per window")
    parser.add_argument("--rounds", type=int, default=4, help="pairs of windows A, B")
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
            probe_before = await commit_probe(store)

            await asyncio.sleep(3)  # the worker's start (render process, pools) settles
            print("(1) idle: notices, no campaign …", flush=True)
            _, _, idle_ids = await window(
                store, args.window * 2, worker.pid, notices_tag="idle", every=args.every
            )
            idle = await latencies(store, idle_ids)

            await lifecycle.launch(stores.campaigns, definition.slug, datetime.now(UTC))
            warm = max(2_000, args.recipients // 20)
            sent_sql = "SELECT count(*) FROM deliveries WHERE status = 'sent'"
            while await stores.pool.fetchval(sent_sql) < warm:  # noqa: ASYNC110 - polls Postgres
                await asyncio.sleep(0.2)
            print(f"(2) campaign at full speed: {args.rounds} x (A alone, B with notices) …")
            alone: list[tuple[float, float]] = []
            loaded: list[tuple[float, float]] = []
            busy_ids: list[int] = []
            for round_ in range(args.rounds):
                rate, per_cpu, _ = await window(
                    store, args.window, worker.pid, notices_tag=None, every=args.every
                )
                alone.append((rate, per_cpu))
                rate, per_cpu, ids = await window(
                    store, args.window, worker.pid, notices_tag=f"busy{round_}", every=args.every
                )
                loaded.append((rate, per_cpu))
                busy_ids += ids
            busy = await latencies(store, busy_ids)
            left = await stores.pool.fetchval(
                "SELECT count(*) FROM deliveries WHERE status IN ('queued', 'deferred')"
            )
            # Idle again, the campaign paused: the machine's load changes over a run, so the
            # idle side is measured before and after the busy one.
            await lifecycle.transition(stores.campaigns, definition.slug, "paused")
            await asyncio.sleep(3)
            _, _, after_ids = await window(
                store, args.window * 2, worker.pid, notices_tag="idle2", every=args.every
            )
            idle_after = await latencies(store, after_ids)
            probe_after = await commit_probe(store)
            load_after = os.getloadavg()[0]
        print()
        print(summary("idle, before     ", idle))
        print(summary("idle, after      ", idle_after))
        print(summary("campaign at speed", busy))
        idle = idle + idle_after
        ratio = quantile(busy, 0.99) / quantile(idle, 0.99)
        met = ratio <= 2 and quantile(busy, 0.99) < 1
        print(f"p99 under load / idle p99: {ratio:.2f} (goal <= 2 and p99 < 1 s: "
              f"{'met' if met else 'NOT met'})")  # fmt: skip
        for name, pairs in (("A alone        ", alone), ("B with notices ", loaded)):
            print(
                f"campaign, {name}: "
                + ", ".join(f"{r:,.0f}" for r, _ in pairs)
                + f" msg/s (mean {statistics.mean(r for r, _ in pairs):,.0f}); per worker CPU s: "
                + ", ".join(f"{c:,.0f}" for _, c in pairs)
            )
        rate_ratio = statistics.mean(r for r, _ in loaded) / statistics.mean(r for r, _ in alone)
        cpu_ratio = statistics.mean(c for _, c in loaded) / statistics.mean(c for _, c in alone)
        print(
            f"B / A: {rate_ratio:.3f} msg/s, {cpu_ratio:.3f} msg per worker CPU s "
            f"(goal >= 0.90); campaign still queued at the end: {left:,}"
        )
        print(f"load average: {load_before:.1f} before, {load_after:.1f} after (2 cores)")
        print(
            "a trivial commit on this Postgres: p50 {:.1f} / p99 {:.1f} ms before, "
            "{:.1f} / {:.1f} ms after".format(*probe_before, *probe_after)
        )
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
