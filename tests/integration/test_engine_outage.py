"""Expected failures are summarised, not logged once per message (issue 13, item 9)."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import asyncpg
import pytest

from mailer.demo.stores import Stores, open_stores
from mailer.send.engine import Engine
from mailer.send.failure_log import FailureLog
from tests.db_outage import PostgresProxy
from tests.engine_setup import add_contacts, engine_for, sample_campaign, settings_for
from tests.smtp_servers import free_port, smtp_server, wait_until


def mailer_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("mailer")]


def settled(engine: Engine) -> int:
    """Claimed deliveries whose outcome the engine knows (written or not yet)."""
    return sum(engine.progress.by_status.values())


async def test_a_database_outage_mid_send_logs_a_few_summary_lines_and_no_tracebacks(
    db_url: str, stores: Stores, conn: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    await add_contacts(conn, 300)
    await sample_campaign(stores)  # 20 msg/s: most of the 300 wait in the send queue
    proxy = PostgresProxy(db_url)
    await proxy.start()
    caplog.set_level(logging.INFO, logger="mailer")
    try:
        async with open_stores(proxy.dsn, max_size=4) as through_proxy:
            with smtp_server() as (port, sink):
                engine = engine_for(through_proxy, settings_for(port, batch_size=300))
                run = asyncio.create_task(engine.run())
                await wait_until(lambda: len(sink.recipients) >= 10)
                await proxy.cut()
                cut_at = time.monotonic()
                # The outage lasts until every claimed message has its outcome (sent, or
                # deferred for want of tokens), not a fixed 2 s: on a loaded machine the
                # batch was still being composed when the 2 s ended, and the rest went out.
                await wait_until(lambda: settled(engine) == 300, within_s=60)
                await proxy.start()
                outage_s = time.monotonic() - cut_at
                await wait_until(lambda: engine.pending == 0, within_s=60)
                engine.stop.set()
                await run
    finally:
        await proxy.close()
    # Every queued message failed to get its throttle tokens and was deferred …
    assert engine.failures.total >= 200
    deferred = await conn.fetchval(
        "SELECT count(*) FROM deliveries WHERE status = 'deferred' AND smtp_reply LIKE 'database%'"
    )
    assert deferred >= 200
    # … and the log says so in a few lines, with no traceback (none of it is a bug).
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []
    lines = mailer_lines(caplog)
    # A few per kind of failure (claiming, tokens, recording, leases): the first, then one
    # summary per 10 s (FailureLog), more of them when a loaded machine's outage ran longer.
    assert len(lines) <= 12 + 4 * int(outage_s // 10), "\n".join(r.getMessage() for r in lines)
    summary = [r.getMessage() for r in lines if "deliveries deferred" in r.getMessage()]
    assert "more in the last" in summary[-1]


async def test_an_unreachable_relay_is_logged_once_then_summarised_not_once_per_message(
    stores: Stores, conn: asyncpg.Connection, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    await add_contacts(conn, 100)
    await sample_campaign(stores, {"[throttle]\nrate = 20.0\nconcurrency = 4\n": ""}, tmp_path)
    caplog.set_level(logging.INFO, logger="mailer")
    engine = engine_for(stores, settings_for(free_port()))  # nothing listens there
    await engine.run(until_idle=True)
    deferred = await conn.fetchval("SELECT count(*) FROM deliveries WHERE status = 'deferred'")
    assert deferred == 100
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []
    messages = [r.getMessage() for r in mailer_lines(caplog)]
    assert len(messages) == 2, messages
    assert messages[0].startswith("SMTP relay default: connection failed: ")
    assert messages[1].startswith("SMTP relay default: connection failed: 99 more in the last")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_of_failures_is_one_line_per_interval_with_the_count_and_first_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    failures = FailureLog(logging.getLogger("mailer.test"), every_s=10.0, clock=clock)
    caplog.set_level(logging.WARNING, logger="mailer")
    for i in range(1000):  # 1,000 failures over 25 s
        clock.now = i * 0.025
        failures.failed("deliveries deferred: database unavailable", ConnectionRefusedError(i))
    failures.flush()
    messages = [r.getMessage() for r in mailer_lines(caplog)]
    assert messages == [
        "deliveries deferred: database unavailable: ConnectionRefusedError: 0",
        "deliveries deferred: database unavailable: 400 more in the last 10 s "
        "(first: ConnectionRefusedError: 1)",
        "deliveries deferred: database unavailable: 400 more in the last 10 s "
        "(first: ConnectionRefusedError: 401)",
        "deliveries deferred: database unavailable: 199 more in the last 5 s "
        "(first: ConnectionRefusedError: 801)",
    ]
    assert not any(r.exc_info for r in caplog.records)


def test_after_a_quiet_interval_the_next_failure_is_logged_at_once() -> None:
    clock = Clock()
    logger = logging.getLogger("mailer.test.quiet")
    failures = FailureLog(logger, every_s=10.0, clock=clock)
    failures.failed("relay down", "ConnectionRefusedError")
    clock.now = 10.0
    failures.flush_due()  # nothing more in that interval: the spell is over
    clock.now = 30.0
    assert failures._spells == {}
    failures.failed("relay down", "ConnectionRefusedError")
    assert "relay down" in failures._spells
