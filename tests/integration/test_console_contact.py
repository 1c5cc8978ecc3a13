"""The console's contact page over HTTP: the person's deliveries and what followed them
(opens, clicks, opt-outs, bounces, complaints), each list paged by keyset, within budget."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from mailer.campaigns import lifecycle
from mailer.console.accounts import Role
from mailer.console.app import create_app
from mailer.console.web import CONSOLE
from mailer.core.settings import Settings
from mailer.demo.stores import Stores
from tests.console_setup import Client, console_settings, log_in, operator, small_world
from tests.engine_setup import TEMPLATES

pytestmark = pytest.mark.timeout(120)
WHO = "person1@example.com"


@pytest.fixture
async def client(db_url: str) -> AsyncIterator[Client]:
    settings: Settings = console_settings(db_url, TEMPLATES)
    await operator(settings, "vic@example.com", Role.VIEWER)
    async with TestClient(TestServer(create_app(settings))) as c:
        yield c


@pytest.fixture
async def history(conn: asyncpg.Connection, stores: Stores) -> int:
    """30 campaigns sent to WHO, then 30 opens, a click, an opt-out, a bounce, a complaint."""
    await small_world(conn)
    _, definition = await lifecycle.create(
        stores.campaigns, TEMPLATES / "service_reminder.toml", TEMPLATES
    )
    contact = await conn.fetchval("SELECT id FROM contacts WHERE email = $1", WHO)
    await conn.execute(
        "INSERT INTO campaigns (slug, name, topic_id, definition)"
        " SELECT 'mailing-' || i, name, topic_id, definition"
        " FROM campaigns, generate_series(1, 30) AS i WHERE slug = $1",
        definition.slug,
    )
    base = datetime(2026, 11, 1, tzinfo=UTC)
    await conn.execute(
        "INSERT INTO deliveries (campaign_id, contact_id, status, domain, sent_at)"
        " SELECT id, $1, 'sent', 'example.com', $2::timestamptz + id * interval '1 hour'"
        " FROM campaigns WHERE slug LIKE 'mailing-%' ORDER BY id",
        contact,
        base,
    )
    last = await conn.fetchrow(
        "SELECT d.id, d.campaign_id FROM deliveries d JOIN campaigns p ON p.id = d.campaign_id"
        " WHERE p.slug = 'mailing-30'"
    )
    assert last is not None
    link = await conn.fetchval(
        "INSERT INTO links (campaign_id, url) VALUES ($1, 'https://garage.example/rdv')"
        " RETURNING id",
        last["campaign_id"],
    )
    await conn.executemany(
        "INSERT INTO events (occurred_at, kind, delivery_id, campaign_id, link_id, machine)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        [
            (
                base + timedelta(days=5, minutes=i),
                "open",
                last["id"],
                last["campaign_id"],
                None,
                i == 0,
            )
            for i in range(30)
        ]
        + [(base + timedelta(days=6), "click", last["id"], last["campaign_id"], link, False)],
    )
    await conn.execute(
        "INSERT INTO consents (contact_id, channel, action, source, obtained_at, recorded_at,"
        " evidence) VALUES ($1, 'email', 'withdraw', 'one-click', $2, $2, $3::jsonb)",
        contact,
        base + timedelta(days=7),
        f'{{"campaign_id": {last["campaign_id"]}, "method": "one-click"}}',
    )
    await conn.execute(
        "INSERT INTO bounces (delivery_id, campaign_id, contact_id, inbound_id, hard, status,"
        " occurred_at) VALUES ($1, $2, $3, 1, false, '4.2.2', $4)",
        last["id"],
        last["campaign_id"],
        contact,
        base + timedelta(days=8),
    )
    await conn.execute(
        "INSERT INTO complaints (delivery_id, campaign_id, inbound_id, feedback_type,"
        " occurred_at) VALUES ($1, $2, 2, 'abuse', $3)",
        last["id"],
        last["campaign_id"],
        base + timedelta(days=9),
    )
    return int(contact)


async def test_the_contact_page_shows_deliveries_and_events_paged_by_keyset(
    client: Client, history: int
) -> None:
    await log_in(client, "vic@example.com")
    page = await (await client.get(f"/contacts/{WHO}")).text()
    deliveries = page.split('id="deliveries"')[1].split("</table>")[0]
    events = page.split('id="events"')[1].split("</table>")[0]
    # Newest first: the 30th mailing, down to the 6th on the first page of 25.
    shown = re.findall(r">(mailing-\d+)</a>", deliveries)
    assert shown == [f"mailing-{i}" for i in range(30, 5, -1)]
    assert "sent" in deliveries
    kinds = re.findall(r"<td>(Complaint|Soft bounce|Unsubscribe|Click|Open)", events)
    assert kinds[:4] == ["Complaint", "Soft bounce", "Unsubscribe", "Click"]
    assert kinds.count("Open") == 21  # 25 rows on a page
    assert "https://garage.example/rdv" in events
    assert "4.2.2" in events
    assert "abuse" in events
    assert client.app[CONSOLE].queries_by_route["contact"] <= 10

    # Each list's next page follows its own keyset and keeps the other list where it was.
    nxt = re.search(r'href="\?([^"]*)" id="next-deliveries"', page)
    assert nxt is not None
    page2 = await (await client.get(f"/contacts/{WHO}?{nxt.group(1).replace('&amp;', '&')}")).text()
    rest = re.findall(r">(mailing-\d+)</a>", page2.split('id="deliveries"')[1].split("</table>")[0])
    assert rest == [f"mailing-{i}" for i in range(5, 0, -1)]
    assert 'id="next-deliveries"' not in page2
    nxt = re.search(r'href="\?([^"]*)" id="next-events"', page)
    assert nxt is not None
    page3 = await (await client.get(f"/contacts/{WHO}?{nxt.group(1).replace('&amp;', '&')}")).text()
    events3 = page3.split('id="events"')[1].split("</table>")[0]
    # 34 events in all: the 9 oldest opens remain, the first of them by a machine.
    assert re.findall(r"<td>(Open)", events3) == ["Open"] * 9
    assert events3.count("(machine)") == 1
    assert 'id="next-events"' not in page3
    assert client.app[CONSOLE].queries_by_route["contact"] <= 10


async def test_the_contact_page_speaks_french_and_refuses_a_forged_cursor(
    client: Client, history: int, conn: asyncpg.Connection
) -> None:
    await conn.execute("UPDATE operators SET locale = 'fr'")
    await log_in(client, "vic@example.com")
    page = await (await client.get(f"/contacts/{WHO}")).text()
    assert "Plainte" in page
    assert "Rebond temporaire" in page
    assert "Désabonnement" in page
    assert (await client.get(f"/contacts/{WHO}?events=yesterday")).status == 400
    assert (await client.get(f"/contacts/{WHO}?deliveries=1;DROP")).status == 400


async def test_opens_of_one_delivery_in_the_same_microsecond_are_each_listed_once_across_pages(
    client: Client, conn: asyncpg.Connection, stores: Stores
) -> None:
    """A link scanner and a mail client can open one message in the same microsecond: the
    events page's key tells them apart, so none is skipped or shown twice at a page break."""
    await small_world(conn)
    _, definition = await lifecycle.create(
        stores.campaigns, TEMPLATES / "service_reminder.toml", TEMPLATES
    )
    row = await conn.fetchrow(
        "INSERT INTO deliveries (campaign_id, contact_id, status, domain, sent_at)"
        " SELECT p.id, c.id, 'sent', 'example.com', now() FROM campaigns p, contacts c"
        " WHERE p.slug = $1 AND c.email = $2 RETURNING id, campaign_id",
        definition.slug,
        WHO,
    )
    assert row is not None
    same = datetime(2026, 11, 5, 12, 0, 0, 123456, tzinfo=UTC)
    # 40 opens at one instant (1 by a machine), beside 3 a second later: a page holds 25.
    await conn.executemany(
        "INSERT INTO events (occurred_at, kind, delivery_id, campaign_id, machine, user_agent)"
        " VALUES ($1, 'open', $2, $3, $4, $5)",
        [(same, row["id"], row["campaign_id"], i == 7, f"agent {i}") for i in range(40)]
        + [
            (same + timedelta(seconds=1), row["id"], row["campaign_id"], False, "later")
            for _ in range(3)
        ],
    )
    await log_in(client, "vic@example.com")
    listed: list[str] = []
    query = ""
    for _ in range(5):
        page = await (await client.get(f"/contacts/{WHO}{query}")).text()
        events = page.split('id="events"')[1].split("</table>")[0]
        listed += re.findall(r"<td>(Open)", events)
        machines = events.count("(machine)")
        listed += ["machine"] * machines
        nxt = re.search(r'href="\?([^"]*)" id="next-events"', page)
        if nxt is None:
            break
        query = "?" + nxt.group(1).replace("&amp;", "&")
    assert listed.count("Open") == 43
    assert listed.count("machine") == 1
