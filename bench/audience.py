"""Audience benchmark: 1,000,000 contacts, ~2.5 ledger rows each, 5 topics,
100,000 suppressions, 50,000 topic opt-outs.

Prints, in one run against one Postgres:
  (a) the floor: one scan of contacts joined to a per-contact count of their
      ledger rows (the least any one-pass audience must read);
  (b) the audience with a reason for every exclusion (`mailer campaign audience`);
  (c) the launch: the audience with its reasons computed again and frozen into
      one delivery row per eligible contact, for three campaigns in turn (the
      deliveries table grows from 0 to 1.4 M rows, as it would in service);
  (d) the naive way, per contact: fetch its ledger, preferences and
      suppressions and run the Python rules, on a 5,000-contact sample,
      extrapolated to 1 M;
with the ratios, the goal (computing the audience with its reasons and
freezing it, which one launch does, <= 10 s), and EXPLAIN's scan types.
(b) runs three times and (c) once per campaign: min / median / max.

    DATABASE_URL=… python bench/audience.py [--contacts 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.scratch import create_database, drop_database, server_dsn  # noqa: E402
from mailer.campaigns import audience  # noqa: E402
from mailer.demo.stores import Stores, open_stores  # noqa: E402

AT = datetime(2026, 11, 1, tzinfo=UTC)

# Synthetic data in SQL: a million rows per statement, no Python loop.
SETUP = [
    "INSERT INTO topics (slug, name, default_subscribed) "
    "SELECT 'topic' || i, 'Topic ' || i, i <= 3 FROM generate_series(1, 5) i",
    "INSERT INTO contacts (email, email_hash, locale, last_activity_at, attributes) "
    "SELECT e, sha256(convert_to(e, 'UTF8')), CASE WHEN i % 2 = 0 THEN 'fr' ELSE 'en' END, "
    "  timestamptz '2026-11-01' - (i % 900) * interval '1 day', "
    "  jsonb_build_object('vehicle', (ARRAY['SUV','sedan','pickup'])[1 + i % 3]) "
    "FROM (SELECT i, 'user' || i || '@' || (ARRAY['gmail.com','outlook.com','yahoo.com',"
    "  'videotron.ca','example.org'])[1 + i % 5] AS e FROM generate_series(1, $1) i) s",
    # ~2.5 ledger rows per contact: grants of every kind, some withdrawals.
    "INSERT INTO consents (contact_id, channel, action, kind, source, obtained_at, ends_at) "
    "SELECT c.id, CASE WHEN r % 7 = 0 THEN 'sms' ELSE 'email' END, "
    "  CASE WHEN (c.id + r) % 11 = 0 THEN 'withdraw' ELSE 'grant' END, "
    "  CASE WHEN (c.id + r) % 11 = 0 THEN NULL ELSE (ARRAY['express','implied_purchase',"
    "   'implied_inquiry','implied_contract','implied_purchase'])[1 + (c.id * 7 + r) % 5] END, "
    "  'bench', timestamptz '2026-11-01' - ((c.id * 13 + r * 101) % 1500) * interval '1 day', NULL "
    "FROM contacts c CROSS JOIN generate_series(1, 3) r WHERE r <= 2 OR c.id % 2 = 0",
    "INSERT INTO contact_topics (contact_id, topic_id, subscribed, source) "
    "SELECT c.id, t.id, true, 'bench' FROM contacts c JOIN topics t ON t.id <= 1 + c.id % 3",
    # 50,000 topic opt-outs.
    "UPDATE contact_topics SET subscribed = false WHERE topic_id = 1 AND contact_id % 20 = 0",
    # 100,000 suppressions of every scope and reason.
    "INSERT INTO suppressions (email_hash, scope, channel, topic_id, reason, source) "
    "SELECT c.email_hash, s.scope, CASE WHEN s.scope = 'channel' THEN 'email' END, "
    "  CASE WHEN s.scope = 'topic' THEN 1 END, s.reason, 'bench' "
    "FROM contacts c JOIN LATERAL ("
    "  SELECT (ARRAY['global','channel','topic'])[1 + c.id % 3] AS scope, "
    "  (ARRAY['unsubscribe','hard_bounce','complaint','registry','manual'])[1 + c.id % 5] "
    "  AS reason) s ON true WHERE c.id % 10 = 3",
    # Vacuumed as autovacuum would leave it: the first reader of fresh rows
    # otherwise pays for setting their hint bits, whichever query runs first.
    "VACUUM ANALYZE",
]

FLOOR = (
    "SELECT count(*), sum(l.n) FROM contacts c LEFT JOIN (SELECT contact_id, count(*) AS n "
    "FROM consents GROUP BY contact_id) l ON l.contact_id = c.id"
)


async def naive(conn: asyncpg.Connection, stores: Stores, sample: int) -> float:
    """Per contact: three queries and the Python rules, as a loop-per-row engine would."""
    spec = await stores.campaigns.campaign_spec("bench1")
    assert spec is not None
    emails = [r["email"] for r in await conn.fetch("SELECT email FROM contacts LIMIT $1", sample)]
    start = time.perf_counter()
    for email in emails:
        inputs = await stores.contacts.contact_rule_inputs(email)
        assert inputs is not None
        audience.explain(inputs, spec, AT)
    return time.perf_counter() - start


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=5_000)
    args = parser.parse_args()
    dsn = server_dsn()
    url = await create_database(dsn, "bench_audience")
    try:
        async with open_stores(url, max_size=4, audience_parts=2) as stores:
            conn = await asyncpg.connect(url)
            print(f"building {args.contacts:,} contacts …", flush=True)
            started = time.perf_counter()
            for statement in SETUP:
                if "$1" in statement:
                    await conn.execute(statement, args.contacts)
                else:
                    await conn.execute(statement)
            built = time.perf_counter() - started
            ledger = await conn.fetchval("SELECT count(*) FROM consents")
            sups = await conn.fetchval("SELECT count(*) FROM suppressions")
            optouts = await conn.fetchval(
                "SELECT count(*) FROM contact_topics WHERE NOT subscribed"
            )
            topic = await conn.fetchval("SELECT id FROM topics WHERE slug = 'topic1'")
            store_parts = stores.campaigns.audience_parts
            campaigns = [
                await stores.campaigns.campaign_insert_minimal(f"bench{i}", topic)
                for i in range(1, 4)
            ]
            spec = await stores.campaigns.campaign_spec("bench1")
            assert spec is not None

            t = time.perf_counter()
            await conn.fetchval(FLOOR)
            floor = time.perf_counter() - t
            countings = []
            for _ in range(3):
                t = time.perf_counter()
                counts = await stores.campaigns.audience_counts(spec, AT)
                countings.append(time.perf_counter() - t)
            launches = []
            for campaign in campaigns:
                t = time.perf_counter()
                frozen = await stores.campaigns.freeze_audience(campaign, AT)
                launches.append(time.perf_counter() - t)
            naive_seconds = await naive(conn, stores, args.sample)
            naive_rate = args.sample / naive_seconds
            sql, params = audience.audience_query(spec, AT, None)
            plan = await conn.fetch("EXPLAIN " + sql, *params)
            scans = sorted(
                {
                    line
                    for r in plan
                    for line in [r[0].strip().lstrip("-> ")]
                    if "Scan" in line and " on " in line
                }
            )
            await conn.close()
    finally:
        await drop_database(dsn, url)

    n = args.contacts
    counting, freezing = statistics.median(countings), statistics.median(launches)
    print(
        f"\naudience over {n:,} contacts, {ledger:,} ledger rows, {sups:,} suppressions, "
        f"{optouts:,} topic opt-outs (built in {built:.0f} s)"
    )
    print(f"{'':48}{'seconds (median)':>17}{'contacts/s':>12}{'min / max':>16}")
    rows = [
        ("(a) floor: contacts + ledger count, one scan", [floor]),
        ("(b) audience with reasons (counts), 3 runs", countings),
        ("(c) launch: reasons + deliveries, 3 campaigns", launches),
    ]
    for label, runs in rows:
        mid = statistics.median(runs)
        spread = f"{min(runs):.2f} / {max(runs):.2f}" if len(runs) > 1 else ""
        print(f"{label:48}{mid:>17.2f}{n / mid:>12,.0f}{spread:>16}")
    naive_total = n / naive_rate
    print(
        f"{'(d) naive per-contact loop (extrapolated)':48}{naive_total:>17.0f}{naive_rate:>12,.0f}"
    )
    print(
        f"\n(b)/(a) = {counting / floor:.1f}x the floor   naive/(b) = "
        f"{naive_total / counting:.0f}x slower   "
        f"(c), computing with reasons and freezing = {freezing:.1f} s "
        f"(goal <= 10 s: {'met' if freezing <= 10 else 'NOT met'}; worst {max(launches):.1f} s)   "
        f"(b)+(c), a count shown before the launch = {counting + freezing:.1f} s   "
        f"{store_parts} connections per audience   "
        f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    )
    print(
        f"frozen per launch: {frozen.added:,} deliveries; exclusions: "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
    )
    print("plan scans: " + "; ".join(scans))


if __name__ == "__main__":
    asyncio.run(main())
