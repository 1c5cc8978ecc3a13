"""Contact import benchmark: 1,000,000 CSV rows (~3 % invalid), end to end.

Prints, from one run against one Postgres:
  (a) the limit: COPY of the same rows, already parsed, into a bare table;
  (b) our import (`mailer contacts import --skip-invalid`): read, validate,
      normalise, COPY to staging, set-based merge into contacts, ledger, topics;
      at 1 M rows also with the consent_current trigger disabled (its cost);
  (c) the naive way: one INSERT per contact and per consent, on a 20,000-row
      sample (listmonk-style), extrapolated as rows/s;
with rows/s, the ratios, and peak RSS of (b) at 100 k and 1 M rows (memory
must not grow with the file). Each measurement runs in a child process on a
fresh database so RSS and caches do not leak between them.

    DATABASE_URL=… python bench/import_contacts.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.scratch import create_database, drop_database, server_dsn  # noqa: E402
from mailer.contacts import imports  # noqa: E402
from mailer.contacts.csvfile import Defaults  # noqa: E402
from mailer.demo.stores import open_stores  # noqa: E402

DATA = ROOT / "bench" / ".data"
KINDS = ["express", "implied_purchase", "implied_inquiry", "implied_contract", ""]
DOMAINS = ["gmail.com", "outlook.com", "yahoo.com", "videotron.ca", "example.org", "bell.net"]


def generate(path: Path, rows: int, seed: int = 1) -> None:
    """A CSV with mixed consent kinds, duplicates, topics, attributes, ~3 % invalid rows."""
    rng = random.Random(seed)
    now = datetime(2026, 11, 1, tzinfo=UTC)
    with path.open("w", encoding="utf-8", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(
            [
                "email",
                "name",
                "locale",
                "consent",
                "consent_source",
                "consent_date",
                "topics",
                "last_activity",
                "attr.vehicle",
            ]
        )
        for i in range(rows):
            kind = rng.choice(KINDS)
            email = f"user{i}.{rng.randint(0, 99)}@{rng.choice(DOMAINS)}"
            date = (now - timedelta(days=rng.randint(1, 2000))).date().isoformat()
            roll = rng.random()
            if roll < 0.01:
                email = f"user{i}@@broken"  # invalid address
            elif roll < 0.02:
                kind = "telepathy"  # unknown consent kind
            elif roll < 0.03:
                date = "31/12/2024"  # not ISO
            out.writerow(
                [
                    email,
                    f"Name {i}",
                    rng.choice(["fr", "en"]),
                    kind,
                    "checkout form" if kind else "",
                    date if kind else "",
                    "service" if rng.random() < 0.7 else "service;promotions",
                    date,
                    rng.choice(["SUV", "sedan", "pickup"]),
                ]
            )


async def fresh_database(dsn: str) -> str:
    url = await create_database(dsn, "bench_import")
    async with open_stores(url) as stores:
        await stores.contacts.topic_upsert("service", "Service")
        await stores.contacts.topic_upsert("promotions", "Promotions", default_subscribed=False)
    return url


async def child_ours(url: str, path: Path) -> dict[str, float]:
    async with open_stores(url) as stores:
        start = time.perf_counter()
        outcome = await imports.import_contacts(
            stores.contacts,
            path,
            Defaults(),
            default_locale="en",
            skip_invalid=True,
            rejects_path=path.with_suffix(".rejects.csv"),
        )
        elapsed = time.perf_counter() - start
    r = outcome.result
    return {
        "seconds": elapsed,
        "rows": r.rows_read,
        "rejected": r.rows_rejected,
        "created": r.contacts_created,
        "consents": r.consents_added,
    }


async def child_copy_limit(url: str, path: Path) -> dict[str, float]:
    """Rows parsed by csv only, COPY'd into a bare table: the floor any import pays."""
    conn = await asyncpg.connect(url)
    await conn.execute(
        "CREATE TABLE bare (email text, name text, locale text, consent text, "
        "source text, day text, topics text, last text, vehicle text)"
    )
    start = time.perf_counter()
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        next(reader)
        await conn.copy_records_to_table("bare", records=(tuple(r) for r in reader))
    elapsed = time.perf_counter() - start
    rows = await conn.fetchval("SELECT count(*) FROM bare")
    await conn.close()
    return {"seconds": elapsed, "rows": rows}


