"""inbound beyond one message: the crash between 250 and processing, ingest from files,
the reputation guard, and `campaign status` showing why a campaign paused."""

from __future__ import annotations

import asyncio
import io
import mailbox
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest

from mailer.core.settings import Settings
from mailer.demo.stores import Stores
from mailer.inbound.guard import Guard
from mailer.inbound.metrics import InboundMetrics
from mailer.inbound.store import InboundStore
from tests.cli_run import run_cli
from tests.engine_setup import KEYS
from tests.inbound_setup import DOMAIN, deliver, inbound_serve, inbound_settings, processed
from tests.inbound_setup import sent_deliveries as sent
from tests.smtp_servers import free_port

ROOT = Path(__file__).resolve().parents[2]


async def _listening(port: int, within_s: float = 30.0) -> None:
    deadline = time.monotonic() + within_s
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
            continue
        writer.close()
        return


def _serve(db_url: str, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "MAILER_TOKEN_KEYS": KEYS,
        "MAILER_INBOUND_PORT": str(port),
        "MAILER_INBOUND_METRICS_PORT": "0",
    }
    env.pop("MAILER_CONFIG", None)
    return subprocess.Popen(
        [sys.executable, "-m", "mailer", "inbound", "serve"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_kill_9_between_the_250_and_processing_loses_nothing_and_counts_once(
    stores: Stores, conn: asyncpg.Connection, db_url: str
) -> None:
    first, second = await sent(stores, conn, 2)
    port = free_port()
    server = _serve(db_url, port)
    # Hold the delivery rows the effects will update: processing starts, then waits.
    blocker = await asyncpg.connect(db_url)
    lock = blocker.transaction()
    await lock.start()
    await blocker.execute("SELECT * FROM deliveries FOR UPDATE")
    try:
        await _listening(port)
        await deliver(port, first.verp, first.fill("postfix_hard"))
        await deliver(port, second.verp, second.fill("ses_dsn"))
        # Both answered 250, so both are stored; their processing is stuck on our lock.
        assert (
            await conn.fetchval("SELECT count(*) FROM inbound_messages WHERE state = 'pending'")
            == 2
        )
        await asyncio.sleep(0.5)
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)
    finally:
        await lock.rollback()
        await blocker.close()
    assert await conn.fetchval("SELECT count(*) FROM bounces") == 0
    restarted = _serve(db_url, port)
    try:
        await processed(conn, 2)
    finally:
        restarted.send_signal(signal.SIGTERM)
        restarted.wait(timeout=30)
    assert await conn.fetchval("SELECT count(*) FROM bounces") == 2
    assert await conn.fetchval("SELECT count(*) FROM suppressions") == 2
    assert await conn.fetchval("SELECT count(*) FROM deliveries WHERE status = 'bounced'") == 2


async def test_ingest_reads_an_eml_an_mbox_a_maildir_and_stdin_through_one_path(
    stores: Stores,
    conn: asyncpg.Connection,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    one, two, three, four = await sent(stores, conn, 4)
    monkeypatch.setenv("MAILER_TOKEN_KEYS", KEYS)
    eml = tmp_path / "bounce.eml"
    eml.write_bytes(b"Delivered-To: " + one.verp.encode() + b"\r\n" + one.fill("postfix_hard"))
    box = mailbox.mbox(tmp_path / "bounces.mbox")
    box.add(two.fill("exim_text_bounce"))
    box.add(two.fill("out_of_office"))
    box.close()
    maildir = mailbox.Maildir(tmp_path / "Maildir")
    maildir.add(
        b"Delivered-To: " + three.mailto.encode() + b"\r\n" + three.fill("mailto_unsubscribe")
    )
    maildir.flush()
    code, out = await run_cli(monkeypatch, db_url, "inbound", "ingest", str(eml))
    assert code == 0, out
    assert "1 stored" in out
    assert "dsn_hard 1" in out
    code, out = await run_cli(monkeypatch, db_url, "inbound", "ingest", str(eml))
    assert "0 stored, 1 already stored" in out
    code, out = await run_cli(
        monkeypatch, db_url, "inbound", "ingest", str(tmp_path / "bounces.mbox")
    )
    assert code == 0, out
    assert "dsn_hard 1" in out
    assert "autoreply 1" in out
    code, out = await run_cli(monkeypatch, db_url, "inbound", "ingest", str(tmp_path / "Maildir"))
    assert code == 0, out
    assert "unsubscribe 1" in out
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(four.fill("ses_dsn"))))
    code, out = await run_cli(
        monkeypatch, db_url, "inbound", "ingest", "-", "--sender", "", "--recipient", four.verp
    )
    assert code == 0, out
    assert "dsn_hard 1" in out
    sources = await conn.fetch("SELECT source, kind FROM inbound_messages ORDER BY id")
    assert [tuple(r) for r in sources] == [
        ("file", "dsn_hard"),
        ("mbox", "dsn_hard"),
        ("mbox", "autoreply"),
        ("maildir", "unsubscribe"),
        ("stdin", "dsn_hard"),
    ]
    code, out = await run_cli(monkeypatch, db_url, "inbound", "ingest", str(tmp_path / "nothing"))
    assert code == 2
    assert "nothing" in out


