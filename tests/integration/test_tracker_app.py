"""The tracking server against a real Postgres, through aiohttp's test client."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import asyncpg
import pytest
from aiohttp import ClientSession, FormData, web
from aiohttp.test_utils import TestClient, TestServer

from mailer.campaigns import campaign_file
from mailer.core.addresses import address_hash
from mailer.core.settings import DatabaseSettings, Settings, TrackerSettings
from mailer.core.tokens import Keyring, Purpose, Token
from tracker.app import create_app, run
from tracker.context import TRACKER
from tracker.hits import GIF

KEYS = "1:" + base64.b64encode(bytes(range(7, 39))).decode()
RING = Keyring.from_spec(KEYS)
DEAD_DB = "postgresql://postgres@127.0.0.1:1/nowhere"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
HOSTILE = "<script>alert('x')</script>"

Client = TestClient[web.Request, web.Application]


@dataclass(frozen=True)
class World:
    topic_id: int
    other_topic_id: int
    contact_id: int
    campaign_id: int
    delivery_id: int
    link_id: int
    other_link_id: int  # registered for another campaign
    email: str

    @property
    def email_hash(self) -> bytes:
        return address_hash(self.email)


def sign(purpose: Purpose, delivery_id: int, link_id: int | None = None) -> str:
    return RING.sign(Token(purpose, delivery_id, link_id, int(time.time())))


def tamper(token: str) -> str:
    """Flip one MAC character: still well-formed base64url, no longer genuine."""
    i = len(token) // 2
    return token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]


def settings_for(db_url: str, **tracker: Any) -> Settings:
    return Settings(
        database=DatabaseSettings(url=db_url, pool_min=1, pool_max=4),
        tracker=TrackerSettings(
            base_url="http://127.0.0.1", **{"flush_interval_ms": 50, **tracker}
        ),
        token_keys=KEYS,
    )


def campaign_definition(name: str, business_name: str) -> dict[str, Any]:
    """campaigns.definition exactly as `campaign create` stores it (the campaign file's shape)."""
    return campaign_file.from_mapping(
        {
            "slug": "spring",
            "name": name,
            "topic": "news",
            "template": "spring",
            "subject": "Our spring offers",
            "from_name": "The ACME service team",  # not the business name: that one must win
            "from_address": "service@acme.example",
            "sender": {
                "business_name": business_name,
                "postal_address": "1 Main Street, Springfield",
                "web": "https://acme.example",
            },
        },
        templates_dir=None,
    ).to_json()


async def make_world(
    conn: asyncpg.Connection,
    *,
    email: str = "marie@example.com",
    name: str = "Marie Curie",
    locale: str = "en",
    sender: str = "ACME Cars",
    campaign_name: str = "Spring sale",
    definition: dict[str, Any] | None = None,
    topic_name: str = "Monthly news",
    source: str = "Salon E-commerce Paris",
    sent_seconds_ago: int = 3600,
) -> World:
    topic = await conn.fetchval(
        "INSERT INTO topics (slug, name, description, default_subscribed)"
        " VALUES ('news', $1, 'What is new each month', false) RETURNING id",
        topic_name,
    )
    other_topic = await conn.fetchval(
        "INSERT INTO topics (slug, name) VALUES ('service', 'Service reminders') RETURNING id"
    )
    contact = await conn.fetchval(
        "INSERT INTO contacts (email, email_hash, name, locale) VALUES ($1, $2, $3, $4)"
        " RETURNING id",
        email,
        address_hash(email),
        name,
        locale,
    )
    await conn.execute(
        "INSERT INTO consents (contact_id, channel, action, kind, source, obtained_at)"
        " VALUES ($1, 'email', 'grant', 'express', $2, '2012-09-19 10:00+00')",
        contact,
        source,
    )
    await conn.execute(
        "INSERT INTO consents (contact_id, channel, action, kind, source, obtained_at)"
        " VALUES ($1, 'sms', 'grant', 'express', 'checkout form', '2020-03-01 10:00+00')",
        contact,
    )
    await conn.execute(
        "INSERT INTO contact_topics (contact_id, topic_id, subscribed, source)"
        " VALUES ($1, $2, true, 'import 1 line 2')",
        contact,
        topic,
    )
    campaign = await conn.fetchval(
        "INSERT INTO campaigns (slug, name, topic_id, definition)"
        " VALUES ('spring', $1, $2, $3::jsonb) RETURNING id",
        campaign_name,
        topic,
        json.dumps(
            campaign_definition(campaign_name, sender) if definition is None else definition
        ),
    )
    other_campaign = await conn.fetchval(
        "INSERT INTO campaigns (slug, name, topic_id, definition)"
        " VALUES ('autumn', 'Autumn sale', $1, '{}') RETURNING id",
        topic,
    )
    delivery = await conn.fetchval(
        "INSERT INTO deliveries (campaign_id, contact_id, domain, status, sent_at)"
        " VALUES ($1, $2, 'example.com', 'sent', now() - make_interval(secs => $3))"
        " RETURNING id",
        campaign,
        contact,
        float(sent_seconds_ago),
    )
    link = await conn.fetchval(
        "INSERT INTO links (campaign_id, url) VALUES ($1, 'https://shop.example.com/spring?a=1')"
        " RETURNING id",
        campaign,
    )
    other_link = await conn.fetchval(
        "INSERT INTO links (campaign_id, url) VALUES ($1, 'https://evil.example.net/')"
        " RETURNING id",
        other_campaign,
    )
    return World(topic, other_topic, contact, campaign, delivery, link, other_link, email)


@pytest.fixture
async def world(conn: asyncpg.Connection) -> World:
    return await make_world(conn)


@pytest.fixture
async def client(db_url: str) -> AsyncIterator[Client]:
    async with TestClient(TestServer(create_app(settings_for(db_url)))) as c:
        yield c


async def table_counts(conn: asyncpg.Connection) -> dict[str, int]:
    row = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM consents) AS consents,"
        " (SELECT count(*) FROM suppressions) AS suppressions,"
        " (SELECT count(*) FROM contact_channels) AS channels,"
        " (SELECT count(*) FROM contact_topics WHERE NOT subscribed) AS topic_optouts,"
        " (SELECT count(*) FROM events) AS events"
    )
    assert row is not None
    return dict(row)


