"""Report benchmark: one campaign with 1,000,000 deliveries and 10,000,000 events.

Prints, in one run against one Postgres:
  (a) the baseline: a naive count of the campaign's events (one index-only scan,
      the least any report reading the events table directly must pay);
  (b) the naive report: the same figures as `mailer campaign report` (events,
      unique human / all per kind and link, per hour) computed from the events;
  (c) the first report, which folds all 10 M events into the rollups (once);
  (d) a report with nothing new (median of 5): what an operator waits for;
  (e) a report after 100,000 new events (10 tracker-sized batches);
  (f) the same while another transaction holds the fold's horizon back, so
      the 100,000 are counted as a live tail inside a rolled-back savepoint;
with (a)/(d) and (b)/(d).

    DATABASE_URL=… python bench/report.py [--events 10000000] [--deliveries 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.scratch import create_database, drop_database, server_dsn  # noqa: E402
from mailer.demo.stores import Stores, open_stores  # noqa: E402
from mailer.report import figures as report  # noqa: E402

CHUNK = 1_000_000  # events per INSERT: each chunk is its own transaction, as batches are

DELIVERIES = (
    "INSERT INTO deliveries (campaign_id, contact_id, status, domain, sent_at) "
    "SELECT $1, i, (ARRAY['sent','sent','sent','sent','sent','sent','sent','sent','bounced',"
    "  'skipped'])[1 + i % 10], 'example.com', timestamptz '2026-11-02' "
    "FROM generate_series(1, $2) i"
)
# Events over 14 days on 60 % of the deliveries: 3 opens in 4, clicks over 5 links, 30 %
# flagged machine (privacy proxies open everything). random() after setseed: repeatable.
EVENTS = (
    "INSERT INTO events (occurred_at, kind, delivery_id, campaign_id, link_id, machine) "
    "SELECT timestamptz '2026-11-02' + r.t * interval '14 days', "
    "  CASE WHEN r.k < 0.75 THEN 'open' ELSE 'click' END, "
    "  $2 + (r.d * $3 * 0.6)::bigint, $1, "
    "  CASE WHEN r.k >= 0.75 THEN ($4::bigint[])[1 + (r.k * 1000)::int % 5] END, r.m < 0.3 "
    "FROM (SELECT random() ^ 3 AS t, random() AS k, random() ^ 2 AS d, random() AS m "
    "      FROM generate_series(1, $5)) r"
)
# The report's event figures computed directly from the events: what a report costs
# without rollups (one pass; distinct counts per kind, per link, per hour).
NAIVE = """
SELECT kind, link_id, hour,
       count(*) FILTER (WHERE NOT machine), count(*) FILTER (WHERE machine),
       count(DISTINCT delivery_id), count(DISTINCT delivery_id) FILTER (WHERE NOT machine)
FROM (SELECT kind, coalesce(link_id, 0) AS link_id, delivery_id, machine,
             date_trunc('hour', occurred_at, 'UTC') AS hour
      FROM events WHERE campaign_id = $1) e
GROUP BY GROUPING SETS ((kind), (kind, link_id), (kind, hour))
"""


async def timed(stores: Stores, campaign: int) -> float:
    started = time.perf_counter()
    await report.figures(stores.report, campaign)
    return time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--deliveries", type=int, default=1_000_000)
    args = parser.parse_args()
    dsn = server_dsn()
    url = await create_database(dsn, "bench_report")
    try:
        async with open_stores(url, max_size=4) as stores:
            conn = await asyncpg.connect(url)
            topic = await stores.contacts.topic_upsert("news", "News")
            campaign = await stores.campaigns.campaign_insert_minimal("bench", topic)
            urls = [f"https://example.com/page{i}" for i in range(5)]
            links = list((await stores.send.links_register(campaign, urls)).values())
            print(f"building {args.deliveries:,} deliveries, {args.events:,} events …", flush=True)
            started = time.perf_counter()
            await conn.execute("SELECT ensure_event_partitions('2026-11-01', 2)")
            await conn.execute(DELIVERIES, campaign, args.deliveries)
            first = await conn.fetchval("SELECT min(id) FROM deliveries")
            await conn.execute("SELECT setseed(0.42)")
            for done in range(0, args.events, CHUNK):
                count = min(CHUNK, args.events - done)
                await conn.execute(EVENTS, campaign, first, args.deliveries, links, count)
            await conn.execute("VACUUM ANALYZE")  # index-only scans for the baseline too
            built = time.perf_counter() - started

            t = time.perf_counter()
            counted = await conn.fetchval(
                "SELECT count(*) FROM events WHERE campaign_id = $1", campaign
            )
            baseline = time.perf_counter() - t
            t = time.perf_counter()
            await conn.fetch(NAIVE, campaign)
            naive = time.perf_counter() - t

            cold = await timed(stores, campaign)
            warm = statistics.median([await timed(stores, campaign) for _ in range(5)])

            batch = args.events // 100 // 10  # 100,000 new events in 10 batches
            for _ in range(10):
                await conn.execute(EVENTS, campaign, first, args.deliveries, links, batch)
            incremental = await timed(stores, campaign)

            holder = await asyncpg.connect(url)
            held = holder.transaction()
            await held.start()
            await holder.fetchval("SELECT pg_current_xact_id()")
            for _ in range(10):
                await conn.execute(EVENTS, campaign, first, args.deliveries, links, batch)
            tail = await timed(stores, campaign)
            await held.rollback()
            await holder.close()

            sizes = await conn.fetchrow(
                "SELECT (SELECT count(*) FROM report_firsts) AS firsts,"
                " pg_total_relation_size('report_firsts') AS firsts_bytes,"
                " (SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c"
                "  JOIN pg_inherits i ON i.inhrelid = c.oid"
                "  WHERE i.inhparent = 'events'::regclass) AS events_bytes"
            )
            assert sizes is not None
            figures = await report.figures(stores.report, campaign)
            await conn.close()
    finally:
        await drop_database(dsn, url)

    print(
        f"\n{counted:,} events, {args.deliveries:,} deliveries, one campaign "
        f"(built in {built:.0f} s)"
    )
    rows = [
        ("(a) baseline: naive count of the campaign's events", baseline),
        ("(b) naive report: every event figure from the events", naive),
        ("(c) first report: folds all events once", cold),
        ("(d) report, nothing new (median of 5)", warm),
        (f"(e) report after {10 * batch:,} new events", incremental),
        (f"(f) same, {10 * batch:,} events as a live tail", tail),
    ]
    print(f"{'':56}{'seconds':>9}")
    for label, seconds in rows:
        print(f"{label:56}{seconds:>9.3f}")
    print(
        f"\n(a)/(d) = {baseline / warm:,.0f}x   (b)/(d) = {naive / warm:,.0f}x   "
        f"(b)/(e) = {naive / incremental:,.0f}x   (c)/(b) = {cold / naive:.1f}x"
    )
    print(
        f"rollups: {sizes['firsts']:,} first-seen keys ({sizes['firsts_bytes'] / 2**20:.0f} MiB) "
        f"for {sizes['events_bytes'] / 2**20:,.0f} MiB of events; report shows "
        f"{figures.opens.events + figures.clicks.events:,} events, "
        f"{figures.opens.unique_human:,} unique human openers"
    )


if __name__ == "__main__":
    asyncio.run(main())
