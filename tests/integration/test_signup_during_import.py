"""A sign-up confirmed while a contact import runs: through the tracker (aiohttp's test
client), real Postgres, a real SMTP sink for the confirmation mail."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from mailer.core.addresses import address_hash
from mailer.core.locks import CONTACT_CREATION
from tests.integration.test_signup import sign_up
from tests.signup_setup import (
    confirm_path,
    deliver_queued,
    hidden,
    make_form,
    parsed,
    signup_settings,
)
from tests.smtp_servers import smtp_server
from tracker.app import create_app

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client(db_url: str) -> AsyncIterator[Client]:
    await make_form(db_url)
    settings = signup_settings(db_url, ip_prefix_limit=1000)
    async with TestClient(TestServer(create_app(settings))) as c:
        yield c


async def waits_on_advisory_lock(conn: asyncpg.Connection) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT count(*) > 0 FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event = 'advisory'"
        )
    )


async def test_a_confirmation_during_an_import_waits_for_it_and_takes_the_imported_contact(
    client: Client, db_url: str, conn: asyncpg.Connection
) -> None:
    """An import tells its contacts by id (all above its floor are its own): a sign-up that
    created a contact meanwhile would be taken for one of the import's, so it waits."""
    with smtp_server() as (port, handler):
        assert (await sign_up(client, "luc.gagnon@example.com"))[0] == 200
        assert await deliver_queued(db_url, signup_settings(db_url), port) == 1
        path = confirm_path(parsed(handler.messages[0].data))
    page = await (await client.get(path)).text()

    importer = await asyncpg.connect(db_url)
    try:
        async with importer.transaction():
            # What `mailer contacts import` holds for its whole transaction.
            await importer.execute("SELECT pg_advisory_xact_lock($1)", CONTACT_CREATION)
            confirming = asyncio.ensure_future(
                client.post(path, data={"csrf": hidden(page, "csrf")})
            )
            for _ in range(500):
                if await waits_on_advisory_lock(conn):
                    break
                assert not confirming.done(), "the confirmation did not wait for the import"
                await asyncio.sleep(0.01)
            assert not confirming.done()
            # The import creates the same person's contact, then commits.
            imported = await importer.fetchval(
                "INSERT INTO contacts (email, email_hash, name, locale)"
                " VALUES ($1, $2, 'Luc Gagnon', 'fr') RETURNING id",
                "luc.gagnon@example.com",
                address_hash("luc.gagnon@example.com"),
            )
        response = await confirming
    finally:
        await importer.close()

    assert response.status == 200
    rows = await conn.fetch(
        "SELECT c.id, l.kind FROM contacts c JOIN consents l ON l.contact_id = c.id"
        " WHERE c.email = 'luc.gagnon@example.com'"
    )
    assert [(r["id"], r["kind"]) for r in rows] == [(imported, "express")]
