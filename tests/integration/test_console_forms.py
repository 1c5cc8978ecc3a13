"""The console's sign-up forms page: forms with their pending and confirmed requests, created,
reworded and disabled through the checks `mailer forms` runs (mailer.forms.authoring)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from mailer.console.app import create_app
from mailer.core.settings import Settings
from tests.console_pages import ADMIN, SENDER, VIEWER, as_, queries, settings_
from tests.console_setup import Client

pytestmark = pytest.mark.timeout(120)
__all__ = ["settings_"]

EN = "Yes, send me the service newsletter."
FR = "Oui, envoyez-moi l'infolettre du service."


@pytest.fixture
async def client(settings_: Settings) -> AsyncIterator[Client]:
    named = dataclasses.replace(
        settings_,
        forms=dataclasses.replace(
            settings_.forms,
            business_name="Garage Tremblay",
            postal_address="12 rue Principale, Québec",
            contact="418 555 0100",
        ),
    )
    async with TestClient(TestServer(create_app(named))) as c:
        yield c


@pytest.fixture(autouse=True)
async def topic(conn: asyncpg.Connection) -> None:
    await conn.execute("INSERT INTO topics (slug, name) VALUES ('service', 'Service')")


def new_form(csrf: str, **extra: str) -> dict[str, str]:
    return {
        "csrf": csrf, "slug": "infolettre", "source": "Site web", "locale_en": "on",
        "locale_fr": "on", "text_en": EN, "text_fr": FR, "topics": "service", **extra,
    }  # fmt: skip


async def test_a_sender_creates_a_form_rewords_it_and_disables_it_each_in_the_log(
    client: Client, conn: asyncpg.Connection
) -> None:
    csrf = await as_(client, SENDER)
    response = await client.post("/forms", data=new_form(csrf), allow_redirects=False)
    assert response.status == 303, await response.text()
    assert response.headers["Location"] == "/forms/infolettre"
    form = await conn.fetchrow("SELECT id, source, double_opt_in, locales FROM forms")
    assert form is not None
    assert (form["source"], form["double_opt_in"], form["locales"]) == (
        "Site web",
        True,
        ["en", "fr"],
    )
    await conn.execute(
        "INSERT INTO signup_requests (form_id, text_id, email_hash, state, email, locale,"
        " expires_at) SELECT $1, (SELECT min(id) FROM form_texts), sha256(i::text::bytea),"
        " CASE WHEN i <= 2 THEN 'pending' ELSE 'confirmed' END,"
        " CASE WHEN i <= 2 THEN i || '@example.com' END, 'en', now() + interval '1 day'"
        " FROM generate_series(1, 5) i",
        form["id"],
    )  # fmt: skip
    listing = await (await client.get("/forms")).text()
    assert 'id="pending-infolettre">2<' in listing
    assert 'id="confirmed-infolettre">3<' in listing
    assert queries(client, "forms") <= 10
    page = await client.post(
        "/forms/infolettre/text", data={"csrf": csrf, "locale": "fr", "text": FR + " Merci."}
    )
    assert page.status == 200
    assert 'id="notice"' in await page.text()
    versions = await conn.fetch("SELECT version FROM form_texts WHERE locale = 'fr' ORDER BY 1")
    assert [r["version"] for r in versions] == [1, 2]
    await client.get("/forms/infolettre")
    assert queries(client, "form") <= 10
    done = await client.post("/forms/infolettre/disable", data={"csrf": csrf})
    assert done.status == 200
    assert await conn.fetchval("SELECT disabled_at IS NOT NULL FROM forms")
    logged = await conn.fetch(
        "SELECT action FROM operator_log WHERE actor_id = $1 AND action LIKE 'form.%' ORDER BY id",
        SENDER,
    )
    assert [r["action"] for r in logged] == ["form.add", "form.text", "form.disable"]


async def test_a_form_missing_a_languages_text_is_refused_naming_the_option(
    client: Client, conn: asyncpg.Connection
) -> None:
    csrf = await as_(client, SENDER)
    data = new_form(csrf)
    del data["text_fr"]
    response = await client.post("/forms", data=data)
    assert response.status == 400
    assert "--text-fr" in await response.text()
    response = await client.post("/forms", data=new_form(csrf, topics="nope"))
    assert response.status == 400
    assert "no topic &#39;nope&#39;" in await response.text()
    assert await conn.fetchval("SELECT count(*) FROM forms") == 0


async def test_a_viewer_cannot_create_a_form_nor_anyone_without_the_csrf_token(
    client: Client, conn: asyncpg.Connection
) -> None:
    csrf = await as_(client, VIEWER)
    assert (await client.post("/forms", data=new_form(csrf))).status == 403
    assert 'id="new-form"' not in await (await client.get("/forms")).text()
    await as_(client, ADMIN)
    data = new_form("forged")
    assert (await client.post("/forms", data=data)).status == 403
    assert await conn.fetchval("SELECT count(*) FROM forms") == 0