async def wait_for_events(conn: asyncpg.Connection, expected: int) -> list[asyncpg.Record]:
    """Poll until the flusher has written `expected` events (it runs every 50 ms here).

    Returns as soon as they are there: the 30 s are for a loaded machine, never waited out
    by a passing test.
    """
    deadline = time.monotonic() + 30
    while True:
        rows = await conn.fetch("SELECT * FROM events ORDER BY occurred_at, kind")
        if len(rows) >= expected or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.02)


async def metric(client: Client, name: str, **labels: str) -> float:
    """A metric's value from /metrics, summed over the labels not given (0 when absent)."""
    text = await (await client.get("/metrics")).text()
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.partition("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def drained(client: Client) -> None:
    """A barrier: every hit answered so far is written (the event buffer flushed now)."""
    tracker = client.app[TRACKER]
    while len(tracker.buffer):
        assert await tracker.buffer.flush()


async def settled_metric(client: Client, name: str, expected: float, **labels: str) -> float:
    """A metric the flusher updates just after its commit: poll for `expected` (up to 30 s)."""
    deadline = time.monotonic() + 30
    while (value := await metric(client, name, **labels)) != expected:
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)
    return value


def gmail_one_click() -> dict[str, Any]:
    """The RFC 8058 POST as mailbox providers send it: a urlencoded body, nothing else."""
    return {
        "data": b"List-Unsubscribe=One-Click",
        "headers": {"Content-Type": "application/x-www-form-urlencoded"},
    }


async def form_fields(client: Client, path: str) -> dict[str, str]:
    """The hidden fields of the page's form, as a browser would submit them."""
    html = await (await client.get(path)).text()
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', html))


# ---------------------------------------------------------------- open pixel


async def test_open_pixel_returns_an_uncacheable_43_byte_gif_and_records_the_open(
    client: Client, world: World, conn: asyncpg.Connection
) -> None:
    response = await client.get(
        f"/o/{sign(Purpose.OPEN, world.delivery_id)}", headers={"User-Agent": FIREFOX}
    )
    assert response.status == 200
    assert response.headers["Content-Type"] == "image/gif"
    assert "no-store" in response.headers["Cache-Control"]
    body = await response.read()
    assert body == GIF
    assert len(body) == 43
    [event] = await wait_for_events(conn, 1)
    assert event["kind"] == "open"
    assert event["delivery_id"] == world.delivery_id
    assert event["campaign_id"] == world.campaign_id
    assert event["machine"] is False
    assert event["user_agent"] == FIREFOX
    assert str(event["ip_prefix"]) == "127.0.0.0/24"


