"""The dashboard's unsubscribe-SLA alert over HTTP: an opt-out not honoured in time (a
message sent after it, or an opt-out recorded past the SLA) is shown, else nothing; the
check runs in the background and the page says how old its verdict is."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from mailer.campaigns import lifecycle
from mailer.console.accounts import Role
from mailer.console.app import create_app
from mailer.core.settings import Settings
from mailer.demo.stores import Stores
from tests.console_setup import (
    PASSWORD,
    console_settings,
    csrf_of,
    log_in,
    operator,
    small_world,
)
from tests.engine_setup import TEMPLATES

pytestmark = pytest.mark.timeout(120)


async def _dashboard(settings: Settings) -> str:
    """The dashboard as a fresh console process shows it (no verdict cached yet)."""
    async with TestClient(TestServer(create_app(settings))) as client:
        await log_in(client, "vic@example.com")
        return await (await client.get("/")).text()


@pytest.fixture
async def launched(db_url: str, conn: asyncpg.Connection, stores: Stores) -> Settings:
    """A launched campaign to the small world, person0 having opted out before it went."""
    settings = console_settings(db_url, TEMPLATES, page_wait_ms=30000)
    await operator(settings, "vic@example.com", Role.VIEWER)
    await small_world(conn)
    _, definition = await lifecycle.create(
        stores.campaigns, TEMPLATES / "service_reminder.toml", TEMPLATES
    )
    await lifecycle.launch(stores.campaigns, definition.slug, datetime.now(UTC))
    await conn.execute(
        "INSERT INTO consents (contact_id, channel, action, source, obtained_at, recorded_at)"
        " SELECT id, 'email', 'withdraw', 'one-click', now() - interval '1 hour',"
        " now() - interval '1 hour' FROM contacts WHERE email = 'person0@example.com'"
    )
    return settings


async def test_no_sla_alert_while_every_opt_out_held_back_the_next_send(
    launched: Settings, conn: asyncpg.Connection
) -> None:
    # The engine's re-check skipped her: the opt-out was honoured.
    await conn.execute(
        "UPDATE deliveries d SET status = 'skipped', skip_reason = 'unsubscribed'"
        " FROM contacts c WHERE c.id = d.contact_id AND c.email = 'person0@example.com'"
    )
    page = await _dashboard(launched)
    assert "unsubscribe SLA" not in page
    assert "Unsubscribe SLA checked" in page


async def test_a_message_sent_after_an_opt_out_raises_the_sla_alert(
    launched: Settings, conn: asyncpg.Connection
) -> None:
    await conn.execute(
        "UPDATE deliveries d SET status = 'sent', sent_at = now()"
        " FROM contacts c WHERE c.id = d.contact_id AND c.email = 'person0@example.com'"
    )
    page = await _dashboard(launched)
    alerts = page.split('id="alerts"')[1].split("</ul>")[0]
    assert "unsubscribe SLA VIOLATED (1 sent after)" in alerts


async def test_an_opt_out_recorded_days_after_the_request_raises_the_sla_alert(
    launched: Settings, conn: asyncpg.Connection
) -> None:
    # A mailto unsubscribe that sat three days in a queue before it was recorded.
    await conn.execute(
        "INSERT INTO consents (contact_id, channel, action, source, obtained_at, recorded_at)"
        " SELECT id, 'email', 'withdraw', 'mailto', now() - interval '3 days', now()"
        " FROM contacts WHERE email = 'person2@example.com'"
    )
    await conn.execute(
        "UPDATE deliveries d SET status = 'skipped', skip_reason = 'unsubscribed'"
        " FROM contacts c WHERE c.id = d.contact_id"
        " AND c.email IN ('person0@example.com', 'person2@example.com')"
    )
    page = await _dashboard(launched)
    alerts = page.split('id="alerts"')[1].split("</ul>")[0]
    assert "recorded more than 2 days after the request" in alerts


async def test_the_sla_check_runs_in_the_background_and_its_verdict_shows_its_age(
    launched: Settings, conn: asyncpg.Connection
) -> None:
    await conn.execute("UPDATE deliveries SET status = 'sent', sent_at = now()")
    settings = console_settings(launched.database.url, TEMPLATES, page_wait_ms=0)
    async with TestClient(TestServer(create_app(settings))) as client:
        # The login lands on the dashboard, its first visit: it did not wait for the check.
        login = await client.get("/login")
        first = await (
            await client.post(
                "/login",
                data={
                    "email": "vic@example.com",
                    "password": PASSWORD,
                    "csrf": csrf_of(await login.text()),
                    "next": "/",
                },
            )
        ).text()
        assert "being checked" in first
        for _ in range(300):  # the check's result, within 30 s even on a loaded machine
            await asyncio.sleep(0.1)
            page = await (await client.get("/")).text()
            if "VIOLATED" in page:
                break
        assert "unsubscribe SLA VIOLATED" in page
        assert "Unsubscribe SLA checked" in page


async def test_a_finished_campaign_with_uncertain_deliveries_still_alerts_and_keeps_its_totals(
    launched: Settings, conn: asyncpg.Connection
) -> None:
    """The dashboard counts only a finished campaign's uncertain rows (not all of them, on
    every view): its alert stays; the campaigns list still shows its whole total."""
    total = await conn.fetchval("SELECT count(*) FROM deliveries")
    await conn.execute(
        "UPDATE deliveries SET status = 'uncertain' WHERE id = (SELECT min(id) FROM deliveries)"
    )
    await conn.execute("UPDATE campaigns SET status = 'done', finished_at = now()")
    page = await _dashboard(launched)
    assert "1 uncertain deliveries" in page
    async with TestClient(TestServer(create_app(launched))) as client:
        await log_in(client, "vic@example.com")
        listed = await (await client.get("/campaigns")).text()
    assert f"<td>{total}</td>" in listed
