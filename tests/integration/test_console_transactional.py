"""The console's transactional page: templates judged by `mailer transactional check`, the
week's counts by state, recent messages by keyset pages, one message as `show` prints it."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from mailer.console.app import create_app
from mailer.core.addresses import address_hash
from mailer.core.settings import Settings
from mailer.demo.stores import Stores
from mailer.transactional.enqueue import enqueue
from mailer.transactional.store import TransactionalStore
from tests.console_pages import VIEWER, as_, queries, settings_
from tests.console_setup import Client
from tests.lane_setup import PARTS, TEMPLATES

pytestmark = pytest.mark.timeout(120)
__all__ = ["settings_"]


@pytest.fixture
async def client(settings_: Settings) -> AsyncIterator[Client]:
    lane = dataclasses.replace(
        settings_,
        transactional=dataclasses.replace(settings_.transactional, templates_dir=str(TEMPLATES)),
    )
    async with TestClient(TestServer(create_app(lane))) as c:
        yield c


async def test_templates_their_check_and_recent_messages_with_their_state(
    client: Client, stores: Stores, conn: asyncpg.Connection
) -> None:
    store = TransactionalStore(stores.pool, TEMPLATES)
    await conn.execute(
        "INSERT INTO suppressions (email_hash, scope, reason, source)"
        " VALUES ($1, 'global', 'hard_bounce', 'dsn')",
        address_hash("gone@example.com"),
    )
    for i in range(55):
        await enqueue(store, template="parts_received", to=f"walkin{i}@example.com", data=PARTS,
                      idempotency_key=f"dms-{i}", locale=None)  # fmt: skip
    refused = await enqueue(store, template="parts_received", to="gone@example.com",
                            data=PARTS, idempotency_key="dms-x", locale=None)  # fmt: skip
    assert refused.refusal is not None
    await as_(client, VIEWER)
    page = await (await client.get("/transactional")).text()
    assert 'id="check-parts_received"><span class="ok">' in page
    assert "safety_recall" in page
    assert f'href="/transactional/{refused.message_id}"' in page
    assert "refused" in page
    assert 'id="next"' in page
    assert queries(client, "transactional") <= 10
    oldest = await conn.fetchval("SELECT min(id) FROM transactional_messages")
    assert f'href="/transactional/{oldest}"' not in page
    before = await conn.fetchval("SELECT min(id) + 6 FROM transactional_messages")
    second = await (await client.get(f"/transactional?before={before}")).text()
    assert f'href="/transactional/{oldest}"' in second
    one = await (await client.get(f"/transactional/{refused.message_id}")).text()
    assert 'id="message-status">refused<' in one
    assert "gone@example.com" in one
    assert queries(client, "transactional_message") <= 10
    filtered = await (await client.get("/transactional?template=safety_recall")).text()
    assert 'href="/transactional/' not in filtered