async def test_tampered_or_foreign_open_tokens_still_get_the_gif_but_record_nothing(
    client: Client, world: World, conn: asyncpg.Connection
) -> None:
    bad = [
        tamper(sign(Purpose.OPEN, world.delivery_id)),
        "not-a-token",
        sign(Purpose.UNSUBSCRIBE, world.delivery_id),  # genuine, but not an open token
        Keyring([(1, b"k" * 32)]).sign(Token(Purpose.OPEN, world.delivery_id, None, 0)),
    ]
    for token in bad:
        response = await client.get(f"/o/{token}")
        assert response.status == 200
        assert await response.read() == GIF
    await drained(client)
    assert (await table_counts(conn))["events"] == 0
    # Four bad tokens, four rejections (by reason: tampered and foreign are "bad", the
    # genuine unsubscribe token is "wrong_purpose"; "not-a-token" is "malformed" or "bad").
    rejected = await metric(client, "tracker_token_rejections_total", route="open")
    assert rejected == 4
    assert (
        await metric(client, "tracker_token_rejections_total", route="open", reason="wrong_purpose")
        == 1
    )


async def test_apple_mpp_google_proxy_and_head_opens_are_flagged_machine(
    client: Client, world: World, conn: asyncpg.Connection
) -> None:
    path = f"/o/{sign(Purpose.OPEN, world.delivery_id)}"
    google = (
        "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
    )
    await client.get(path, headers={"User-Agent": "Mozilla/5.0"})
    await client.get(path, headers={"User-Agent": google})
    await client.head(path, headers={"User-Agent": FIREFOX})
    # Behind our balancer, Apple's proxy address arrives in X-Forwarded-For.
    await client.get(path, headers={"User-Agent": FIREFOX, "X-Forwarded-For": "17.58.1.2"})
    await client.get(path, headers={"User-Agent": FIREFOX})
    rows = await wait_for_events(conn, 5)
    assert [r["machine"] for r in rows].count(True) == 4
    assert {str(r["ip_prefix"]) for r in rows} == {"127.0.0.0/24", "17.58.1.0/24"}
    machine = await settled_metric(client, "tracker_events_total", 4, kind="open", agent="machine")
    assert machine == 4
    assert await metric(client, "tracker_events_total", kind="open", agent="human") == 1
    # Unique counts: the first open per delivery, total and human.
    unique = await conn.fetchrow(
        "SELECT count(DISTINCT delivery_id) AS opened,"
        " count(DISTINCT delivery_id) FILTER (WHERE NOT machine) AS human"
        " FROM events WHERE kind = 'open' AND campaign_id = $1",
        world.campaign_id,
    )
    assert unique is not None
    assert (unique["opened"], unique["human"]) == (1, 1)


async def test_pixel_is_served_while_the_database_is_down_and_the_loss_is_counted(
    world: World,
) -> None:
    app = create_app(settings_for(DEAD_DB, buffer_max=3), shutdown_flush_s=0.3)
    async with TestClient(TestServer(app)) as client:
        for _ in range(5):
            response = await client.get(f"/o/{sign(Purpose.OPEN, world.delivery_id)}")
            assert response.status == 200
            assert await response.read() == GIF
        health = await client.get("/healthz")
        assert health.status == 503
        assert (await health.json())["database"] is False
        dropped = await metric(client, "tracker_events_dropped_total", reason="overflow")
        buffered = await metric(client, "tracker_event_buffer_size")
        assert dropped >= 2
        assert dropped + buffered == 5
    # Shutdown could not write the rest either: counted, not silent.
    registry = app[TRACKER].metrics.registry
    lost = sum(
        registry.get_sample_value("tracker_events_dropped_total", {"reason": reason}) or 0
        for reason in ("overflow", "shutdown")
    )
    assert lost == 5


# ---------------------------------------------------------------- clicks


async def test_click_redirects_to_the_registered_url_and_records_the_click(
    client: Client, world: World, conn: asyncpg.Connection
) -> None:
    token = sign(Purpose.CLICK, world.delivery_id, world.link_id)
    response = await client.get(
        f"/c/{token}", allow_redirects=False, headers={"User-Agent": FIREFOX}
    )
    assert response.status == 302
    assert response.headers["Location"] == "https://shop.example.com/spring?a=1"
    [event] = await wait_for_events(conn, 1)
    assert (event["kind"], event["link_id"], event["machine"]) == ("click", world.link_id, False)
    assert event["campaign_id"] == world.campaign_id


