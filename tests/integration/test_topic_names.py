"""Topics and channels are named in the reader's language on every page (issue 13, item 4):
a name per language, else the default name, else the slug."""

from __future__ import annotations

import csv
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from mailer.core.settings import DatabaseSettings, Settings, TrackerSettings
from mailer.core.tokens import Keyring, Purpose, Token
from mailer.core.topics import topic_name
from mailer.demo.stores import Stores
from tests.cli_run import run_cli
from tests.engine_setup import KEYS, sample_campaign
from tracker.app import create_app

Client = TestClient[web.Request, web.Application]
RING = Keyring.from_spec(KEYS)


def sign(purpose: Purpose, delivery_id: int) -> str:
    return RING.sign(Token(purpose, delivery_id, None, int(time.time())))


async def form_fields(client: Client, path: str) -> dict[str, str]:
    html = await (await client.get(path)).text()
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', html))


@pytest.fixture
async def client(db_url: str) -> AsyncIterator[Client]:
    settings = Settings(
        database=DatabaseSettings(url=db_url, pool_min=1, pool_max=2),
        tracker=TrackerSettings(base_url="http://127.0.0.1"),
        token_keys=KEYS,
    )
    async with TestClient(TestServer(create_app(settings))) as c:
        yield c


async def mailed(
    stores: Stores,
    conn: asyncpg.Connection,
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, int]:
    """The operator's steps: topics named per language, contacts imported, the service
    reminder launched. Returns each contact's delivery id by locale."""
    for argv in (
        ["service", "--name-fr", "Rappels d'entretien", "--name-en", "Service reminders"],
        ["parts", "--name", "Parts received"],  # a default name only
        ["events", "--opt-in"],  # no name at all: the slug
    ):
        code, printed = await run_cli(monkeypatch, db_url, "topics", "add", *argv)
        assert code == 0, printed
    contacts_csv = tmp_path / "contacts.csv"
    with contacts_csv.open("w", encoding="utf-8", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["email", "locale", "consent", "consent_source", "consent_date", "topics"])
        out.writerow(["lea@example.com", "fr-ca", "express", "Salon", "2024-01-15", "service"])
        out.writerow(["liam@example.com", "en", "express", "Salon", "2024-01-15", "service"])
    code, printed = await run_cli(monkeypatch, db_url, "contacts", "import", str(contacts_csv))
    assert code == 0, printed
    edits = {"active_within_months = 36\n": ""}  # the file has no activity dates
    await sample_campaign(stores, edits, tmp_path)
    rows = await conn.fetch(
        "SELECT c.locale, d.id FROM deliveries d JOIN contacts c ON c.id = d.contact_id"
    )
    return {r["locale"]: r["id"] for r in rows}


async def test_the_french_preference_centre_names_topics_and_channels_in_french(
    client: Client,
    stores: Stores,
    conn: asyncpg.Connection,
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deliveries = await mailed(stores, conn, db_url, tmp_path, monkeypatch)
    html = await (await client.get(f"/p/{sign(Purpose.PREFERENCES, deliveries['fr-ca'])}")).text()
    assert "Rappels d&#39;entretien" in html
    assert "Service reminders" not in html
    assert re.search(r'id="channel-sms"[^>]*> SMS</label>', html)
    assert "Sms" not in html
    assert re.search(r'id="channel-email"[^>]*> Courriel</label>', html)
    assert "Parts received" in html  # no French name: the default name
    assert re.search(r'id="topic-\d+"[^>]*> events</label>', html)  # no name: the slug


async def test_the_english_preference_centre_names_topics_and_channels_in_english(
    client: Client,
    stores: Stores,
    conn: asyncpg.Connection,
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deliveries = await mailed(stores, conn, db_url, tmp_path, monkeypatch)
    html = await (await client.get(f"/p/{sign(Purpose.PREFERENCES, deliveries['en'])}")).text()
    assert "Service reminders" in html
    assert "Rappels d&#39;entretien" not in html
    assert re.search(r'id="channel-sms"[^>]*> Text messages \(SMS\)</label>', html)
    assert re.search(r'id="channel-email"[^>]*> Email</label>', html)


async def test_the_unsubscribe_pages_and_the_history_name_the_topic_in_the_readers_language(
    client: Client,
    stores: Stores,
    conn: asyncpg.Connection,
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deliveries = await mailed(stores, conn, db_url, tmp_path, monkeypatch)
    path = f"/u/{sign(Purpose.UNSUBSCRIBE, deliveries['fr-ca'])}"
    page = await (await client.get(path)).text()
    assert "Ce message portait sur : Rappels d&#39;entretien." in page
    assert "Seulement les messages sur Rappels d&#39;entretien" in page
    fields = await form_fields(client, path)
    done = await client.post(path, data={**fields, "scope": "topic"})
    assert done.status == 200
    assert "ne recevra plus de messages sur Rappels d&#39;entretien" in await done.text()
    history = await (
        await client.get(f"/p/{sign(Purpose.PREFERENCES, deliveries['fr-ca'])}")
    ).text()
    assert "Vous vous êtes désabonné de « Rappels d&#39;entretien »" in history

    english = await (await client.get(f"/u/{sign(Purpose.UNSUBSCRIBE, deliveries['en'])}")).text()
    assert "This message was about: Service reminders." in english


async def test_topics_add_sets_only_the_names_it_is_given_and_topics_list_shows_each_language(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps = [
        ["topics", "add", "service", "--name", "Service", "--name-fr", "Rappels d'entretien"],
        ["topics", "add", "service", "--name-en", "Service reminders"],  # keeps fr and --name
        ["topics", "add", "parts"],
    ]
    for argv in steps:
        code, printed = await run_cli(monkeypatch, db_url, *argv)
        assert code == 0, printed
    code, listing = await run_cli(monkeypatch, db_url, "topics", "list")
    assert code == 0
    rows = {line.split("│")[1].strip(): line for line in listing.splitlines() if "│" in line}
    service = [cell.strip() for cell in rows["service"].split("│")[1:-1]]
    assert service == ["service", "Service", "Service reminders", "Rappels d'entretien", "opt-out"]
    parts = [cell.strip() for cell in rows["parts"].split("│")[1:-1]]
    assert parts == ["parts", "parts", "parts", "parts", "opt-out"]

    code, printed = await run_cli(monkeypatch, db_url, "topics", "add", "service", "--name-fr", "")
    assert code == 0, printed
    code, listing = await run_cli(monkeypatch, db_url, "topics", "list")
    assert "Rappels" not in listing  # "" removed the French name: French readers get "Service"


@pytest.mark.parametrize(
    ("names", "name", "lang", "shown"),
    [
        (
            {"fr": "Rappels d'entretien", "en": "Service reminders"},
            "Service",
            "fr",
            "Rappels d'entretien",
        ),
        ({"en": "Service reminders"}, "Service", "fr", "Service"),  # no French name: the default
        ({}, "", "fr", "service"),  # no name at all: the slug
        ({"fr": ""}, "Service", "fr", "Service"),  # an empty name is no name
    ],
)
def test_a_topic_name_falls_back_from_the_readers_language_to_the_default_name_to_the_slug(
    names: dict[str, str], name: str, lang: str, shown: str
) -> None:
    assert topic_name(names, name, "service", lang) == shown
