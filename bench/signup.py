"""Sign-up form benchmark: POST /s/FORM with the confirmation mail queued, against the same
tracker's pixel, and a flood from one IP prefix, in one invocation.

One tracker (`python -m tracker`, uvloop) pinned to core 0, wrk on core 1, Postgres unpinned:

  (1) GET /o/TOKEN, the bare tracker's hot route: the yardstick of this run;
  (2) POST /s/FORM, every request a new address from its own /24 (X-Forwarded-For from
      loopback, which the tracker trusts as its proxy): a pending request stored and the
      confirmation mail committed on the transactional lane before the answer; afterwards
      every 200 must be one request row and one queued message;
  (3) POST /s/FORM, all from one /24: after forms.ip_prefix_limit accepted, 429s; the
      tracker's resident memory before and after.

Prints req/s, p99, server CPU per request, the ratios, checks the goal (the flood refused at
>= 5x the rate sign-ups are accepted, memory flat, every accepted sign-up landed), exits 1 if
missed, and writes the figures under "## Sign-up forms" in bench/README.md.

    [DATABASE_URL=…] python bench/signup.py [--seconds 10] [--no-readme]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import sys
import tempfile
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import scratch  # noqa: E402
from bench.tracker import (  # noqa: E402
    AGENT,
    KEYS,
    SERVER_CORE,
    WARMUP_S,
    WRK_CORE,
    Run,
    cpu_seconds,
    free_port,
    run_wrk,
    start,
    stop,
    wait_listening,
)
from mailer.core.tokens import Keyring, Purpose, Token  # noqa: E402
from mailer.db import connect  # noqa: E402
from mailer.demo import pgcluster  # noqa: E402
from mailer.forms.store import FormStore, PoolLender  # noqa: E402

README = ROOT / "bench" / "README.md"
PREFIX_LIMIT = 20
TEXT = "J'accepte de recevoir l'infolettre de Garage Tremblay Automobiles par courriel."


async def prepare(server_dsn: str) -> tuple[str, int]:
    """A fresh database with a form and one sent delivery (for the pixel's token)."""
    dsn = await scratch.create_database(server_dsn, "bench_signup")
    async with connect(dsn, max_size=2) as pool:
        topic = await pool.fetchval(
            "INSERT INTO topics (slug, name) VALUES ('promotions', 'Promotions') RETURNING id"
        )
        campaign = await pool.fetchval(
            "INSERT INTO campaigns (slug, name, topic_id, definition)"
            " VALUES ('bench', 'Bench', $1, '{}') RETURNING id",
            topic,
        )
        contact = await pool.fetchval(
            "INSERT INTO contacts (email, email_hash) VALUES ('u@example.com',"
            " sha256('u@example.com'::bytea)) RETURNING id"
        )
        delivery = await pool.fetchval(
            "INSERT INTO deliveries (campaign_id, contact_id, domain, status, sent_at)"
            " VALUES ($1, $2, 'example.com', 'sent', now()) RETURNING id",
            campaign,
            contact,
        )
        await FormStore(PoolLender(pool)).add(
            slug="bench",
            source="Site web — infolettre",
            topic_ids=[topic],
            locales=["fr"],
            double_opt_in=True,
            welcome=None,
            redirect_url=None,
            origins=[],
            proof_of_work=False,
            texts={"fr": TEXT},
        )
    return dsn, int(delivery)


def fields_of(port: int) -> str:
    """The hidden fields of the served form, as a urlencoded body prefix."""
    page = urllib.request.urlopen(f"http://127.0.0.1:{port}/s/bench").read().decode()
    found = dict(re.findall(r'name="(form_token|text_id|locale)" value="([^"]*)"', page))
    return "&".join(f"{k}={v}" for k, v in found.items())


def scripts(folder: Path, delivery: int, body: str) -> dict[str, Path]:
    """wrk Lua scripts: the pixel, sign-ups from many /24s, a flood from one /24."""
    ring = Keyring.from_spec(KEYS)
    pixel = f"/o/{ring.sign(Token(Purpose.OPEN, delivery, None, int(time.time())))}"
    run = secrets.token_hex(4)  # addresses never repeat across runs of this script
    common = (
        f'wrk.headers["User-Agent"] = "{AGENT}"\n'
        'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n'
        "local n = 0\n"
    )
    signup = (
        common + "request = function()\n  n = n + 1\n"
        "  local a = math.floor(n / 65536) % 200 + 11\n"
        "  local b = math.floor(n / 256) % 256\n"
        "  local c = n % 256\n"
        '  wrk.headers["X-Forwarded-For"] = a .. "." .. b .. "." .. c .. ".9"\n'
        f'  return wrk.format("POST", "/s/bench", nil, "{body}&consent=yes&topic=promotions'
        f'&email=b{run}x" .. n .. "%40bench.example")\n'
        "end\n"
    )
    flood = (
        common + 'wrk.headers["X-Forwarded-For"] = "203.0.113.77"\n'
        "request = function()\n  n = n + 1\n"
        f'  return wrk.format("POST", "/s/bench", nil, "{body}&consent=yes'
        f'&email=f{run}x" .. n .. "%40bench.example")\n'
        "end\n"
    )
    paths = {"pixel": pixel}
    out: dict[str, Path] = {}
    for name, text in {
        "pixel": common + f'request = function() return wrk.format("GET", "{paths["pixel"]}")'
        " end\n",
        "signup": signup,
        "flood": flood,
    }.items():
        path = folder / f"{name}.lua"
        path.write_text(text, encoding="utf-8")
        out[name] = path
    return out


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def timed(label: str, port: int, script: Path, seconds: int, pid: int) -> Run:
    run_wrk(label, port, script, WARMUP_S)
    cpu = cpu_seconds(pid)
    run = run_wrk(label, port, script, seconds)
    return replace(run, cpu_us=(cpu_seconds(pid) - cpu) / max(run.requests, 1) * 1e6)


async def landed(dsn: str) -> tuple[int, int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM signup_requests WHERE email LIKE 'b%') AS requests,"
            " (SELECT count(*) FROM signup_requests WHERE email LIKE 'f%') AS flood,"
            " (SELECT count(*) FROM transactional_messages WHERE status = 'queued') AS mails"
        )
        assert row is not None
        return int(row["requests"]), int(row["flood"]), int(row["mails"])
    finally:
        await conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--no-readme", action="store_true", help="do not write bench/README.md")
    args = parser.parse_args()
    server_dsn = os.environ.get("DATABASE_URL") or pgcluster.ensure().dsn
    dsn, delivery = asyncio.run(prepare(server_dsn))
    try:
        with tempfile.TemporaryDirectory(prefix="bench-signup-") as tmp:
            folder = Path(tmp)
            port = free_port()
            env = {
                **os.environ,
                "DATABASE_URL": dsn,
                "MAILER_TOKEN_KEYS": KEYS,
                "MAILER_TRACKER_HOST": "127.0.0.1",
                "MAILER_TRACKER_PORT": str(port),
                "MAILER_FORMS_BUSINESS_NAME": "Garage Tremblay Automobiles",
                "MAILER_FORMS_POSTAL_ADDRESS": "2450, boulevard Laurier, Québec",
                "MAILER_FORMS_CONTACT": "+1 418-555-0142",
                "MAILER_FORMS_IP_PREFIX_LIMIT": str(PREFIX_LIMIT),
                "PYTHONPATH": str(ROOT),
            }
            proc = start([sys.executable, "-m", "tracker"], env, folder / "tracker.log")
            try:
                wait_listening(port, proc, timeout=90)  # a loaded machine starts it slowly
                lua = scripts(folder, delivery, fields_of(port))
                pixel = timed("GET /o/TOKEN (pixel)", port, lua["pixel"], args.seconds, proc.pid)
                signup = timed("POST /s/FORM (accepted)", port, lua["signup"], args.seconds,
                               proc.pid)  # fmt: skip
                rss_before = rss_kib(proc.pid)
                flood = timed("POST /s/FORM (one /24)", port, lua["flood"], args.seconds,
                              proc.pid)  # fmt: skip
                rss_after = rss_kib(proc.pid)
            finally:
                stop(proc)
            log = (folder / "tracker.log").read_text(encoding="utf-8", errors="replace")
            # A 503 (the database past tracker.db_timeout_ms) logs "… not recorded".
            unavailable = log.count("not recorded")
            if "Traceback" in log:
                print(log[-4000:], file=sys.stderr)
        requests, flood_rows, mails = asyncio.run(landed(dsn))
    finally:
        asyncio.run(scratch.drop_database(server_dsn, dsn))
    report, ok = render(
        pixel, signup, flood, args.seconds, (requests, flood_rows, mails), (rss_before, rss_after)
    )
    report += f"\n- answers 503 (database past its deadline, from the tracker's log): {unavailable}"
    print(report)
    if not args.no_readme:
        write_readme(report)
    return 0 if ok else 1