async def test_tampered_click_token_gets_404_and_records_nothing(
    client: Client, world: World, conn: asyncpg.Connection
) -> None:
    token = tamper(sign(Purpose.CLICK, world.delivery_id, world.link_id))
    response = await client.get(f"/c/{token}", allow_redirects=False)
    assert response.status == 404
    assert "Location" not in response.headers
    await drained(client)
    assert (await table_counts(conn))["events"] == 0


async def test_click_never_redirects_to_a_url_taken_from_the_request(
    client: Client, world: World, conn: asyncpg.Connection
) -> None:
    good = sign(Purpose.CLICK, world.delivery_id, world.link_id)
    response = await client.get(
        f"/c/{good}?url=https://evil.example.net/&next=//evil.example.net",
        allow_redirects=False,
    )
    assert response.headers["Location"] == "https://shop.example.com/spring?a=1"
    # A genuine token naming another campaign's link finds nothing to redirect to.
    foreign = sign(Purpose.CLICK, world.delivery_id, world.other_link_id)
    response = await client.get(f"/c/{foreign}", allow_redirects=False)
    assert response.status == 404
    assert "Location" not in response.headers
    rows = await wait_for_events(conn, 1)
    await drained(client)
    assert len(await conn.fetch("SELECT 1 FROM events")) == len(rows) == 1


async def test_clicks_by_scanners_head_requests_or_seconds_after_delivery_are_machine(
    conn: asyncpg.Connection, client: Client
) -> None:
    world = await make_world(conn, sent_seconds_ago=2)
    path = f"/c/{sign(Purpose.CLICK, world.delivery_id, world.link_id)}"
    await client.get(path, allow_redirects=False, headers={"User-Agent": FIREFOX})  # too soon
    await client.head(path, allow_redirects=False, headers={"User-Agent": FIREFOX})
    await conn.execute("UPDATE deliveries SET sent_at = now() - interval '1 hour'")
    # The cache still says "2 s ago" for this delivery; a fresh app would not. Either way:
    scanner = "Mozilla/5.0 (compatible; Barracuda Sentinel)"
    await client.get(path, allow_redirects=False, headers={"User-Agent": scanner})
    rows = await wait_for_events(conn, 3)
    assert [r["machine"] for r in rows] == [True, True, True]
    assert (
        await settled_metric(client, "tracker_machine_events_total", 1, reason="head_request") == 1
    )


# ---------------------------------------------------------------- unsubscribe


async def test_unsubscribe_get_shows_who_and_what_and_changes_nothing(
    client: Client, world: World, conn: asyncpg.Connection
) -> None:
    before = await table_counts(conn)
    response = await client.get(f"/u/{sign(Purpose.UNSUBSCRIBE, world.delivery_id)}")
    html = await response.text()
    assert response.status == 200
    assert "marie@example.com is unsubscribing from messages sent by ACME Cars." in html
    assert "Monthly news" in html
    assert re.search(r'value="digital" id="scope-digital" checked', html)
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Referrer-Policy"] == "same-origin"
    for _ in range(3):  # a link scanner following the link
        await client.get(f"/u/{sign(Purpose.UNSUBSCRIBE, world.delivery_id)}")
    assert await table_counts(conn) == before


async def test_one_click_post_exactly_as_gmail_sends_it_unsubscribes_from_all_digital_channels(
    client: Client, world: World, conn: asyncpg.Connection
) -> None:
    token = sign(Purpose.UNSUBSCRIBE, world.delivery_id)
    response = await client.post(f"/u/{token}", **gmail_one_click())
    assert response.status == 200
    ledger = await conn.fetch(
        "SELECT channel, action, kind, topic_id, source, evidence FROM consents"
        " WHERE action = 'withdraw' ORDER BY channel"
    )
    assert [(r["channel"], r["kind"], r["topic_id"], r["source"]) for r in ledger] == [
        ("email", None, None, "one-click"),
        ("sms", None, None, "one-click"),
    ]
    evidence = json.loads(ledger[0]["evidence"])
    assert evidence["delivery_id"] == world.delivery_id
    assert evidence["campaign_id"] == world.campaign_id
    assert evidence["method"] == "one-click"
    assert evidence["ip_prefix"] == "127.0.0.0/24"
    suppressions = await conn.fetch(
        "SELECT scope, channel, reason, email_hash FROM suppressions ORDER BY channel"
    )
    assert [(s["scope"], s["channel"], s["reason"]) for s in suppressions] == [
        ("channel", "email", "unsubscribe"),
        ("channel", "sms", "unsubscribe"),
    ]
    assert {bytes(s["email_hash"]) for s in suppressions} == {world.email_hash}
    channels = await conn.fetch("SELECT channel, enabled FROM contact_channels ORDER BY channel")
    assert [tuple(r) for r in channels] == [("email", False), ("sms", False)]
    assert (
        await metric(
            client, "tracker_optouts_total", scope="digital", method="one-click", outcome="recorded"
        )
        == 1
    )


