"""Contact import benchmark: 1,000,000 CSV rows (~3 % invalid), end to end.

Prints, from one run against one Postgres:
  (a) the floor: COPY of the same rows, already parsed by csv, into a bare table;
  (b) our import (`mailer contacts import --skip-invalid`): read, validate,
      normalise, COPY to staging, set-based merge into contacts, ledger,
      consent_current, topics; at 1 M and 100 k rows, and the same 1 M rows as
      Excel writes them in a French locale (`;`-delimited, Windows-1252,
      `--encoding cp1252`);
  (b') with --before PATH: the import of another checkout (e.g. main) on the
      same files, in the same run;
  (c) the naive way: one INSERT per contact and per consent, on a 20,000-row
      sample (listmonk-style), extrapolated as rows/s;
  (r) the reader alone, no database: CPU µs a row to read, validate, batch and
      encode the file as binary COPY data (beside --before's, and whether both
      produced the same bytes); `--reader-only RUNS` runs only this;
with rows/s, the ratio of each to the floor, peak RSS (memory must not grow
with the file), the CPU seconds of the importing process and of its Postgres
backend (on a shared machine, CPU time varies less than wall time), and the
load average before and after. Each measurement runs in a child process on a
fresh database so RSS and caches do not leak between them.

    DATABASE_URL=… python bench/import_contacts.py [--rows 1000000] [--before /work/main]
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
# BENCH_CODE: another checkout whose mailer package this script measures (the reader alone).
sys.path.insert(0, os.environ.get("BENCH_CODE") or str(ROOT))

from bench.scratch import create_database, drop_database, server_dsn  # noqa: E402
from mailer.contacts import batches, imports  # noqa: E402
from mailer.contacts.csvfile import Defaults  # noqa: E402
from mailer.core.spreadsheet import csv_writer  # noqa: E402
from mailer.demo.stores import open_stores  # noqa: E402

DATA = ROOT / "bench" / ".data"
KINDS = ["express", "implied_purchase", "implied_inquiry", "implied_contract", ""]
DOMAINS = ["gmail.com", "outlook.com", "yahoo.com", "videotron.ca", "example.org", "bell.net"]
# Names as a Quebec dealer's file has them: accents, and Windows-1252's ’ (not in latin-1).
FIRST = ["Marie", "Élise", "François", "Zoë", "Jean", "Hélène", "Noël", "Chloé"]
LAST = ["Côté", "Tremblay", "Gagnon", "Bélanger", "D’Amours", "Lévesque", "Roy", "Pâquet"]
HEADER = [
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


def generate(path: Path, rows: int, seed: int = 1, *, delimiter: str = ",") -> None:
    """A CSV with mixed consent kinds, topics, attributes, accented names, ~3 % invalid rows.

    With delimiter ";", the same rows as Excel writes them in fr-CA: Windows-1252, CRLF.
    """
    rng = random.Random(seed)
    now = datetime(2026, 11, 1, tzinfo=UTC)
    encoding = "cp1252" if delimiter == ";" else "utf-8"
    with path.open("w", encoding=encoding, newline="") as fh:
        out = csv_writer(fh, delimiter=delimiter)
        out.writerow(HEADER)
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
                    f"{rng.choice(FIRST)} {rng.choice(LAST)} {i}",
                    rng.choice(["fr", "en"]),
                    kind,
                    "formulaire en magasin" if kind else "",
                    date if kind else "",
                    "service" if rng.random() < 0.7 else "service;promotions",
                    date,
                    rng.choice(["VUS", "berline", "camionnette"]),
                ]
            )


async def fresh_database(dsn: str) -> str:
    url = await create_database(dsn, "bench_import")
    async with open_stores(url) as stores:
        await stores.contacts.topic_upsert("service", "Service")
        await stores.contacts.topic_upsert("promotions", "Promotions", default_subscribed=False)
    return url


def _backend_cpu(pids: list[int]) -> float | None:
    """CPU seconds of these Postgres backends, when the server runs on this machine."""
    total = 0.0
    try:
        for pid in pids:
            with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return None
    return total


async def child_ours(url: str, path: Path, encoding: str | None) -> dict[str, object]:
    async with open_stores(url) as stores:
        pids = [
            r["pid"]
            for r in await stores.pool.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            )
        ]
        server_before = _backend_cpu(pids)
        client_before = time.process_time()
        start = time.perf_counter()
        outcome = await imports.import_contacts(
            stores.contacts,
            path,
            Defaults(),
            default_locale="en",
            skip_invalid=True,
            rejects_path=path.with_suffix(".rejects.csv"),
            encoding=encoding,
        )
        elapsed = time.perf_counter() - start
        client = time.process_time() - client_before
        server_after = _backend_cpu(pids)
    r = outcome.result
    return {
        "seconds": elapsed,
        "rows": r.rows_read,
        "rejected": r.rows_rejected,
        "created": r.contacts_created,
        "consents": r.consents_added,
        "client_cpu": client,
        "server_cpu": None
        if server_before is None or server_after is None
        else server_after - server_before,
        "steps": r.seconds,
    }


def child_reader(path: Path, encoding: str | None) -> dict[str, object]:
    """The reader alone, no database: the file read, validated, batched and encoded as
    binary COPY data, as the import's reader thread does it; its CPU time per row (CPU,
    not wall: robust to a shared machine's load) and a digest of everything it produced
    (COPY bytes, rejects, file hash), equal between two checkouts that store the same."""
    import hashlib

    from mailer.contacts import copydata
    from mailer.contacts.csvfile import ContactFile, Rejected

    produced = hashlib.sha256()
    tally = batches.Tally()

    def on_reject(row: Rejected) -> None:
        produced.update(f"{row.line}\x00{row.reason}\x00{row.raw!r}\n".encode())

    now = datetime(2026, 12, 1, tzinfo=UTC)
    topics = {"service": 1, "promotions": 2}
    start = time.process_time()
    with ContactFile(path, Defaults(), topics, now, encoding=encoding) as opened:
        for chunk in batches.chunks(opened.rows(), tally, on_reject):
            for data in [copydata.encode(batch) for batch in chunk.batches]:
                produced.update(data)
        produced.update(opened.sha256)
    cpu = time.process_time() - start
    rows = tally.valid + tally.rejected
    return {
        "rows": rows,
        "cpu": cpu,
        "us_per_row": cpu / rows * 1e6,
        "digest": produced.hexdigest(),
    }


async def child_copy_limit(url: str, path: Path) -> dict[str, object]:
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


async def child_naive(url: str, path: Path, sample: int) -> dict[str, object]:
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


def run_child(
    kind: str,
    dsn: str,
    path: Path,
    sample: int = 0,
    *,
    encoding: str | None = None,
    checkout: Path = ROOT,
) -> dict[str, object]:
    """One measurement in a child process; `checkout`: whose bench (and code) runs it."""
    command = [sys.executable, str(checkout / "bench" / "import_contacts.py")]
    command += ["--child", kind, "--file", str(path), "--sample", str(sample)]
    command += ["--encoding", encoding] if encoding else []
    out = subprocess.run(
        command,
        env={**os.environ, "DATABASE_URL": dsn},
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def reader_cpu(path: Path, checkout: Path = ROOT, encoding: str | None = None) -> dict[str, object]:
    """The reader alone (child_reader) in a child process importing `checkout`'s code."""
    command = [sys.executable, str(ROOT / "bench" / "import_contacts.py")]
    command += ["--child", "reader", "--file", str(path)]
    command += ["--encoding", encoding] if encoding else []
    out = subprocess.run(
        command,
        env={**os.environ, "BENCH_CODE": str(checkout.resolve())},
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def compare_readers(path: Path, before: Path | None, runs: int, encoding: str | None) -> None:
    """Reader CPU µs a row, this code and --before alternating, and whether both produced
    the same COPY data and rejects."""
    label = path.name + (f" ({encoding})" if encoding else "")
    for _ in range(runs):
        ours = reader_cpu(path, encoding=encoding)
        line = f"reader CPU, {label}: {num(ours, 'us_per_row'):.2f} µs/row"
        if before is not None:
            theirs = reader_cpu(path, before, encoding)
            same = "same output" if ours["digest"] == theirs["digest"] else "OUTPUT DIFFERS"
            line += f" (--before {num(theirs, 'us_per_row'):.2f} µs/row; {same})"
        print(line, flush=True)


async def child_main(kind: str, path: Path, sample: int, encoding: str | None) -> None:
    if kind == "reader":
        print(json.dumps(child_reader(path, encoding)))
        return
    dsn = os.environ["DATABASE_URL"]
    url = await fresh_database(dsn)
    result: dict[str, object]
    try:
        if kind == "ours":
            result = await child_ours(url, path, encoding)
        elif kind == "ours_sequential":
            # What reading ahead on a thread buys: each chunk parsed only when asked for.
            batches.ReadAhead.prefetch = lambda self: None  # type: ignore[method-assign]
            result = await child_ours(url, path, encoding)
        elif kind == "copy":
            result = await child_copy_limit(url, path)
        else:
            result = await child_naive(url, path, sample)
    finally:
        await drop_database(dsn, url)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result, default=str))


