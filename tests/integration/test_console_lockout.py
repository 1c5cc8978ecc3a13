"""Failed logins decay: after console.login_failure_window_seconds without a failure or a
running lock, an address (and a client IP) starts again from zero. The clock is moved by
ageing the failure rows, not by sleeping."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from mailer.console.accounts import Role
from mailer.console.app import create_app
from tests.console_setup import Client, console_settings, csrf_of, log_in, operator
from tests.engine_setup import TEMPLATES

pytestmark = pytest.mark.timeout(120)


async def _fail(client: Client) -> str:
    page = await client.get("/login")
    response = await client.post(
        "/login",
        data={"email": "ada@example.com", "password": "wrong", "csrf": csrf_of(await page.text())},
    )
    assert response.status == 401
    return await response.text()


async def _age(conn: asyncpg.Connection, seconds: int) -> None:
    """Move the failure rows `seconds` into the past (as if that much time had gone by)."""
    await conn.execute(
        "UPDATE console_login_failures SET last_failure_at = last_failure_at - $1::interval,"
        " locked_until = locked_until - $1::interval",
        timedelta(seconds=seconds),
    )


async def _failures(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch("SELECT key, failures FROM console_login_failures")
    return {r["key"].split(":")[0]: r["failures"] for r in rows}


async def test_a_lockout_is_forgotten_after_a_quiet_window_and_the_operator_logs_in(
    db_url: str, conn: asyncpg.Connection
) -> None:
    settings = console_settings(db_url, TEMPLATES, login_failure_window_seconds=120)
    await operator(settings, "ada@example.com", Role.SENDER)
    async with TestClient(TestServer(create_app(settings))) as client:
        for _ in range(5):
            page = await _fail(client)
        assert "try again in 30 seconds" in page or "try again in 29 seconds" in page
        # The lock ends (30 s) but the window (120 s) has not passed: one more failure
        # locks again, for twice as long (the backoff keeps growing for a persistent guess).
        await _age(conn, 31)
        page = await _fail(client)
        assert "try again in" in page
        assert (await _failures(conn))["email"] == 6
        # 60 s of lock, then 120 s quiet: the count starts again from zero.
        await _age(conn, 60 + 121)
        page = await _fail(client)
        assert "Wrong address or password." in page
        assert "try again in" not in page
        assert await _failures(conn) == {"email": 1, "ip": 1}
        await log_in(client, "ada@example.com")


async def test_typos_spread_over_more_than_the_window_never_lock(
    db_url: str, conn: asyncpg.Connection
) -> None:
    settings = console_settings(db_url, TEMPLATES, login_failure_window_seconds=120)
    await operator(settings, "ada@example.com", Role.SENDER)
    async with TestClient(TestServer(create_app(settings))) as client:
        for _ in range(12):
            page = await _fail(client)
            assert "try again in" not in page
            await _age(conn, 121)
        assert (await _failures(conn))["email"] == 1


async def test_a_key_that_failed_thousands_of_times_is_still_answered_with_a_lock(
    db_url: str, conn: asyncpg.Connection
) -> None:
    # 2^1024 overflows a float8: the backoff's exponent is bounded, the answer stays a page.
    settings = console_settings(db_url, TEMPLATES)
    await operator(settings, "ada@example.com", Role.SENDER)
    async with TestClient(TestServer(create_app(settings))) as client:
        await _fail(client)
        await conn.execute("UPDATE console_login_failures SET failures = 5000")
        page = await _fail(client)
        assert "try again in" in page
