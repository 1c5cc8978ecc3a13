"""The live audience runs in the background: the page answers at once with the last result
and its age, or "being computed" (htmx fetches the page again until the result is there),
and a result older than console.audience_max_age_seconds is recomputed."""

from __future__ import annotations

import asyncio
import re

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from mailer.campaigns import lifecycle
from mailer.console.accounts import Role
from mailer.console.app import create_app
from mailer.console.web import CONSOLE
from mailer.core.addresses import address_hash
from mailer.demo.stores import Stores
from tests.console_setup import Client, console_settings, log_in, operator, small_world
from tests.engine_setup import TEMPLATES

pytestmark = pytest.mark.timeout(120)


async def _until(client: Client, path: str, marker: str) -> str:
    """The page once it shows `marker` (as htmx's repeated fetches would), within 30 s."""
    for _ in range(300):
        page = await (await client.get(path)).text()
        if marker in page:
            return page
        await asyncio.sleep(0.1)
    raise AssertionError(f"{marker} never appeared on {path}")


async def test_the_live_audience_is_computed_in_the_background_and_shown_with_its_age(
    db_url: str, conn: asyncpg.Connection, stores: Stores
) -> None:
    await small_world(conn)
    _, definition = await lifecycle.create(
        stores.campaigns, TEMPLATES / "service_reminder.toml", TEMPLATES
    )
    path = f"/campaigns/{definition.slug}/audience"
    settings = console_settings(db_url, TEMPLATES, page_wait_ms=0, audience_max_age_seconds=1)
    await operator(settings, "vic@example.com", Role.VIEWER)
    async with TestClient(TestServer(create_app(settings))) as client:
        await log_in(client, "vic@example.com")
        first = await (await client.get(path)).text()
        # The page did not wait: it says so and asks htmx to fetch it again.
        assert 'id="audience-computing"' in first
        assert 'id="reasons"' not in first
        assert f'hx-get="{path}?live=1"' in first
        page = await _until(client, path, 'id="reasons"')
        assert re.search(r'id="eligible">6<', page)
        assert "nobody@example.org" in page  # a sample, linked to its explanation
        assert client.app[CONSOLE].queries_by_route["audience"] <= 4

        # Someone unsubscribes. Once the result is older than its maximum age, the next
        # visit shows it with its age while a newer one is computed, then the newer one.
        await conn.execute(
            "INSERT INTO suppressions (email_hash, scope, channel, reason, source)"
            " VALUES ($1, 'channel', 'email', 'unsubscribe', 'test')",
            address_hash("person0@example.com"),
        )
        await asyncio.sleep(1.1)
        stale = await (await client.get(path)).text()
        assert re.search(r'id="eligible">6<', stale)
        assert 'id="audience-refreshing"' in stale
        assert re.search(r"\(\d+ s ago\)", stale)
        page = await _until(client, path, 'id="eligible">5<')
        assert "person0@example.com" in page
        assert 'id="audience-refreshing"' not in page


async def test_the_live_audience_waits_for_its_result_within_the_page_budget(
    db_url: str, conn: asyncpg.Connection, stores: Stores
) -> None:
    await small_world(conn)
    _, definition = await lifecycle.create(
        stores.campaigns, TEMPLATES / "service_reminder.toml", TEMPLATES
    )
    settings = console_settings(db_url, TEMPLATES)  # tests wait up to 30 s
    await operator(settings, "vic@example.com", Role.VIEWER)
    async with TestClient(TestServer(create_app(settings))) as client:
        await log_in(client, "vic@example.com")
        page = await (await client.get(f"/campaigns/{definition.slug}/audience")).text()
        assert re.search(r'id="eligible">6<', page)
        assert "hx-get" not in page.split('id="audience-result"')[1].split(">")[0]