def num(result: dict[str, object], key: str) -> float:
    value = result[key]
    assert isinstance(value, int | float), (key, value)
    return float(value)


def rate(result: dict[str, object]) -> float:
    return num(result, "rows") / num(result, "seconds")


def _line(label: str, result: dict[str, object], floor: float) -> str:
    cpu = "".join(
        f"{float(v):>9.1f}" if isinstance(v, int | float) else f"{'-':>9}"
        for v in (result.get("client_cpu"), result.get("server_cpu"))
    )
    return (
        f"{label:38}{rate(result):>10,.0f}{rate(result) / floor:>8.3f}"
        f"{num(result, 'seconds'):>9.1f}{num(result, 'peak_rss_mib'):>7.0f} MiB{cpu}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--before", type=Path, help="another checkout to measure beside this one")
    parser.add_argument("--child")
    parser.add_argument("--file")
    parser.add_argument("--encoding")
    parser.add_argument("--sample", type=int, default=20_000)
    parser.add_argument(
        "--reader-only",
        type=int,
        metavar="RUNS",
        help="only the reader's CPU a row (no database), RUNS times, beside --before",
    )
    args = parser.parse_args()
    if args.child:
        asyncio.run(child_main(args.child, Path(args.file), args.sample, args.encoding))
        return
    DATA.mkdir(parents=True, exist_ok=True)
    if args.reader_only:
        for delimiter, encoding in ((",", None), (";", "cp1252")):
            suffix = ".semicolon-cp1252" if encoding else ""
            path = DATA / f"contacts_fr_{args.rows}{suffix}.csv"
            if not path.exists():
                print(f"generating {path.name} …", flush=True)
                generate(path, args.rows, delimiter=delimiter)
            compare_readers(path, args.before, args.reader_only, encoding)
        return
    dsn = server_dsn()
    small, big = DATA / "contacts_fr_100k.csv", DATA / f"contacts_fr_{args.rows}.csv"
    office = DATA / f"contacts_fr_{args.rows}.semicolon-cp1252.csv"
    files = ((small, 100_000, ","), (big, args.rows, ","), (office, args.rows, ";"))
    for path, rows, delimiter in files:
        if not path.exists():
            print(f"generating {path.name} …", flush=True)
            generate(path, rows, delimiter=delimiter)
    load_before = os.getloadavg()
    started = time.perf_counter()
    floor = run_child("copy", dsn, big)
    n = f"{args.rows / 1e6:g} M" if args.rows >= 1e6 else f"{args.rows / 1e3:g} k"
    results = [
        (f"(b) mailer import, {n} rows", run_child("ours", dsn, big)),
        (f"    {n}, ';' + cp1252 (Excel fr-CA)", run_child("ours", dsn, office, encoding="cp1252")),
        ("    mailer import, 100 k rows", run_child("ours", dsn, small)),
        ("    100 k, parsing not read ahead", run_child("ours_sequential", dsn, small)),
    ]
    if args.before:
        results += [
            (f"(b') before, {n} rows", run_child("ours", dsn, big, checkout=args.before)),
            ("     before, 100 k rows", run_child("ours", dsn, small, checkout=args.before)),
        ]
    naive = run_child("naive", dsn, big, args.sample)
    floor_again = run_child("copy", dsn, big)  # the machine drifts: the floor before and after
    load_after = os.getloadavg()
    floor_rate = (rate(floor) + rate(floor_again)) / 2
    ours = results[0][1]
    print(
        f"\ncontact import, {args.rows:,} rows ({ours['rejected']:,} invalid), "
        f"{time.perf_counter() - started:,.0f} s in all; load average "
        f"{load_before[0]:.1f} / {load_before[1]:.1f} before, "
        f"{load_after[0]:.1f} / {load_after[1]:.1f} after, on {os.cpu_count()} cores"
    )
    print(f"{'':38}{'rows/s':>10}{'/floor':>8}{'seconds':>9}{'RSS':>11}{'CPU cli':>9}{'CPU pg':>9}")
    print(_line("(a) bare COPY of parsed rows", floor, floor_rate))
    print(_line("    again, at the end", floor_again, floor_rate))
    for label, result in results:
        print(_line(label, result, floor_rate))
    print(_line("(c) naive INSERT per row (sample)", naive, floor_rate))
    growth = num(ours, "peak_rss_mib") / num(results[2][1], "peak_rss_mib")
    print(
        f"\nours / naive = {rate(ours) / rate(naive):.1f}x   "
        f"RSS 1 M vs 100 k = {growth:.2f}x   "
        f"goal >= 50,000 rows/s: {'met' if rate(ours) >= 50_000 else 'NOT met'}"
    )
    print(f"where the {n} import's time goes (s): {ours['steps']}")
    # The reader alone (no database), CPU a row: robust to the machine's load.
    compare_readers(big, args.before, 1, None)


if __name__ == "__main__":
    main()