async def child_naive(url: str, path: Path, sample: int) -> dict[str, float]:
    """One INSERT per contact and per consent, each in its own transaction."""
    conn = await asyncpg.connect(url)
    start = time.perf_counter()
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        for i, row in enumerate(reader):
            if i >= sample:
                break
            cid = await conn.fetchval(
                "INSERT INTO contacts (email, email_hash, name, locale) "
                "VALUES ($1, sha256(convert_to($1, 'UTF8')), $2, $3) "
                "ON CONFLICT (email) DO UPDATE SET name = EXCLUDED.name RETURNING id",
                row["email"].lower(),
                row["name"],
                row["locale"],
            )
            if row["consent"] in ("express", "implied_purchase", "implied_inquiry"):
                try:
                    day = datetime.fromisoformat(row["consent_date"]).date()
                except ValueError:
                    continue  # the naive importer still skips what it cannot parse
                await conn.execute(
                    "INSERT INTO consents (contact_id, channel, action, kind, source, obtained_at) "
                    "VALUES ($1, 'email', 'grant', $2, $3, $4::date)",
                    cid,
                    row["consent"],
                    row["consent_source"],
                    day,
                )
    elapsed = time.perf_counter() - start
    await conn.close()
    return {"seconds": elapsed, "rows": sample}


def run_child(kind: str, dsn: str, path: Path, sample: int = 0) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--file", str(path), "--sample", str(sample)],
        env={**os.environ, "DATABASE_URL": dsn},
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


async def child_main(kind: str, path: Path, sample: int) -> None:
    dsn = os.environ["DATABASE_URL"]
    url = await fresh_database(dsn)
    try:
        if kind == "ours":
            result = await child_ours(url, path)
        elif kind == "ours_unsummarised":
            # What keeping consent_current (migration 0005) costs the import.
            conn = await asyncpg.connect(url)
            await conn.execute("ALTER TABLE consents DISABLE TRIGGER consent_current_add")
            await conn.close()
            result = await child_ours(url, path)
        elif kind == "copy":
            result = await child_copy_limit(url, path)
        else:
            result = await child_naive(url, path, sample)
    finally:
        await drop_database(dsn, url)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--child")
    parser.add_argument("--file")
    parser.add_argument("--sample", type=int, default=20_000)
    args = parser.parse_args()
    if args.child:
        asyncio.run(child_main(args.child, Path(args.file), args.sample))
        return
    dsn = server_dsn()
    DATA.mkdir(parents=True, exist_ok=True)
    small, big = DATA / "contacts_100k.csv", DATA / f"contacts_{args.rows}.csv"
    for path, rows in ((small, 100_000), (big, args.rows)):
        if not path.exists():
            print(f"generating {path.name} …", flush=True)
            generate(path, rows)
    limit = run_child("copy", dsn, big)
    ours_small = run_child("ours", dsn, small)
    ours = run_child("ours", dsn, big)
    unsummarised = run_child("ours_unsummarised", dsn, big)
    naive = run_child("naive", dsn, big, args.sample)
    rate = {
        name: r["rows"] / r["seconds"]
        for name, r in (
            ("limit", limit),
            ("ours", ours),
            ("naive", naive),
            ("small", ours_small),
            ("unsummarised", unsummarised),
        )
    }
    print(f"\ncontact import, {args.rows:,} rows ({ours['rejected']:,.0f} invalid), this machine")
    print(f"{'':34}{'rows/s':>12}{'seconds':>10}{'peak RSS':>12}")
    lines = [
        ("(a) bare COPY of parsed rows", "limit", limit),
        ("(b) mailer import, 1 M rows", "ours", ours),
        ("    1 M, consent_current not kept", "unsummarised", unsummarised),
        ("    mailer import, 100 k rows", "small", ours_small),
        ("(c) naive INSERT per row (sample)", "naive", naive),
    ]
    for label, key, result in lines:
        print(
            f"{label:34}{rate[key]:>12,.0f}{result['seconds']:>10.1f}"
            f"{result['peak_rss_mib']:>10.0f} MiB"
        )
    print(
        f"\nours / bare COPY = {rate['ours'] / rate['limit']:.2f}   "
        f"ours / naive = {rate['ours'] / rate['naive']:.1f}x   "
        f"RSS 1 M vs 100 k = {ours['peak_rss_mib'] / ours_small['peak_rss_mib']:.2f}x   "
        f"keeping consent_current: {rate['ours'] / rate['unsummarised']:.2f}x the rate   "
        f"goal >= 50,000 rows/s: {'met' if rate['ours'] >= 50_000 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
