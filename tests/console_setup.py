"""Shared setup for the browser console's tests: settings, a small world, operators, login."""

from __future__ import annotations

import dataclasses
import re
import shutil
from datetime import timedelta
from pathlib import Path

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient

from mailer.console.accounts import Role
from mailer.console.enrolment import add_operator
from mailer.console.store import ConsoleStore
from mailer.core.addresses import address_hash
from mailer.core.settings import Settings
from mailer.db import connect
from tests.engine_setup import KEYS, NOW, TEMPLATES, add_contacts, settings_for

Client = TestClient[web.Request, web.Application]
PASSWORD = "correct horse battery staple"
_CSRF = re.compile(r'name="csrf" value="([^"]*)"')


def console_settings(
    db_url: str, templates: Path, smtp_port: int = 25, **console: object
) -> Settings:
    """Defaults on the test's database, the test's templates folder, a token key.

    Pages wait for their background reads (console.page_wait_ms) up to 30 s here, so a
    test sees a result on the first visit; tests of the background itself pass 0.
    """
    console = {"page_wait_ms": 30000, **console}
    base = settings_for(smtp_port)
    return dataclasses.replace(
        base,
        database=dataclasses.replace(base.database, url=db_url, pool_max=6),
        console=dataclasses.replace(
            base.console,
            templates_dir=str(templates),
            **console,  # type: ignore[arg-type]
        ),
        token_keys=KEYS,
    )


def templates_with_a_footer_lacking_the_address(folder: Path) -> Path:
    """The shipped templates plus `no_address`, whose layout forgets the postal address."""
    target = folder / "templates"
    shutil.copytree(TEMPLATES, target)
    for suffix in ("html", "txt"):
        # The address stands in the sender part the layout includes: a copy without it, and a
        # layout that includes that copy.
        sender = (TEMPLATES / "transactional" / f"_sender.{suffix}").read_text(encoding="utf-8")
        kept = "\n".join(line for line in sender.splitlines() if "postal_address" not in line)
        (target / "transactional" / f"_noaddr.{suffix}").write_text(kept, encoding="utf-8")
        text = (TEMPLATES / f"layout.{suffix}").read_text(encoding="utf-8")
        included = f'"transactional/_sender.{suffix}"'
        assert included in text
        noaddr = text.replace(included, f'"transactional/_noaddr.{suffix}"')
        (target / f"layout_noaddr.{suffix}").write_text(noaddr, encoding="utf-8")
        main = (TEMPLATES / f"service_reminder.{suffix}").read_text(encoding="utf-8")
        (target / f"no_address.{suffix}").write_text(
            main.replace(f"layout.{suffix}", f"layout_noaddr.{suffix}"), encoding="utf-8"
        )
    return target


async def small_world(conn: asyncpg.Connection, eligible: int = 6) -> list[str]:
    """The 'service' topic, `eligible` contacts with express consent, and three who are out:
    one without consent, one who unsubscribed (suppressed), one with a lapsed inquiry."""
    await conn.execute(
        "INSERT INTO topics (slug, name, default_subscribed) VALUES ('service', 'Service', true)"
    )
    emails = await add_contacts(conn, eligible)
    for email, kind in (
        ("nobody@example.org", None),
        ("gone@example.org", "express"),
        ("asked@example.org", "implied_inquiry"),
    ):
        contact = await conn.fetchval(
            "INSERT INTO contacts (email, email_hash, name, locale, last_activity_at)"
            " VALUES ($1, $2, 'Out', 'en', now()) RETURNING id",
            email,
            address_hash(email),
        )
        if kind:
            await conn.execute(
                "INSERT INTO consents (contact_id, channel, action, kind, source, obtained_at)"
                " VALUES ($1, 'email', 'grant', $2, 'quote request', $3)",
                contact,
                kind,
                NOW - timedelta(days=400),
            )
    await conn.execute(
        "INSERT INTO suppressions (email_hash, scope, channel, reason, source)"
        " VALUES ($1, 'channel', 'email', 'unsubscribe', 'test')",
        address_hash("gone@example.org"),
    )
    return emails


async def operator(settings: Settings, email: str, role: Role) -> None:
    async with connect(settings.database.url, max_size=1) as pool:
        await add_operator(
            ConsoleStore(pool),
            settings,
            email,
            role,
            password=PASSWORD,
            actor="test",
        )


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "no CSRF field on the page"
    return found.group(1)


async def log_in(client: Client, email: str, password: str = PASSWORD) -> str:
    """Log in through the form; the CSRF token of the first page after it."""
    page = await client.get("/login")
    token = csrf_of(await page.text())
    response = await client.post(
        "/login", data={"email": email, "password": password, "csrf": token, "next": "/"}
    )
    assert response.status == 200, await response.text()
    return csrf_of(await response.text())
