"""A sign-up confirmed while a contact import runs: through the tracker (aiohttp's test
client) and real Postgres."""

from __future__ import annotations

import asyncio

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from mailer.core.addresses import address_hash
from mailer.core.locks import CONTACT_CREATION
from tests.integration.test_signup import sign_up
from tests.signup_setup import make_form, signup_settings
from tracker.app import create_app

Client = TestClient[web.Request, web.Application]


async def waits_on_advisory_lock(conn: asyncpg.Connection) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT count(*) > 0 FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event = 'advisory'"
        )
    )


async def test_a_sign_up_during_an_import_waits_for_it_and_takes_the_imported_contact(
    db_url: str, conn: asyncpg.Connection
) -> None:
    """An import tells its contacts by id (all above its floor are its own): a sign-up that
    created a contact meanwhile would be taken for one of the import's, so it waits. A
    single opt-in form records its grant at once, creating the contact."""
    await make_form(db_url, double_opt_in=False)
    importer = await asyncpg.connect(db_url)
    async with TestClient(TestServer(create_app(signup_settings(db_url)))) as client:
        try:
            async with importer.transaction():
                # What `mailer contacts import` holds for its whole transaction.
                await importer.execute("SELECT pg_advisory_xact_lock($1)", CONTACT_CREATION)
                signing_up = asyncio.ensure_future(sign_up(client, "luc.gagnon@example.com"))
                for _ in range(500):
                    if await waits_on_advisory_lock(conn):
                        break
                    assert not signing_up.done(), "the sign-up did not wait for the import"
                    await asyncio.sleep(0.01)
                assert not signing_up.done()
                # The import creates the same person's contact, then commits.
                imported = await importer.fetchval(
                    "INSERT INTO contacts (email, email_hash, name, locale)"
                    " VALUES ($1, $2, 'Luc Gagnon', 'fr') RETURNING id",
                    "luc.gagnon@example.com",
                    address_hash("luc.gagnon@example.com"),
                )
            status, _ = await signing_up
        finally:
            await importer.close()

    assert status == 200
    rows = await conn.fetch(
        "SELECT c.id, l.kind FROM contacts c JOIN consents l ON l.contact_id = c.id"
        " WHERE c.email = 'luc.gagnon@example.com' AND l.kind IS NOT NULL"
    )
    assert [(r["id"], r["kind"]) for r in rows] == [(imported, "express")]
