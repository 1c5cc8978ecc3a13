"""Exclusion reasons and lint problems in the operator's language (fr or en), worded from
the rules' codes: the audience page, the live lint of the editor, a contact's explanation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from mailer.campaigns import lifecycle
from mailer.console.accounts import Role
from mailer.console.app import create_app
from mailer.demo.stores import Stores
from tests.console_setup import (
    Client,
    console_settings,
    log_in,
    operator,
    small_world,
    templates_with_a_footer_lacking_the_address,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def templates(tmp_path: Path) -> Path:
    return templates_with_a_footer_lacking_the_address(tmp_path)


@pytest.fixture
async def client(db_url: str, templates: Path) -> AsyncIterator[Client]:
    settings = console_settings(db_url, templates)
    await operator(settings, "ada@example.com", Role.SENDER)
    async with TestClient(TestServer(create_app(settings))) as c:
        yield c


@pytest.fixture
async def draft(conn: asyncpg.Connection, stores: Stores, templates: Path) -> str:
    await small_world(conn)
    _, definition = await lifecycle.create(
        stores.campaigns, templates / "service_reminder.toml", templates
    )
    return definition.slug


@pytest.mark.parametrize(
    ("lang", "no_consent", "expired", "missing_address", "explained"),
    [
        (
            "en",
            "no consent on record",
            "implied consent expired",
            "express, en, html: missing postal address",
            "no email consent on record",
        ),
        (
            "fr",
            "aucun consentement au dossier",
            "consentement tacite expiré",
            "exprès, en, HTML : adresse postale manquante",
            'aucun consentement au dossier</span> <span lang="en">(no email consent',
        ),
    ],
)
async def test_reasons_and_lint_problems_are_worded_in_the_operators_language(
    client: Client,
    draft: str,
    templates: Path,
    conn: asyncpg.Connection,
    lang: str,
    no_consent: str,
    expired: str,
    missing_address: str,
    explained: str,
) -> None:
    await conn.execute("UPDATE operators SET locale = $1", lang)
    csrf = await log_in(client, "ada@example.com")
    audience = await (await client.get(f"/campaigns/{draft}/audience")).text()
    row = audience.split('id="reason-no_consent"')[1].split("</tr>")[0]
    assert no_consent in row
    assert expired in audience.split('id="reason-consent_expired"')[1].split("</tr>")[0]

    text = (templates / "service_reminder.toml").read_text(encoding="utf-8")
    broken = text.replace('template = "service_reminder"', 'template = "no_address"')
    lint = await (
        await client.post("/campaigns/lint", data={"text": broken}, headers={"X-CSRF-Token": csrf})
    ).text()
    assert missing_address in lint

    explain = await (
        await client.get(f"/contacts/nobody@example.org/explain?campaign={draft}")
    ).text()
    assert explained in explain.split('id="reason-text">')[1]
