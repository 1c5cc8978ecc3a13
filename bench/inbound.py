"""Inbound benchmark: `inbound serve` (store, classify, attribute, apply effects) against the
same aiosmtpd server that only stores (the floor), same messages, same client, one run.

N messages (DSNs in Postfix's shape: 80 % hard, 10 % soft; ARF complaints in Yahoo's
shape: 10 %), each about its own sent delivery, are handed over K SMTP connections to
  (a) the floor: mailer.inbound.server with the real store and nothing else;
  (b) `mailer inbound serve` as operators run it (its processor and guard included),
each in its own child process on a fresh database. (b)'s rate counts a message once its
effects are committed. Checks every message is accounted for (stored = processed, by
kind) and samples the server's RSS as it goes (flat = no growth with the message count).

    DATABASE_URL=… python bench/inbound.py [--messages 100000] [--connections 8]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiosmtplib
import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.scratch import create_database, drop_database, server_dsn  # noqa: E402
from mailer.core.tokens import Keyring, Purpose, Token  # noqa: E402

KEYS = "1:" + base64.b64encode(b"b" * 32).decode()
CORPUS = ROOT / "tests" / "fixtures" / "inbound"
DOMAIN = "garage-tremblay.example"
MIX = (("postfix_hard", 8), ("postfix_delayed", 1), ("yahoo_arf_complaint", 1))  # of 10

SETUP_SQL = (
    """INSERT INTO topics (slug, name) VALUES ('service', 'Service')""",
    """INSERT INTO campaigns (slug, name, topic_id, status, definition)
       SELECT 'bench', 'bench', id, 'running', '{}' FROM topics""",
    """INSERT INTO contacts (email, email_hash)
       SELECT e, sha256(convert_to(e, 'UTF8'))
       FROM (SELECT 'user' || i || '@d' || (i % 20) || '.example' AS e
             FROM generate_series(1, $1) i) s""",
    """INSERT INTO deliveries (campaign_id, contact_id, status, domain, sent_at, message_id)
       SELECT 1, c.id, 'sent', split_part(c.email, '@', 2), now() - interval '1 hour',
              '<' || c.id || '.0123456789abcdef@garage-tremblay.example>'
       FROM contacts c ORDER BY c.id""",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def messages(count: int) -> list[tuple[str, str, bytes]]:
    """(envelope sender, recipient, data) for deliveries 1..count, in the MIX's shares."""
    keyring = Keyring.from_spec(KEYS)
    templates = {name: (CORPUS / f"{name}.eml").read_text("latin-1") for name, _ in MIX}
    plan = [name for name, share in MIX for _ in range(share)]
    out = []
    for delivery in range(1, count + 1):
        name = plan[delivery % len(plan)]
        bounce = keyring.sign(Token(Purpose.BOUNCE, delivery, None, 1_728_000_000))
        unsub = keyring.sign(Token(Purpose.UNSUBSCRIBE, delivery, None, 1_728_000_000))
        text = (
            templates[name]
            .replace("{BOUNCE}", bounce)
            .replace("{UNSUB}", unsub)
            .replace("{MSGID}", f"<{delivery}.0123456789abcdef@{DOMAIN}>")
            .replace("{DOMAIN}", DOMAIN)
        )
        data = text.replace("\n", "\r\n").encode("latin-1")
        rcpt = f"fbl@{DOMAIN}" if "arf" in name else f"bounces+{bounce}@{DOMAIN}"
        out.append(("" if "arf" not in name else "fbl@yahoo.example", rcpt, data))
    return out


# ---------------------------------------------------------------- the servers (children)


async def serve(kind: str, db_url: str, port: int) -> None:
    """A child: the floor (store only) or the whole of `inbound serve`, until stdin closes."""
    import dataclasses

    from mailer.core.settings import load
    from mailer.db import connect
    from mailer.inbound.metrics import InboundMetrics
    from mailer.inbound.server import InboundHandler, InboundServer
    from mailer.inbound.service import InboundService, classifier_for
    from mailer.inbound.store import InboundStore

    base = load(environ={"DATABASE_URL": db_url, "MAILER_TOKEN_KEYS": KEYS})
    settings = dataclasses.replace(
        base, inbound=dataclasses.replace(base.inbound, port=port, metrics_port=0)
    )
    async with connect(db_url, max_size=8) as pool:
        if kind == "floor":
            handler = InboundHandler(
                InboundStore(pool), classifier_for(settings), settings.inbound, InboundMetrics()
            )
            server = InboundServer(handler, settings.inbound, hostname="bench.example")
            await server.start("127.0.0.1", port)
            stop = server.stop
        else:
            service = InboundService(settings, pool, metrics=False)
            await service.start()
            stop = service.stop
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await stop()


