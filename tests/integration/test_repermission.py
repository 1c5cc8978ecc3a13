"""The re-permission campaign: who is asked, the signed "I agree" link, and what it records."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from mailer.campaigns import audience, lifecycle
from mailer.campaigns.message import Composer, Recipient
from mailer.campaigns.render import Renderer
from mailer.campaigns.template_set import TemplateSet
from mailer.core.addresses import address_hash
from mailer.core.consent import Kind
from mailer.core.tokens import Purpose
from mailer.demo.stores import Stores
from tests.engine_setup import TEMPLATES
from tests.integration.test_tracker_app import RING, Client, form_fields, settings_for, sign, tamper
from tracker.app import create_app

AT = datetime.now(UTC).replace(microsecond=0)
CONSENT_TEXT_START = "Oui, Garage Tremblay Automobiles peut continuer"
# (email, kind, obtained days before AT): 6-month inquiries lapse ~182 days after.
LEDGER = [
    ("lapsing@example.com", "implied_inquiry", 150),  # lapses in ~32 days: asked
    ("lapsed@example.com", "implied_inquiry", 200),  # already lapsed: never asked
    ("later@example.com", "implied_purchase", 100),  # lapses in ~630 days: not yet
    ("express@example.com", "express", 900),  # nothing to ask
    ("both@example.com", "implied_inquiry", 150),  # also holds express, below
    ("both@example.com", "express", 900),
]


async def add_ledger(conn: asyncpg.Connection) -> None:
    for email, kind, days in LEDGER:
        contact = await conn.fetchval(
            "INSERT INTO contacts (email, email_hash, name, locale) VALUES ($1, $2, 'Marie', 'fr')"
            " ON CONFLICT (email) DO UPDATE SET name = excluded.name RETURNING id",
            email,
            address_hash(email),
        )
        await conn.execute(
            "INSERT INTO consents (contact_id, channel, action, kind, source, obtained_at) "
            "VALUES ($1, 'email', 'grant', $2, 'Salon E-commerce Paris', $3)",
            contact,
            kind,
            AT - timedelta(days=days),
        )


@pytest.fixture
async def campaign(stores: Stores, conn: asyncpg.Connection) -> int:
    await stores.contacts.topic_upsert("service", "Service reminders")
    await add_ledger(conn)
    campaign_id, _ = await lifecycle.create(
        stores.campaigns, TEMPLATES / "repermission.toml", TEMPLATES
    )
    return campaign_id


@pytest.fixture
async def client(db_url: str) -> AsyncIterator[Client]:
    async with TestClient(TestServer(create_app(settings_for(db_url)))) as c:
        yield c


async def lapsing_delivery(stores: Stores, conn: asyncpg.Connection, campaign: int) -> int:
    await stores.campaigns.freeze_audience(campaign, AT)
    return int(await conn.fetchval("SELECT id FROM deliveries"))


async def consents_of(conn: asyncpg.Connection, email: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT l.* FROM consents l JOIN contacts c ON c.id = l.contact_id "
        "WHERE c.email = $1 ORDER BY l.id",
        email,
    )


async def test_freeze_asks_only_contacts_whose_implied_consent_lapses_within_the_window(
    stores: Stores, conn: asyncpg.Connection, campaign: int
) -> None:
    result = await stores.campaigns.freeze_audience(campaign, AT)
    assert result.added == 1
    assert result.counts == {"eligible": 1, "consent_expired": 1, "not_lapsing": 3}
    emails = await conn.fetch(
        "SELECT c.email, d.consent_kind FROM deliveries d JOIN contacts c ON c.id = d.contact_id"
    )
    assert [tuple(r) for r in emails] == [("lapsing@example.com", "implied_inquiry")]


async def test_a_rendered_request_carries_the_consent_text_and_a_signed_confirm_link(
    stores: Stores, conn: asyncpg.Connection, campaign: int
) -> None:
    delivery = await lapsing_delivery(stores, conn, campaign)
    definition = (await lifecycle.load_definition(stores.campaigns, "repermission-2024-10"))[1]
    renderer = Renderer(TemplateSet.load(TEMPLATES, definition.template))
    composer = Composer(
        definition,
        renderer,
        RING,
        tracker_base_url="http://127.0.0.1/",
        sender_domain="garage-tremblay.example",
        link_ids={url: i for i, url in enumerate(renderer.links)},
    )
    recipient = Recipient(
        delivery_id=delivery,
        email="lapsing@example.com",
        name="Marie",
        locale="fr",
        attributes={},
        consent_kind=Kind.IMPLIED_INQUIRY,
        consent_source="Salon E-commerce Paris",
        consent_obtained_at=AT - timedelta(days=150),
    )
    message = message_from_bytes(composer.compose(recipient, AT).data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    html_part = message.get_body(("html",))
    assert html_part is not None
    html = html_part.get_content()
    assert CONSENT_TEXT_START in html
    found = re.search(r'href="http://127\.0\.0\.1/a/([A-Za-z0-9_-]+)"', html)
    assert found is not None, "the confirm link is not click-tracked or missing"
    token = RING.verify(found[1], now=int(time.time()))
    assert (token.purpose, token.delivery_id) == (Purpose.CONFIRM, delivery)


async def test_get_shows_the_consent_text_and_writes_nothing(
    stores: Stores, conn: asyncpg.Connection, campaign: int, client: Client
) -> None:
    delivery = await lapsing_delivery(stores, conn, campaign)
    before = await conn.fetchval("SELECT count(*) FROM consents")
    path = confirm_path(delivery)
    for _ in range(3):  # link scanners follow every link
        response = await client.get(path)
        assert response.status == 200
        html = await response.text()
        assert CONSENT_TEXT_START.replace("'", "&#39;") in html
        assert 'id="agree"' in html
    assert await conn.fetchval("SELECT count(*) FROM consents") == before


def confirm_path(delivery: int) -> str:
    return f"/a/{sign(Purpose.CONFIRM, delivery)}"


async def test_post_records_one_express_grant_with_evidence_and_a_repeat_adds_nothing(
    stores: Stores, conn: asyncpg.Connection, campaign: int, client: Client
) -> None:
    delivery = await lapsing_delivery(stores, conn, campaign)
    path = confirm_path(delivery)
    fields = await form_fields(client, path)
    agent = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
    for _ in range(2):
        response = await client.post(path, data=fields, headers={"User-Agent": agent})
        assert response.status == 200
        assert "accepte de continuer" in await response.text()
    grants = [r for r in await consents_of(conn, "lapsing@example.com") if r["kind"] == "express"]
    assert len(grants) == 1
    grant = grants[0]
    assert (grant["action"], grant["channel"], grant["topic_id"]) == ("grant", "email", None)
    assert grant["source"] == "repermission: repermission-2024-10"
    evidence = json.loads(grant["evidence"])
    assert evidence["delivery_id"] == delivery
    assert evidence["campaign_id"] == campaign
    assert evidence["method"] == "confirm link"
    assert evidence["user_agent"] == agent
    assert evidence["ip_prefix"] == "127.0.0.0/24"
    definition = json.loads(
        await conn.fetchval("SELECT definition FROM campaigns WHERE id = $1", campaign)
    )
    assert evidence["consent_text"] == definition["consent_text"]


async def test_post_without_the_csrf_field_or_with_a_tampered_token_writes_nothing(
    stores: Stores, conn: asyncpg.Connection, campaign: int, client: Client
) -> None:
    delivery = await lapsing_delivery(stores, conn, campaign)
    before = await conn.fetchval("SELECT count(*) FROM consents")
    path = confirm_path(delivery)
    assert (await client.post(path, data={"csrf": "0" * 32})).status == 403
    bad = f"/a/{tamper(path.removeprefix('/a/'))}"
    assert (await client.get(bad)).status == 404
    assert (await client.post(bad, data={"csrf": "x"})).status == 404
    assert await conn.fetchval("SELECT count(*) FROM consents") == before


async def test_after_agreeing_the_contact_is_eligible_through_express_consent(
    stores: Stores, conn: asyncpg.Connection, campaign: int, client: Client
) -> None:
    delivery = await lapsing_delivery(stores, conn, campaign)
    path = confirm_path(delivery)
    fields = await form_fields(client, path)
    assert (await client.post(path, data=fields)).status == 200
    spec = await stores.campaigns.campaign_spec("repermission-2024-10")
    assert spec is not None
    inputs = await stores.contacts.contact_rule_inputs("lapsing@example.com")
    assert inputs is not None
    # A year on, the inquiry has lapsed but the express grant holds.
    later = datetime.now(UTC) + timedelta(days=365)
    verdict = audience.explain(inputs, spec, later)
    assert verdict.eligible
    assert verdict.consent is not None
    assert verdict.consent.kind is Kind.EXPRESS
    rows = await stores.campaigns.audience(spec, later)
    mine = [r for r in rows if r.consent_kind == "express"]
    assert len(mine) == 3  # express@, both@ and now lapsing@