def render(
    pixel: Run,
    signup: Run,
    flood: Run,
    seconds: int,
    rows: tuple[int, int, int],
    rss: tuple[int, int],
) -> tuple[str, bool]:
    requests, flood_rows, mails = rows
    accepted = signup.requests - signup.errors
    refused_ratio = flood.rps / signup.rps
    growth = rss[1] - rss[0]
    all_landed = requests >= accepted and mails >= requests
    ok = refused_ratio >= 5 and growth < 5 * 1024 and all_landed and flood_rows <= PREFIX_LIMIT
    table = [
        "| route | req/s | p99 | server CPU / request | requests | non-2xx |",
        "|---|---:|---:|---:|---:|---:|",
        *(
            f"| {r.label} | {r.rps:,.0f} | {r.p99_ms:.2f} ms | {r.cpu_us:,.0f} µs"
            f" | {r.requests:,} | {r.errors:,} |"
            for r in (pixel, signup, flood)
        ),
    ]
    lines = [
        f"`python bench/signup.py` — one tracker (uvloop) on core {SERVER_CORE}, wrk (1 thread,"
        f" 64 connections) on core {WRK_CORE}, {seconds} s per route after a {WARMUP_S} s"
        " warm-up, Postgres (fsync on) unpinned; sign-ups each from a new address and its own"
        f" /24; the flood from one /24 with forms.ip_prefix_limit = {PREFIX_LIMIT}. Load"
        f" average when done: {os.getloadavg()[0]:.2f}.",
        "",
        *table,
        "",
        f"- sign-ups accepted: {signup.rps:,.0f}/s, each a pending request plus its"
        " confirmation mail committed on the transactional lane before the answer;"
        f" {signup.rps / pixel.rps:.3f} of the pixel's req/s in the same run (by server CPU per"
        f" request: {pixel.cpu_us / signup.cpu_us:.3f})",
        f"- landed: {requests:,} request rows and {mails:,} queued confirmation mails for"
        f" {accepted:,} answers 200 ({'every one landed' if all_landed else 'MISSING ROWS'})",
        f"- the flood from one /24 is refused at {flood.rps:,.0f}/s = {refused_ratio:.1f}x the"
        f" accepted rate (goal >= 5: {'met' if refused_ratio >= 5 else 'MISSED'}); it got"
        f" {flood_rows} request rows (the limit is {PREFIX_LIMIT})",
        f"- tracker resident memory across the flood: {rss[0] / 1024:.1f} MiB ->"
        f" {rss[1] / 1024:.1f} MiB ({'flat' if growth < 5 * 1024 else 'GREW'})",
    ]
    return "\n".join(lines), ok


def write_readme(report: str) -> None:
    """Replace (or add) the "## Sign-up forms" section, leaving every other one as it is."""
    text = README.read_text(encoding="utf-8") if README.exists() else "# Benchmarks\n"
    section = f"## Sign-up forms\n\n{report}\n"
    found = re.search(r"^## Sign-up forms\n.*?(?=^## |\Z)", text, flags=re.MULTILINE | re.DOTALL)
    if found:
        gap = "\n" if found.end() < len(text) else ""
        text = text[: found.start()] + section + gap + text[found.end() :]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    README.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
