"""Hosted sign-up forms through the tracker (aiohttp's test client), real Postgres, a real
SMTP sink receiving the confirmation mail, its link followed back through the tracker."""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import zipfile
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from mailer.campaigns import lifecycle
from mailer.commands import compliance as compliance_cmd
from mailer.core.addresses import address_hash
from mailer.core.footer import format_date
from mailer.core.settings import Settings
from mailer.core.tokens import Purpose
from mailer.demo.stores import Stores
from tests.cli_run import run_cli
from tests.engine_setup import TEMPLATES, engine_for
from tests.engine_setup import settings_for as engine_settings
from tests.integration.test_tracker_app import campaign_definition, tamper
from tests.integration.test_tracker_app import sign as sign_token
from tests.signup_setup import (
    FR,
    confirm_path,
    deliver_queued,
    hidden,
    make_form,
    parsed,
    signup_settings,
    text_part,
)
from tests.smtp_servers import RecordingHandler, smtp_server
from tracker.app import create_app

Client = TestClient[web.Request, web.Application]
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


@pytest.fixture
async def client(db_url: str) -> AsyncIterator[Client]:
    await make_form(db_url)
    # A high per-prefix limit: every request of these tests comes from 127.0.0.1.
    settings = signup_settings(db_url, ip_prefix_limit=1000)
    async with TestClient(TestServer(create_app(settings))) as c:
        yield c


@pytest.fixture
def sink() -> Iterator[tuple[int, RecordingHandler]]:
    with smtp_server() as server:
        yield server


async def open_form(client: Client, path: str = "/s/infolettre?lang=fr") -> dict[str, str]:
    response = await client.get(path, headers={"User-Agent": FIREFOX})
    assert response.status == 200
    page = await response.text()
    return {name: hidden(page, name) for name in ("form_token", "text_id", "locale", "page_url")}


async def sign_up(
    client: Client,
    email: str,
    *,
    fields: Mapping[str, str] | None = None,
    topics: tuple[str, ...] = ("promotions",),
    headers: Mapping[str, str] | None = None,
) -> tuple[int, str]:
    form = await open_form(client)
    single = {**form, "email": email, "name": "Marie Tremblay", "consent": "yes", "website": ""}
    single.update(fields or {})
    data: list[tuple[str, str]] = [*single.items(), *(("topic", t) for t in topics)]
    response = await client.post(
        "/s/infolettre",
        data=data,
        headers={"User-Agent": FIREFOX, "Referer": "https://www.garage.example/infolettre",
                 **(headers or {})},
    )  # fmt: skip
    return response.status, await response.text()


async def counts(conn: asyncpg.Connection) -> dict[str, int]:
    row = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM signup_requests) AS requests,"
        " (SELECT count(*) FROM consents) AS consents,"
        " (SELECT count(*) FROM transactional_messages) AS mails,"
        " (SELECT count(*) FROM contacts WHERE email IS NOT NULL) AS contacts"
    )
    assert row is not None
    return dict(row)