async def test_one_click_multipart_body_is_accepted_too(
    client: Client, world: World, conn: asyncpg.Connection
) -> None:
    form = FormData()
    form.add_field("List-Unsubscribe", "One-Click")
    response = await client.post(f"/u/{sign(Purpose.UNSUBSCRIBE, world.delivery_id)}", data=form)
    assert response.status == 200
    assert (await table_counts(conn))["suppressions"] == 2


async def test_repeated_and_concurrent_one_clicks_add_no_duplicate_rows(
    client: Client, world: World, conn: asyncpg.Connection
) -> None:
    path = f"/u/{sign(Purpose.UNSUBSCRIBE, world.delivery_id)}"
    responses = await asyncio.gather(*(client.post(path, **gmail_one_click()) for _ in range(5)))
    assert {r.status for r in responses} == {200}
    once = await table_counts(conn)
    await client.post(path, **gmail_one_click())
    assert await table_counts(conn) == once
    assert once["consents"] == 2 + 2  # two grants from the world, two withdrawals
    assert once["suppressions"] == 2
    assert await metric(client, "tracker_optouts_total", outcome="already") == 5


async def test_form_post_with_topic_scope_withdraws_only_that_topic(
    client: Client, world: World, conn: asyncpg.Connection
) -> None:
    path = f"/u/{sign(Purpose.UNSUBSCRIBE, world.delivery_id)}"
    fields = await form_fields(client, path)
    response = await client.post(
        path, data={**fields, "scope": "topic", "reason": "Too many\x00 emails"}
    )
    assert response.status == 200
    assert "will no longer receive messages about Monthly news" in await response.text()
    row = await conn.fetchrow("SELECT * FROM consents WHERE action = 'withdraw'")
    assert row is not None
    assert (row["channel"], row["topic_id"], row["kind"]) == ("email", world.topic_id, None)
    assert row["source"] == "unsubscribe page"
    assert json.loads(row["evidence"])["reason"] == "Too many emails"
    assert [tuple(r) for r in await conn.fetch("SELECT scope, topic_id FROM suppressions")] == [
        ("topic", world.topic_id)
    ]
    assert (
        await conn.fetchval(
            "SELECT subscribed FROM contact_topics WHERE topic_id = $1", world.topic_id
        )
        is False
    )
    assert (await table_counts(conn))["channels"] == 0


async def test_form_post_with_email_scope_leaves_sms_alone(
    client: Client, world: World, conn: asyncpg.Connection
) -> None:
    path = f"/u/{sign(Purpose.UNSUBSCRIBE, world.delivery_id)}"
    await client.post(path, data={**await form_fields(client, path), "scope": "email"})
    rows = await conn.fetch("SELECT channel FROM suppressions")
    assert [r["channel"] for r in rows] == ["email"]


async def test_form_post_without_a_valid_csrf_field_or_from_another_site_is_refused(
    client: Client, world: World, conn: asyncpg.Connection
) -> None:
    path = f"/u/{sign(Purpose.UNSUBSCRIBE, world.delivery_id)}"
    fields = await form_fields(client, path)
    before = await table_counts(conn)
    missing = await client.post(path, data={"scope": "digital"})
    wrong = await client.post(path, data={"csrf": "0" * 32, "scope": "digital"})
    cross = await client.post(
        path,
        data=fields,
        headers={"Origin": "https://evil.example.net", "Sec-Fetch-Site": "cross-site"},
    )
    assert [missing.status, wrong.status, cross.status] == [403, 403, 403]
    assert await table_counts(conn) == before
    same = await client.post(
        path, data=fields, headers={"Origin": str(client.make_url("")).rstrip("/")}
    )
    assert same.status == 200


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize(
    ("route", "purpose"), [("u", Purpose.UNSUBSCRIBE), ("p", Purpose.PREFERENCES)]
)
async def test_tampered_unsubscribe_or_preference_token_gets_404_and_writes_nothing(
    client: Client,
    world: World,
    conn: asyncpg.Connection,
    method: str,
    route: str,
    purpose: Purpose,
) -> None:
    before = await table_counts(conn)
    genuine = sign(purpose, world.delivery_id)
    fields = await form_fields(client, f"/{route}/{genuine}")
    body = {"data": {**fields, "channel": "sms", "shown": str(world.topic_id)}}
    for token in (
        tamper(genuine),
        sign(Purpose.OPEN, world.delivery_id),
        sign(purpose, world.delivery_id + 1000),  # genuine, no such delivery
    ):
        for kwargs in (gmail_one_click(), body):
            response = await client.request(method, f"/{route}/{token}", **kwargs)
            assert response.status == 404
    assert await table_counts(conn) == before


