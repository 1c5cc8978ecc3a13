"""The console's report across campaigns over HTTP: the figures of the campaigns started in
a period (opens by people and in all, clicks, bounces by type, opt-outs by scope,
complaints), their total, and the same table as CSV, neutralised against formulas."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from mailer.campaigns import lifecycle
from mailer.console.accounts import Role
from mailer.console.app import create_app
from mailer.console.web import CONSOLE
from mailer.demo.stores import Stores
from tests.console_setup import Client, console_settings, log_in, operator, small_world
from tests.engine_setup import TEMPLATES

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def client(db_url: str) -> AsyncIterator[Client]:
    settings = console_settings(db_url, TEMPLATES)
    await operator(settings, "vic@example.com", Role.VIEWER)
    async with TestClient(TestServer(create_app(settings))) as c:
        yield c


async def _campaign(stores: Stores, conn: asyncpg.Connection, slug: str, started: str) -> int:
    await lifecycle.create(
        stores.campaigns, TEMPLATES / "service_reminder.toml", TEMPLATES, slug=slug
    )
    cid = (await lifecycle.launch(stores.campaigns, slug, datetime.now(UTC))).campaign_id
    await conn.execute(
        "UPDATE campaigns SET started_at = $2::timestamptz WHERE id = $1",
        cid,
        datetime.fromisoformat(started),
    )
    await conn.execute(
        "UPDATE deliveries SET status = 'sent', sent_at = now() WHERE campaign_id = $1", cid
    )
    return int(cid)


async def _delivery(conn: asyncpg.Connection, campaign: int, email: str) -> int:
    found = await conn.fetchval(
        "SELECT d.id FROM deliveries d JOIN contacts c ON c.id = d.contact_id"
        " WHERE d.campaign_id = $1 AND c.email = $2",
        campaign,
        email,
    )
    return int(found)


@pytest.fixture
async def period(conn: asyncpg.Connection, stores: Stores) -> tuple[int, int]:
    """Two campaigns started in November 2026 (one named like a formula), one in October."""
    await small_world(conn)
    a = await _campaign(stores, conn, "nov-a", "2026-11-03T10:00:00+00:00")
    b = await _campaign(stores, conn, "nov-b", "2026-11-20T10:00:00+00:00")
    old = await _campaign(stores, conn, "oct", "2026-10-15T10:00:00+00:00")
    await conn.execute("UPDATE campaigns SET name = '=HYPERLINK(\"x\")' WHERE id = $1", b)
    events = []
    # nov-a: person0 opens twice and clicks; person1's open is a machine's (privacy proxy).
    for email, kind, machine in (
        ("person0@example.com", "open", False),
        ("person0@example.com", "open", False),
        ("person0@example.com", "click", False),
        ("person1@example.com", "open", True),
    ):
        events.append((kind, await _delivery(conn, a, email), a, machine))
    # nov-b: person2 opens; the October campaign has opens that must not count.
    events.append(("open", await _delivery(conn, b, "person2@example.com"), b, False))
    events.append(("open", await _delivery(conn, old, "person2@example.com"), old, False))
    await conn.executemany(
        "INSERT INTO events (occurred_at, kind, delivery_id, campaign_id, machine)"
        " VALUES (now(), $1, $2, $3, $4)",
        events,
    )
    # nov-a: one hard bounce, one soft; nov-b: an opt-out of the channel, one of the topic,
    # and a complaint.
    hard = await _delivery(conn, a, "person3@example.com")
    await conn.execute("UPDATE deliveries SET status = 'bounced' WHERE id = $1", hard)
    soft = await _delivery(conn, a, "person4@example.com")
    await conn.execute(
        "INSERT INTO bounces (delivery_id, campaign_id, contact_id, inbound_id, hard, status)"
        " SELECT id, campaign_id, contact_id, 1, false, '4.2.2' FROM deliveries WHERE id = $1",
        soft,
    )
    for email, topic in (("person4@example.com", False), ("person5@example.com", True)):
        await conn.execute(
            "INSERT INTO consents (contact_id, channel, action, topic_id, source, obtained_at,"
            " evidence) SELECT c.id, 'email', 'withdraw', CASE WHEN $3 THEN t.id END,"
            " 'one-click', now(), jsonb_build_object('campaign_id', $2::bigint)"
            " FROM contacts c, topics t WHERE c.email = $1 AND t.slug = 'service'",
            email,
            b,
            topic,
        )
    await conn.execute(
        "INSERT INTO suppressions (email_hash, scope, channel, reason, source, detail)"
        " SELECT email_hash, 'channel', 'email', 'complaint', 'arf',"
        " jsonb_build_object('campaign_id', $1::bigint) FROM contacts"
        " WHERE email = 'person1@example.com'",
        b,
    )
    return a, b


async def test_the_report_across_campaigns_sums_the_period_and_exports_csv(
    client: Client, period: tuple[int, int]
) -> None:
    await log_in(client, "vic@example.com")
    page = await (await client.get("/reports?from=2026-11-01&to=2026-11-30")).text()
    assert re.search(r'id="total-campaigns">2<', page)
    assert re.search(r'id="total-sent">11<', page)  # 6 + 6 eligible, one bounced
    assert re.search(r'id="total-opened">2 / 3<', page)  # people / all (a proxy's open)
    assert re.search(r'id="total-clicked">1 / 1<', page)
    assert re.search(r'id="total-bounces">1 / 1<', page)
    assert re.search(r'id="total-unsubscribed">2<', page)
    assert re.search(r'id="total-complaints">1<', page)
    assert ">oct<" not in page
    # A fixed list of 12 statements (BEGIN, savepoint and their ends included), plus two
    # folds per campaign (as its own report does), 50 campaigns at most.
    assert client.app[CONSOLE].queries_by_route["reports"] <= 12 + 2 * 2

    response = await client.get("/reports.csv?from=2026-11-01&to=2026-11-30")
    assert response.content_type == "text/csv"
    rows = list(csv.reader(io.StringIO(await response.text())))
    head, lines = rows[1], {r[0]: dict(zip(rows[1], r, strict=True)) for r in rows[2:]}
    assert "unsubscribed (email)" in head
    assert "unsubscribed (topic)" in head
    assert set(lines) == {"nov-a", "nov-b", "total"}
    assert lines["nov-b"]["name"] == '\'=HYPERLINK("x")'  # a formula, neutralised (OWASP)
    assert lines["nov-a"]["opened (people)"] == "1"
    assert lines["nov-a"]["opens (all)"] == "3"
    assert lines["nov-a"]["hard bounces"] == "1"
    assert lines["nov-b"]["unsubscribed (topic)"] == "1"
    assert lines["total"]["complaints"] == "1"

    # October alone: the older campaign, its own open; a bad date is refused, in words.
    october = await (await client.get("/reports?from=2026-10-01&to=2026-10-31")).text()
    assert re.search(r'id="total-opened">1 / 1<', october)
    assert (await client.get("/reports?from=2026-13-01")).status == 400


async def test_the_report_across_campaigns_speaks_french(
    client: Client, period: tuple[int, int], conn: asyncpg.Connection
) -> None:
    await conn.execute("UPDATE operators SET locale = 'fr'")
    await log_in(client, "vic@example.com")
    page = await (await client.get("/reports?from=2026-12-01&to=2026-12-31")).text()
    assert "Aucune campagne lancée dans cette période." in page