async def test_a_visitor_signs_up_in_french_and_confirms_by_email_with_both_steps_kept(
    client: Client, db_url: str, conn: asyncpg.Connection, sink: tuple[int, RecordingHandler]
) -> None:
    status, body = await sign_up(client, "Marie.Tremblay@Example.com")
    assert status == 200
    assert "Consultez votre boîte de réception" in body
    pending = await conn.fetchrow("SELECT * FROM signup_requests")
    assert pending is not None
    assert pending["state"] == "pending"
    assert await conn.fetchval("SELECT count(*) FROM consents") == 0  # a request is no consent

    port, handler = sink
    assert await deliver_queued(db_url, signup_settings(db_url), port) == 1
    [received] = handler.messages
    assert received.rcpt == "marie.tremblay@example.com"
    mail = parsed(received.data)
    assert mail["Subject"] == "Confirmez votre abonnement (Site web — infolettre)"
    text = text_part(mail)
    assert FR in text  # the exact words, as agreed to
    assert hashlib.sha256(FR.encode()).hexdigest() in text
    assert "Garage Tremblay Automobiles" in text
    assert "boulevard Laurier" in text

    path = confirm_path(mail)
    page = await client.get(path)
    assert page.status == 200
    html = await page.text()
    assert "Confirmer mon abonnement" in html
    assert "J&#39;accepte" in html
    assert await conn.fetchval("SELECT count(*) FROM consents") == 0  # a GET writes nothing

    confirmed = await client.post(
        path, data={"csrf": hidden(html, "csrf")}, headers={"User-Agent": "Mobile Safari/605"}
    )
    assert confirmed.status == 200
    assert "Abonnement confirmé" in await confirmed.text()

    grant = await conn.fetchrow(
        "SELECT c.email, l.kind, l.source, l.evidence FROM consents l"
        " JOIN contacts c ON c.id = l.contact_id WHERE l.kind = 'express'"
    )
    assert grant is not None
    assert (grant["email"], grant["source"]) == ("marie.tremblay@example.com",
                                                 "Site web — infolettre")  # fmt: skip
    evidence = json.loads(grant["evidence"])
    assert evidence["method"] == "double opt-in"
    assert evidence["form"]["slug"] == "infolettre"
    assert evidence["form"]["text"] == FR
    assert evidence["form"]["text_version"] == 1
    assert evidence["form"]["text_sha256"] == hashlib.sha256(FR.encode()).hexdigest()
    assert evidence["ip_policy"] == "full"
    request = evidence["request"]
    assert request["ip"] == "127.0.0.1"  # full by default (forms.ip_policy)
    assert request["user_agent"] == FIREFOX
    assert request["referrer"] == "https://www.garage.example/infolettre"
    assert request["page_url"].endswith("/s/infolettre?lang=fr")
    assert request["at"]
    assert evidence["confirmation"]["user_agent"] == "Mobile Safari/605"
    assert evidence["confirmation"]["ip"] == "127.0.0.1"
    assert evidence["topics"] == ["promotions"]
    topics = await conn.fetch(
        "SELECT t.slug, ct.subscribed FROM contact_topics ct JOIN topics t ON t.id = ct.topic_id"
    )
    assert [tuple(r) for r in topics] == [("promotions", True)]
    left = await conn.fetchrow("SELECT * FROM signup_requests")
    assert left is not None
    assert left["state"] == "confirmed"
    assert left["email"] is None

    metrics = await (await client.get("/metrics")).text()
    assert 'tracker_signup_total{form="infolettre",step="requested"} 1.0' in metrics
    assert 'tracker_signup_total{form="infolettre",step="confirmed"} 1.0' in metrics


async def test_link_scanners_get_and_head_the_confirmation_link_and_confirm_nothing(
    client: Client, db_url: str, conn: asyncpg.Connection, sink: tuple[int, RecordingHandler]
) -> None:
    await sign_up(client, "scanned@example.com")
    port, handler = sink
    await deliver_queued(db_url, signup_settings(db_url), port)
    path = confirm_path(parsed(handler.messages[0].data))
    for _ in range(3):
        assert (await client.get(path, headers={"User-Agent": "Barracuda scanner"})).status == 200
        assert (await client.head(path)).status == 200
    # A scanner that POSTs without the page's field is refused too.
    assert (await client.post(path, data={})).status == 403
    assert await conn.fetchval("SELECT count(*) FROM consents") == 0
    assert await conn.fetchval("SELECT state FROM signup_requests") == "pending"


async def test_tampered_and_replayed_confirmation_tokens_record_nothing_more(
    client: Client, db_url: str, conn: asyncpg.Connection, sink: tuple[int, RecordingHandler]
) -> None:
    await sign_up(client, "replay@example.com")
    port, handler = sink
    await deliver_queued(db_url, signup_settings(db_url), port)
    path = confirm_path(parsed(handler.messages[0].data))
    token = path.rpartition("/")[2]
    forged = f"/confirm/{tamper(token)}"
    assert (await client.get(forged)).status == 404
    assert (await client.post(forged, data={"csrf": "x"})).status == 404
    assert await conn.fetchval("SELECT count(*) FROM consents") == 0

    html = await (await client.get(path)).text()
    first = await client.post(path, data={"csrf": hidden(html, "csrf")})
    assert first.status == 200
    before = await counts(conn)
    again = await client.post(path, data={"csrf": hidden(html, "csrf")})
    assert again.status == 200
    assert "Déjà confirmé" in await again.text()
    assert await counts(conn) == before
    # A token of another purpose (an unsubscribe token) with a valid MAC is not a confirmation.
    from mailer.core.tokens import Purpose
    from tests.integration.test_tracker_app import sign as sign_token

    assert (await client.get(f"/confirm/{sign_token(Purpose.UNSUBSCRIBE, 1)}")).status == 404