# ---------------------------------------------------------------- preference centre


async def test_preference_centre_shows_switches_and_consent_history_in_plain_words(
    client: Client, world: World
) -> None:
    html = await (await client.get(f"/p/{sign(Purpose.PREFERENCES, world.delivery_id)}")).text()
    assert "You subscribed on 19 September 2012 at Salon E-commerce Paris." in html
    assert "You subscribed to text messages on 1 March 2020 at checkout form." in html
    assert re.search(r'id="channel-email"\s+checked', html)
    assert re.search(rf'id="topic-{world.topic_id}"\s+checked', html)
    # "Service reminders" is opt-in elsewhere (default_subscribed true, no choice made).
    assert re.search(rf'id="topic-{world.other_topic_id}"\s+checked', html)


async def test_preference_centre_speaks_french_to_a_french_contact(
    client: Client, conn: asyncpg.Connection
) -> None:
    world = await make_world(conn, locale="fr_CA")
    html = await (await client.get(f"/p/{sign(Purpose.PREFERENCES, world.delivery_id)}")).text()
    assert '<html lang="fr">' in html
    assert "Vous vous êtes abonné le 19 septembre 2012 (source : Salon E-commerce Paris)." in html
    page = await (await client.get(f"/u/{sign(Purpose.UNSUBSCRIBE, world.delivery_id)}")).text()
    assert "marie@example.com se désabonne des messages envoyés par ACME Cars." in page


GARAGE = "Garage Tremblay Automobiles"
REMINDER = "Rappel d'entretien / Service reminder — octobre 2024"
# The sentences that name the sender, in each language (tracker/wording.py).
SENDER_LINES = {
    "en": (
        "marie@example.com is unsubscribing from messages sent by {sender}.",
        "Choose what {sender} may send to marie@example.com.",
        "marie@example.com will no longer receive email or text messages from {sender}.",
    ),
    "fr": (
        "marie@example.com se désabonne des messages envoyés par {sender}.",
        "Choisissez ce que {sender} peut envoyer à marie@example.com.",
        "marie@example.com ne recevra plus ni courriels ni SMS de {sender}.",
    ),
}


@pytest.mark.parametrize("locale", ["fr", "en"])
async def test_unsubscribe_and_preference_pages_name_the_business_not_the_campaign(
    client: Client, conn: asyncpg.Connection, locale: str
) -> None:
    # Issue #13 item 3: the pages said "sent by Rappel d'entretien / Service reminder —
    # octobre 2024". CASL s.6(2)(a): the sender is the business, as the campaign file names it.
    world = await make_world(conn, locale=locale, sender=GARAGE, campaign_name=REMINDER)
    asked, chooser, done = (line.format(sender=GARAGE) for line in SENDER_LINES[locale])
    unsubscribe = sign(Purpose.UNSUBSCRIBE, world.delivery_id)
    pages = {
        asked: await (await client.get(f"/u/{unsubscribe}")).text(),
        chooser: await (
            await client.get(f"/p/{sign(Purpose.PREFERENCES, world.delivery_id)}")
        ).text(),
        done: await (await client.post(f"/u/{unsubscribe}", **gmail_one_click())).text(),
    }
    for sentence, html in pages.items():
        assert f'<html lang="{locale}">' in html
        assert sentence in html
        assert "octobre 2024" not in html  # the campaign's name is nowhere on the page


async def test_a_campaign_without_a_business_name_is_still_not_named_after_the_campaign(
    client: Client, conn: asyncpg.Connection
) -> None:
    world = await make_world(conn, campaign_name=REMINDER, definition={})
    html = await (await client.get(f"/u/{sign(Purpose.UNSUBSCRIBE, world.delivery_id)}")).text()
    assert "is unsubscribing from messages sent by this sender." in html
    assert "octobre 2024" not in html


