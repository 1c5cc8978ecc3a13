"""Shared setup for send-engine tests: contacts, the sample campaign, a keyring, relays."""

from __future__ import annotations

import base64
import dataclasses
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from mailer.campaigns import lifecycle
from mailer.core.addresses import address_hash
from mailer.core.settings import Settings, load
from mailer.core.tokens import Keyring
from mailer.demo.stores import Stores
from mailer.send.engine import Engine
from mailer.send.smtp import Relay, Relays
from mailer.send.store import Started

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates"
KEYS = "1:" + base64.b64encode(b"k" * 32).decode()
NOW = datetime.now(UTC)


def settings_for(port: int, **engine: float) -> Settings:
    base = load(environ={})
    relay = dataclasses.replace(base.smtp, port=port, connections=4, timeout_s=10.0)
    return dataclasses.replace(
        base,
        smtp=relay,
        engine=dataclasses.replace(base.engine, **engine),  # type: ignore[arg-type]
        throttle=dataclasses.replace(
            base.throttle, global_rate=10_000.0, default_domain_rate=10_000.0
        ),
        token_keys=KEYS,
    )


async def add_contacts(
    conn: asyncpg.Connection, count: int, *, domains: tuple[str, ...] = ("example.com",)
) -> list[str]:
    """Contacts with express consent and the attributes the sample template uses."""
    emails = [f"person{i}@{domains[i % len(domains)]}" for i in range(count)]
    attributes = json.dumps(
        {"vehicle": "Toyota RAV4", "next_service": "2026-12-01", "mileage": 48200}
    )
    await conn.executemany(
        "INSERT INTO contacts (email, email_hash, name, locale, attributes, last_activity_at) "
        "VALUES ($1, $2, $3, $4, $5, now())",
        [
            (e, address_hash(e), f"Person {i}", "fr" if i % 2 else "en", attributes)
            for i, e in enumerate(emails)
        ],
    )
    await conn.execute(
        "INSERT INTO consents (contact_id, channel, action, kind, source, obtained_at) "
        "SELECT id, 'email', 'grant', 'express', 'Salon E-commerce Paris', $1 FROM contacts",
        NOW - timedelta(days=400),
    )
    return emails


async def sample_campaign(
    stores: Stores, edits: Mapping[str, str] | None = None, folder: Path | None = None
) -> int:
    """The shipped service reminder, created and launched.

    With `edits` (old text: new text), a copy of its file so edited, written in `folder`.
    """
    await stores.contacts.topic_upsert("service", "Service reminders")
    path = TEMPLATES / "service_reminder.toml"
    if edits:
        assert folder is not None
        text = path.read_text(encoding="utf-8")
        for old, new in edits.items():
            assert old in text, old
            text = text.replace(old, new)
        path = folder / f"campaign-{uuid.uuid4().hex[:8]}.toml"
        path.write_text(text, encoding="utf-8")
    _, definition = await lifecycle.create(stores.campaigns, path, TEMPLATES)
    launched = await lifecycle.launch(stores.campaigns, definition.slug, NOW)
    return launched.campaign_id


async def start(stores: Stores, worker: str, delivery_ids: list[int]) -> list[Started]:
    """One start round for `delivery_ids` (as the recorder makes them for its lanes)."""
    rounds = stores.send.rounds()
    try:
        return await rounds.start(worker, delivery_ids)
    finally:
        await rounds.close()


def engine_for(stores: Stores, settings: Settings, **kwargs: object) -> Engine:
    relays = Relays([Relay(relay, None) for relay in settings.all_relays()])
    return Engine(
        stores.send,
        stores.campaigns,
        settings,
        Keyring.from_spec(settings.require_token_keys()),
        relays,
        **kwargs,  # type: ignore[arg-type]
    )