async def test_the_guard_pauses_a_campaign_past_its_hard_bounce_rate_and_status_says_why(
    stores: Stores,
    conn: asyncpg.Connection,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    db_url: str,
) -> None:
    deliveries = await sent(stores, conn, 40)
    await conn.execute("UPDATE campaigns SET status = 'running'")
    slug = await conn.fetchval("SELECT slug FROM campaigns")
    guard_settings = settings.guard.__class__(min_sample=20, max_hard_bounce_rate=0.05)
    metrics = InboundMetrics()
    guard = Guard(InboundStore(stores.pool), stores.campaigns, guard_settings, metrics.guard)
    await conn.execute(
        "UPDATE deliveries SET status = 'bounced' WHERE id = ANY($1::bigint[])",
        [d.delivery_id for d in deliveries[:2]],
    )
    assert await guard.check() == []  # 2 of 40 = 5 %: not over
    await conn.execute(
        "UPDATE deliveries SET status = 'bounced' WHERE id = $1", deliveries[2].delivery_id
    )
    paused = await guard.check()
    assert [(s, v.reason) for s, v in paused] == [(slug, "hard_bounce_rate")]
    assert metrics.guard.pauses.labels("hard_bounce_rate")._value.get() == 1
    assert await conn.fetchval("SELECT status FROM campaigns") == "paused"
    code, out = await run_cli(monkeypatch, db_url, "campaign", "status", slug)
    assert "paused by the reputation guard: hard-bounce rate 7.50% (3 of 40 sent)" in out
    code, out = await run_cli(monkeypatch, db_url, "campaign", "resume", slug)
    assert code == 0
    assert await conn.fetchval("SELECT pause_reason FROM campaigns") is None
    # Resumed: judged on what it sends from now on, not paused again for the past.
    assert await guard.check() == []


async def test_a_campaign_files_reputation_table_overrides_the_complaint_threshold(
    stores: Stores, conn: asyncpg.Connection, settings: Settings
) -> None:
    deliveries = await sent(stores, conn, 30)
    await conn.execute(
        "UPDATE campaigns SET status = 'running', definition = definition || "
        '\'{"reputation": {"max_complaint_rate": 0.05}}\''
    )
    guard = Guard(
        InboundStore(stores.pool),
        stores.campaigns,
        settings.guard.__class__(min_sample=30),
        InboundMetrics().guard,
    )
    async with inbound_serve(inbound_settings(settings)) as service:
        await deliver(service.port, f"fbl@{DOMAIN}", deliveries[0].fill("yahoo_arf_complaint"))
        await processed(conn, 1)
        assert await guard.check() == []  # 1 of 30 (3.3 %): over the default 0.1 %, not 5 %
        await deliver(service.port, f"fbl@{DOMAIN}", deliveries[1].fill("outlook_jmrp_complaint"))
        await processed(conn, 2)
    paused = await guard.check()
    assert [v.reason for _, v in paused] == ["complaint_rate"]
    assert float(await conn.fetchval("SELECT pause_reason->>'threshold' FROM campaigns")) == 0.05


async def test_the_report_shows_late_bounces_by_dsn_status_and_the_guards_pause(
    stores: Stores, conn: asyncpg.Connection, settings: Settings
) -> None:
    first, second, *_ = await sent(stores, conn, 4)
    async with inbound_serve(inbound_settings(settings)) as service:
        await deliver(service.port, first.verp, first.fill("postfix_hard"))
        await deliver(service.port, second.verp, second.fill("postfix_delayed"))
        await processed(conn, 2)
    await conn.execute(
        "UPDATE campaigns SET status = 'paused', pause_reason = $1",
        '{"by": "reputation guard", "reason": "hard_bounce_rate", "rate": 0.25, '
        '"threshold": 0.05, "count": 1, "sent": 4}',
    )
    from rich.console import Console

    from mailer.report.figures import figures
    from mailer.report.terminal import render_rich

    found = await figures(stores.report, first.campaign_id)
    assert found.outcome_details["bounced"] == {"DSN 5.1.1": 1}
    assert found.soft_bounces == 1
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(render_rich(found))
    text = console.export_text()
    assert "paused by the reputation guard: hard-bounce rate 25.00% (1 of 4 sent)" in text
    assert "DSN 5.1.1" in text
    assert "soft-bounced after sending" in text


async def test_contacts_show_gives_a_bounce_suppressions_evidence(
    stores: Stores,
    conn: asyncpg.Connection,
    settings: Settings,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (first,) = await sent(stores, conn, 1)
    async with inbound_serve(inbound_settings(settings)) as service:
        await deliver(service.port, first.verp, first.fill("outlook_ndr"))
        await processed(conn, 1)
    inbound_id = await conn.fetchval("SELECT id FROM inbound_messages")
    code, out = await run_cli(monkeypatch, db_url, "contacts", "show", first.email)
    assert code == 0
    assert f"inbound message {inbound_id}, 5.1.10, delivery {first.delivery_id}" in out
    assert "hard_bounce" in out