# ---------------------------------------------------------------- the client (parent)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def send_all(port: int, batch: list[tuple[str, str, bytes]], connections: int) -> None:
    queue: asyncio.Queue[tuple[str, str, bytes]] = asyncio.Queue()
    for item in batch:
        queue.put_nowait(item)

    async def worker() -> None:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60) as client:
            while not queue.empty():
                sender, rcpt, data = queue.get_nowait()
                await client.sendmail(sender, [rcpt], data)

    await asyncio.gather(*(worker() for _ in range(connections)))


async def one_side(
    kind: str, count: int, connections: int, prepared: list[tuple[str, str, bytes]]
) -> dict[str, object]:
    dsn = server_dsn()
    db_url = await create_database(dsn, f"bench_inbound_{kind}")
    child: subprocess.Popen[str] | None = None
    try:
        conn = await asyncpg.connect(db_url)
        for statement in SETUP_SQL:
            await conn.execute(statement, *([count] if "$1" in statement else []))
        await conn.execute("VACUUM ANALYZE")
        port = free_port()
        child = subprocess.Popen(  # noqa: ASYNC220 - started once, before the clock runs
            [sys.executable, __file__, "--serve", kind, "--db", db_url, "--port", str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        assert child.stdin is not None
        assert child.stdout.readline().strip() == "ready"
        rss: list[float] = [rss_mb(child.pid)]
        started = time.perf_counter()
        sender = asyncio.create_task(send_all(port, prepared, connections))
        done_query = (
            "SELECT count(*) FROM inbound_messages"
            if kind == "floor"
            else "SELECT count(*) FROM inbound_messages WHERE state = 'processed'"
        )
        while True:
            await asyncio.sleep(0.5)
            rss.append(rss_mb(child.pid))
            if sender.done() and await conn.fetchval(done_query) >= count:
                break
            if sender.done() and sender.exception() is not None:
                raise sender.exception()  # type: ignore[misc]
        elapsed = time.perf_counter() - started
        kinds: dict[str, int] = {
            r["kind"]: r["n"]
            for r in await conn.fetch(
                "SELECT coalesce(kind, 'pending') AS kind, count(*) AS n FROM inbound_messages "
                "GROUP BY 1"
            )
        }
        effects = {
            "bounced": await conn.fetchval(
                "SELECT count(*) FROM deliveries WHERE status = 'bounced'"
            ),
            "suppressions": await conn.fetchval("SELECT count(*) FROM suppressions"),
            "soft_bounces": await conn.fetchval("SELECT count(*) FROM bounces WHERE NOT hard"),
            "complaints": await conn.fetchval("SELECT count(*) FROM complaints"),
        }
        await conn.close()
        quarter = rss[max(1, len(rss) // 4)]
        return {
            "kind": kind,
            "messages": count,
            "seconds": round(elapsed, 1),
            "rate": round(count / elapsed, 1),
            "kinds": kinds,
            "effects": effects,
            "rss_mb_start_quarter_end": [round(rss[0]), round(quarter), round(rss[-1])],
        }
    finally:
        if child is not None and child.stdin is not None:
            child.stdin.close()
            child.wait(timeout=60)
        await drop_database(dsn, db_url)


async def main(count: int, connections: int) -> None:
    prepared = messages(count)
    floor = await one_side("floor", count, connections, prepared)
    print(json.dumps(floor), flush=True)
    full = await one_side("full", count, connections, prepared)
    print(json.dumps(full), flush=True)
    kinds = full["kinds"]
    assert isinstance(kinds, dict)
    accounted = sum(v for k, v in kinds.items() if k != "pending")
    print(
        f"\n{count:,} messages over {connections} connections: store only "
        f"{floor['rate']}/s, inbound serve (effects committed) {full['rate']}/s, "
        f"ratio {float(full['rate']) / float(floor['rate']):.2f}; "  # type: ignore[arg-type]
        f"accounted for: {accounted:,} of {count:,} ({kinds}); "
        f"RSS MB start/quarter/end: floor {floor['rss_mb_start_quarter_end']}, "
        f"serve {full['rss_mb_start_quarter_end']}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--serve", choices=["floor", "full"], help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        try:
            import uvloop

            uvloop.run(serve(args.serve, args.db, args.port))
        except ImportError:
            asyncio.run(serve(args.serve, args.db, args.port))
    else:
        asyncio.run(main(args.messages, args.connections))
    os._exit(0) if args.serve else None