async def test_preference_changes_are_each_logged_in_the_ledger(
    client: Client, world: World, conn: asyncpg.Connection
) -> None:
    path = f"/p/{sign(Purpose.PREFERENCES, world.delivery_id)}"
    fields = await form_fields(client, path)
    shown = [str(world.topic_id), str(world.other_topic_id)]
    # Keep email and "Service reminders"; turn off SMS and "Monthly news".
    data = [("csrf", fields["csrf"]), ("channel", "email"), ("topic", str(world.other_topic_id))]
    data += [("shown", t) for t in shown]
    response = await client.post(path, data=data, allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"].endswith("?saved=1")
    rows = await conn.fetch(
        "SELECT channel, action, topic_id, source FROM consents WHERE source = 'preference centre'"
        " ORDER BY channel, topic_id NULLS FIRST"
    )
    assert [tuple(r) for r in rows] == [
        ("email", "withdraw", world.topic_id, "preference centre"),
        ("sms", "withdraw", None, "preference centre"),
    ]
    # Saving the same choices again changes nothing and logs nothing.
    again = await client.post(path, data=data, allow_redirects=False)
    assert again.headers["Location"].endswith("?saved=0")
    assert len(await conn.fetch("SELECT 1 FROM consents")) == 2 + 2
    # Turning SMS back on is the person's express consent, recorded as such.
    data.append(("channel", "sms"))
    await client.post(path, data=data, allow_redirects=False)
    grant = await conn.fetchrow(
        "SELECT kind, source, evidence FROM consents WHERE channel = 'sms' ORDER BY id DESC LIMIT 1"
    )
    assert grant is not None
    assert (grant["kind"], grant["source"]) == ("express", "preference centre")
    assert json.loads(grant["evidence"])["method"] == "preference centre"
    assert await conn.fetchval("SELECT count(*) FROM suppressions WHERE channel = 'sms'") == 0
    html = await (await client.get(path + "?saved=1")).text()
    assert "Your choices are saved." in html
    assert "You unsubscribed from “Monthly news” on" in html


async def test_resubscribing_after_an_unsubscribe_lifts_only_the_unsubscribe_suppression(
    client: Client, world: World, conn: asyncpg.Connection
) -> None:
    await client.post(f"/u/{sign(Purpose.UNSUBSCRIBE, world.delivery_id)}", **gmail_one_click())
    await conn.execute(
        "INSERT INTO suppressions (email_hash, scope, channel, reason, source)"
        " VALUES ($1, 'channel', 'sms', 'complaint', 'carrier report')",
        world.email_hash,
    )
    path = f"/p/{sign(Purpose.PREFERENCES, world.delivery_id)}"
    html = await (await client.get(path)).text()
    assert re.search(r'id="channel-email">', html)  # off, and may be turned on
    assert re.search(r'id="channel-sms"\s+disabled', html)  # blocked by the complaint
    fields = await form_fields(client, path)
    data = [("csrf", fields["csrf"]), ("channel", "email"), ("channel", "sms")]
    await client.post(path, data=data, allow_redirects=False)
    left = await conn.fetch("SELECT channel, reason FROM suppressions ORDER BY channel, reason")
    assert [tuple(r) for r in left] == [("sms", "complaint"), ("sms", "unsubscribe")]
    email = await conn.fetchrow(
        "SELECT action, kind FROM consents WHERE channel = 'email' AND topic_id IS NULL"
        " ORDER BY id DESC LIMIT 1"
    )
    assert email is not None
    assert tuple(email) == ("grant", "express")
    assert await conn.fetchval("SELECT enabled FROM contact_channels WHERE channel = 'email'")


async def test_every_page_escapes_hostile_names_sources_and_topics(
    client: Client, conn: asyncpg.Connection
) -> None:
    world = await make_world(
        conn,
        email="o'brien+x@example.com",
        name=HOSTILE,
        sender=f'ACME "{HOSTILE}"',
        topic_name=f"<b onmouseover=alert(1)>{HOSTILE}",
        source=f"<img src=x onerror=alert(1)>{HOSTILE}",
    )
    pages = [
        f"/u/{sign(Purpose.UNSUBSCRIBE, world.delivery_id)}",
        f"/p/{sign(Purpose.PREFERENCES, world.delivery_id)}",
    ]
    for path in pages:
        html = await (await client.get(path)).text()
        assert "<script>" not in html
        assert "<img" not in html
        assert "<b onmouseover" not in html
        assert "&lt;script&gt;" in html
        assert "o&#39;brien+x@example.com" in html
    done = await client.post(pages[0], **gmail_one_click())
    assert "<script>" not in await done.text()


async def test_preference_form_without_csrf_is_refused(
    client: Client, world: World, conn: asyncpg.Connection
) -> None:
    path = f"/p/{sign(Purpose.PREFERENCES, world.delivery_id)}"
    response = await client.post(path, data={"shown": str(world.topic_id)})
    assert response.status == 403
    assert (await table_counts(conn))["consents"] == 2


# ---------------------------------------------------------------- operations


async def test_startup_creates_this_and_next_months_event_partitions(
    client: Client, conn: asyncpg.Connection
) -> None:
    months = await conn.fetchval(
        "SELECT count(*) FROM generate_series(0, 2) AS i WHERE to_regclass("
        " 'events_' || to_char(date_trunc('month', now()) + make_interval(months => i),"
        " 'YYYY_MM')) IS NOT NULL"
    )
    assert months == 3


async def test_healthz_and_metrics_report_the_tracker(client: Client, world: World) -> None:
    health = await client.get("/healthz")
    assert health.status == 200
    assert (await health.json())["database"] is True
    await client.get(f"/o/{sign(Purpose.OPEN, world.delivery_id)}")
    await client.get(f"/o/{tamper(sign(Purpose.OPEN, world.delivery_id))}")
    await client.get("/nowhere")
    text = await (await client.get("/metrics")).text()
    for name in (
        'tracker_requests_total{route="open",status="200"} 2.0',
        'tracker_requests_total{route="other",status="404"} 1.0',
        'tracker_token_rejections_total{reason="bad_signature",route="open"} 1.0',
        "tracker_event_buffer_size",
        "tracker_flush_seconds_bucket",
        "tracker_events_total",
    ):
        assert name in text


async def test_shutdown_flushes_the_buffer(
    db_url: str, world: World, conn: asyncpg.Connection
) -> None:
    # A flush interval far longer than the test: only shutdown can write these.
    app = create_app(settings_for(db_url, flush_interval_ms=600_000))
    async with TestClient(TestServer(app)) as client:
        for _ in range(20):
            await client.get(f"/o/{sign(Purpose.OPEN, world.delivery_id)}")
        await asyncio.sleep(0.1)
        assert await conn.fetchval("SELECT count(*) FROM events") == 0
    assert await conn.fetchval("SELECT count(*) FROM events") == 20


async def test_two_tracker_instances_share_one_database(
    db_url: str, world: World, conn: asyncpg.Connection
) -> None:
    settings = settings_for(db_url)
    async with (
        TestClient(TestServer(create_app(settings))) as a,
        TestClient(TestServer(create_app(replace(settings)))) as b,
    ):
        path = f"/u/{sign(Purpose.UNSUBSCRIBE, world.delivery_id)}"
        await asyncio.gather(a.post(path, **gmail_one_click()), b.post(path, **gmail_one_click()))
        for c in (a, b):
            await c.get(f"/o/{sign(Purpose.OPEN, world.delivery_id)}")
    assert await conn.fetchval("SELECT count(*) FROM events") == 2
    assert await conn.fetchval("SELECT count(*) FROM consents WHERE action = 'withdraw'") == 2
    assert await conn.fetchval("SELECT count(*) FROM suppressions") == 2


async def test_run_serves_on_the_configured_port_until_stopped_then_flushes(
    db_url: str, world: World, conn: asyncpg.Connection
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = settings_for(db_url, port=port, flush_interval_ms=600_000)
    stop = asyncio.Event()
    server = asyncio.create_task(run(settings, stop))
    async with ClientSession() as session:
        for _ in range(600):  # listening within 30 s, even on a loaded machine
            try:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as health:
                    assert health.status == 200
                    break
            except OSError:
                await asyncio.sleep(0.05)
        async with session.get(
            f"http://127.0.0.1:{port}/o/{sign(Purpose.OPEN, world.delivery_id)}"
        ) as pixel:
            assert await pixel.read() == GIF
    stop.set()  # what SIGTERM does
    await asyncio.wait_for(server, 15)
    assert await conn.fetchval("SELECT count(*) FROM events") == 1


async def test_every_one_click_opt_out_is_timed_for_the_unsubscribe_sla(
    db_url: str, conn: asyncpg.Connection
) -> None:
    world = await make_world(conn)
    app = create_app(settings_for(db_url))
    async with TestClient(TestServer(app)) as client:
        token = sign(Purpose.UNSUBSCRIBE, world.delivery_id)
        response = await client.post(
            f"/u/{token}",
            data="List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert response.status == 200
        text = await (await client.get("/metrics")).text()
    assert "tracker_optout_seconds_count 1.0" in text