async def test_known_and_unknown_addresses_get_the_same_answer_in_the_same_time(
    client: Client, db_url: str, conn: asyncpg.Connection
) -> None:
    # Known: a contact with express consent. Unknown: never seen. Blocked: a hard bounce.
    contact = await conn.fetchval(
        "INSERT INTO contacts (email, email_hash) VALUES ('known@example.com', $1) RETURNING id",
        address_hash("known@example.com"),
    )
    await conn.execute(
        "INSERT INTO consents (contact_id, channel, action, kind, source, obtained_at)"
        " VALUES ($1, 'email', 'grant', 'express', 'import', now())",
        contact,
    )
    await conn.execute(
        "INSERT INTO suppressions (email_hash, scope, channel, reason, source)"
        " VALUES ($1, 'channel', 'email', 'hard_bounce', 'dsn')",
        address_hash("bounced@example.com"),
    )
    # A tracker that has served a few sign-ups knows how long a mailed answer takes.
    for i in range(8):
        await sign_up(client, f"warm{i}@example.com")
    answers: dict[str, list[tuple[int, str]]] = {}
    timings: dict[str, list[float]] = {}
    import time

    for round_ in range(12):
        for who in ("known", "unknown", "bounced"):
            address = f"{who}@example.com" if who != "unknown" else f"new{round_}@example.com"
            started = time.perf_counter()
            status, body = await sign_up(client, address)
            timings.setdefault(who, []).append(time.perf_counter() - started)
            answers.setdefault(who, []).append((status, body.replace(address, "ADDRESS")))
    first = answers["unknown"][0]
    assert answers["known"][0] == first == answers["bounced"][0]
    # Later rounds of the known address fall under the per-address limit: still the same.
    assert {a for who in answers for a in answers[who]} == {first}

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    # The known address is mailed in round 0 and limited per address after; the bounced one
    # is never mailed. Both silent paths wait as long as a mailed answer takes.
    unknown = median(timings["unknown"])
    ordered = sorted(timings["unknown"])
    noise = ordered[3 * len(ordered) // 4] - ordered[len(ordered) // 4]  # interquartile range
    # Without the wait, a silent refusal answered in ~2 ms against ~20 ms for a mailed one.
    for who in ("known", "bounced"):
        assert abs(median(timings[who]) - unknown) <= noise + 0.3 * unknown + 0.003, timings
    assert await conn.fetchval(
        "SELECT count(*) FROM transactional_messages m JOIN contacts c ON c.id = m.contact_id"
        " WHERE c.email = 'bounced@example.com'"
    ) == 0  # fmt: skip


async def test_one_confirmation_mail_per_address_per_interval_whatever_is_submitted(
    client: Client, conn: asyncpg.Connection
) -> None:
    first = await sign_up(client, "bombed@example.com")
    for _ in range(3):
        assert await sign_up(client, "bombed@example.com") == first
    status, body = await sign_up(client, "Bombed@Example.com")
    assert (status, body.replace("Bombed@Example.com", "bombed@example.com")) == first
    assert await conn.fetchval("SELECT count(*) FROM transactional_messages") == 1
    metrics = await (await client.get("/metrics")).text()
    assert 'tracker_signup_total{form="infolettre",step="refused_address"} 4.0' in metrics


async def test_an_ip_prefix_past_its_limit_is_refused_and_others_are_not(db_url: str) -> None:
    await make_form(db_url)
    app = create_app(signup_settings(db_url, ip_prefix_limit=3))
    async with TestClient(TestServer(app)) as client:
        # The test client's peer is loopback, trusted to report the client (the tracker's
        # proxy rule), so X-Forwarded-For names the visitor.
        flood = {"X-Forwarded-For": "203.0.113.7"}
        statuses = [
            (await sign_up(client, f"a{i}@example.com", headers=flood))[0] for i in range(6)
        ]
        assert statuses == [200, 200, 200, 429, 429, 429]
        refused = await client.post("/s/infolettre?lang=fr", data={}, headers=flood)
        assert refused.status == 429
        assert refused.headers["Retry-After"] == "3600"
        assert "Trop de demandes" in await refused.text()
        other = {"X-Forwarded-For": "198.51.100.9"}
        assert (await sign_up(client, "b@example.com", headers=other))[0] == 200
        same_net = {"X-Forwarded-For": "203.0.113.200"}  # the same /24
        assert (await sign_up(client, "c@example.com", headers=same_net))[0] == 429
        metrics = await (await client.get("/metrics")).text()
        assert 'tracker_signup_total{form="infolettre",step="refused_rate"} 5.0' in metrics


async def test_the_honeypot_gets_the_answer_a_person_gets_and_nothing_is_written(
    client: Client, conn: asyncpg.Connection
) -> None:
    person = await sign_up(client, "bot@example.com", fields={"website": ""})
    await conn.execute("DELETE FROM signup_requests")
    bot = await sign_up(client, "bot@example.com", fields={"website": "http://spam.example"})
    assert bot == person
    assert await conn.fetchval("SELECT count(*) FROM signup_requests") == 0


async def test_bad_input_is_refused_with_a_page_that_says_what_to_fix(
    client: Client, conn: asyncpg.Connection
) -> None:
    status, body = await sign_up(client, "not an address")
    assert status == 400
    assert "adresse courriel valide" in body
    status, body = await sign_up(client, "ok@example.com", fields={"consent": "no"})
    assert status == 400
    status, body = await sign_up(client, "ok@example.com", fields={"form_token": "forged"})
    assert status == 400
    assert "expiré" in body
    status, body = await sign_up(client, "ok@example.com", fields={"text_id": "999999"})
    assert status == 400
    assert (await client.get("/s/nope")).status == 404
    assert await conn.fetchval("SELECT count(*) FROM signup_requests") == 0


async def test_a_cross_site_post_is_refused_unless_the_form_lists_that_origin(
    db_url: str, conn: asyncpg.Connection
) -> None:
    await make_form(db_url, origins=("https://www.garage.example",))
    async with TestClient(TestServer(create_app(signup_settings(db_url)))) as client:
        evil = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
        assert (await sign_up(client, "x@example.com", headers=evil))[0] == 403
        ours = {"Origin": "https://www.garage.example", "Sec-Fetch-Site": "cross-site"}
        assert (await sign_up(client, "x@example.com", headers=ours))[0] == 200
        token = await client.get("/s/infolettre/token?locale=fr", headers=ours)
        assert token.headers["Access-Control-Allow-Origin"] == "https://www.garage.example"
        payload: dict[str, Any] = await token.json()
        assert payload["text"]["text"] == FR
        assert payload["token"]
        other = await client.get("/s/infolettre/token", headers=evil)
        assert "Access-Control-Allow-Origin" not in other.headers
    assert await conn.fetchval("SELECT count(*) FROM signup_requests") == 1


async def test_single_opt_in_records_the_grant_at_once_and_says_so_in_the_evidence(
    db_url: str, conn: asyncpg.Connection
) -> None:
    await make_form(db_url, double_opt_in=False)
    async with TestClient(TestServer(create_app(signup_settings(db_url)))) as client:
        status, body = await sign_up(client, "direct@example.com")
    assert status == 200
    assert "Merci" in body
    evidence = json.loads(
        await conn.fetchval("SELECT evidence FROM consents WHERE kind IS NOT NULL")
    )
    assert evidence["method"] == "single opt-in"
    assert evidence["confirmation"] is None
    assert await conn.fetchval("SELECT count(*) FROM transactional_messages") == 0


async def test_someone_who_unsubscribed_comes_back_only_through_the_confirmation_mail(
    db_url: str, conn: asyncpg.Connection, sink: tuple[int, RecordingHandler]
) -> None:
    # A single opt-in form: for this person the confirmation is mandatory all the same.
    await make_form(db_url, double_opt_in=False)
    hashed = address_hash("back@example.com")
    await conn.execute(
        "INSERT INTO suppressions (email_hash, scope, channel, reason, source) VALUES"
        " ($1, 'channel', 'email', 'unsubscribe', 'one-click')",
        hashed,
    )
    settings = signup_settings(db_url)
    async with TestClient(TestServer(create_app(settings))) as client:
        status, _ = await sign_up(client, "back@example.com")
        assert status == 200
        assert await conn.fetchval("SELECT count(*) FROM consents") == 0
        port, handler = sink
        assert await deliver_queued(db_url, settings, port) == 1
        path = confirm_path(parsed(handler.messages[0].data))
        html = await (await client.get(path)).text()
        assert (await client.post(path, data={"csrf": hidden(html, "csrf")})).status == 200
    assert await conn.fetchval("SELECT count(*) FROM suppressions") == 0  # lifted: their own
    evidence = json.loads(
        await conn.fetchval("SELECT evidence FROM consents WHERE kind IS NOT NULL")
    )
    assert evidence["method"] == "double opt-in"


async def test_the_tracker_deletes_expired_requests_with_their_personal_data(
    db_url: str, conn: asyncpg.Connection
) -> None:
    await make_form(db_url)
    settings = signup_settings(db_url, expiry_interval_s=1)
    async with TestClient(TestServer(create_app(settings))) as client:
        await sign_up(client, "never@example.com")
        await sign_up(client, "later@example.com")
        await conn.execute(
            "UPDATE signup_requests SET expires_at = now() - interval '1 second'"
            " WHERE email = 'never@example.com'"
        )
        import asyncio

        for _ in range(300):  # the next sweep, within 30 s on a loaded machine
            if await conn.fetchval("SELECT count(*) FROM signup_requests") == 1:
                break
            await asyncio.sleep(0.1)
        assert await conn.fetchval("SELECT email FROM signup_requests") == "later@example.com"
        metrics = await (await client.get("/metrics")).text()
        assert 'tracker_signup_total{form="infolettre",step="expired"} 1.0' in metrics


async def test_a_proof_of_work_form_needs_a_solution_for_that_form(
    db_url: str, conn: asyncpg.Connection
) -> None:
    import base64

    from altcha import v1

    await make_form(db_url, proof_of_work=True)
    async with TestClient(TestServer(create_app(signup_settings(db_url)))) as client:
        assert (await sign_up(client, "pow@example.com"))[0] == 400
        page = await (await client.get("/s/infolettre")).text()
        assert (
            "script-src 'nonce-"
            in (await client.get("/s/infolettre")).headers["Content-Security-Policy"]
        )
        assert hidden(page, "altcha") == ""  # filled by the page's solver
        challenge = json.loads(_data_pow(page))
        solution = v1.solve_challenge(
            challenge["challenge"], challenge["salt"], challenge["algorithm"],
            challenge["maxNumber"],
        )  # fmt: skip
        assert solution is not None
        payload = base64.b64encode(
            json.dumps({**challenge, "number": solution.number}).encode()
        ).decode()
        assert (await sign_up(client, "pow@example.com", fields={"altcha": payload}))[0] == 200
    assert await conn.fetchval("SELECT count(*) FROM signup_requests") == 1


def _data_pow(page: str) -> str:
    import html
    import re

    match = re.search(r'data-pow="([^"]*)"', page)
    assert match is not None
    return html.unescape(match.group(1))


async def confirmed_signup(
    client: Client, db_url: str, sink: tuple[int, RecordingHandler], address: str
) -> None:
    """Sign up, receive the mail, press the button."""
    await sign_up(client, address)
    port, handler = sink
    await deliver_queued(db_url, signup_settings(db_url), port)
    path = confirm_path(parsed(handler.messages[-1].data))
    html = await (await client.get(path)).text()
    assert (await client.post(path, data={"csrf": hidden(html, "csrf")})).status == 200


async def test_contacts_show_and_the_preference_centre_say_how_the_person_subscribed(
    client: Client,
    db_url: str,
    conn: asyncpg.Connection,
    sink: tuple[int, RecordingHandler],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await confirmed_signup(client, db_url, sink, "histoire@example.com")
    today = datetime.now(UTC).date()
    code, out = await run_cli(monkeypatch, db_url, "contacts", "show", "histoire@example.com")
    assert code == 0, out
    assert (
        f"You subscribed on {format_date(today, 'en')} via the form 'Site web — infolettre'"
        " and confirmed by email the same day." in out
    )
    # The preference centre of a later campaign's message, in the person's language.
    contact = await conn.fetchval("SELECT id FROM contacts WHERE email = 'histoire@example.com'")
    topic = await conn.fetchval("SELECT id FROM topics WHERE slug = 'promotions'")
    campaign = await conn.fetchval(
        "INSERT INTO campaigns (slug, name, topic_id, definition) VALUES ('news', 'News', $1,"
        " $2::jsonb) RETURNING id",
        topic,
        json.dumps(campaign_definition("News", "Garage Tremblay Automobiles")),
    )
    delivery = await conn.fetchval(
        "INSERT INTO deliveries (campaign_id, contact_id, domain, status, sent_at)"
        " VALUES ($1, $2, 'example.com', 'sent', now()) RETURNING id",
        campaign,
        contact,
    )
    page = await (await client.get(f"/p/{sign_token(Purpose.PREFERENCES, delivery)}")).text()
    assert (
        f"Vous vous êtes abonné le {format_date(today, 'fr')} par le formulaire"
        " « Site web — infolettre » et l&#39;avez confirmé par courriel le jour même." in page
    )


async def test_a_later_campaign_cites_the_form_and_the_audit_export_carries_its_text(
    client: Client,
    db_url: str,
    conn: asyncpg.Connection,
    sink: tuple[int, RecordingHandler],
    stores: Stores,
    settings: Settings,
    tmp_path: Path,
) -> None:
    await confirmed_signup(client, db_url, sink, "lectrice@example.com")
    # What the sample service reminder reads of a contact.
    await conn.execute(
        "UPDATE contacts SET attributes = $1, last_activity_at = now()"
        " WHERE email = 'lectrice@example.com'",
        json.dumps({"vehicle": "Toyota RAV4", "next_service": "2026-12-20", "mileage": 48200}),
    )
    _, definition = await lifecycle.create(
        stores.campaigns, TEMPLATES / "service_reminder.toml", TEMPLATES
    )
    await lifecycle.launch(stores.campaigns, definition.slug, datetime.now(UTC))
    with smtp_server() as (port, handler):
        await engine_for(stores, engine_settings(port)).run(until_idle=True)
        [message] = [m for m in handler.messages if m.rcpt == "lectrice@example.com"]
    footer = text_part(parsed(message.data))
    # The footer dates the consent in the campaign's time zone: around midnight UTC,
    # Toronto's day is still the one before.
    today = format_date(datetime.now(ZoneInfo(definition.timezone)).date(), "fr")
    assert f"vous vous êtes abonné le {today} au Site web — infolettre." in footer

    out = tmp_path / "audit.zip"
    args = argparse.Namespace(campaign=definition.slug, contact=None, out=str(out))
    assert await compliance_cmd.audit_export(args, settings) == 0
    with zipfile.ZipFile(out) as bundle:
        name = f"{definition.slug}-audit.csv"
        rows = list(csv.DictReader(io.TextIOWrapper(bundle.open(name), "utf-8")))
    [row] = [r for r in rows if r["email"] == "lectrice@example.com"]
    evidence = json.loads(row["consent_evidence"])
    assert evidence["form"]["text"] == FR
    assert evidence["form"]["text_version"] == 1
    assert evidence["form"]["text_sha256"] == hashlib.sha256(FR.encode()).hexdigest()
    assert evidence["confirmation"]["at"]


async def test_an_address_the_mailer_cannot_send_to_is_refused_instead_of_promised_a_mail(
    client: Client, conn: asyncpg.Connection
) -> None:
    # RFC 6531 allows "émile@…", but the composer refuses non-ASCII addresses (no SMTPUTF8):
    # the visitor would be told a confirmation is on its way, and it never would be.
    status, body = await sign_up(client, "Émile@exemple.ca")
    assert status == 400
    assert "adresse courriel valide" in body
    assert await counts(conn) == {"requests": 0, "consents": 0, "mails": 0, "contacts": 0}
    status, _ = await sign_up(client, "emile@exämple.ca")  # an IDN domain is sent as IDNA
    assert status == 200
    assert await conn.fetchval("SELECT count(*) FROM signup_requests") == 1
