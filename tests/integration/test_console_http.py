"""The browser console over HTTP (aiohttp's test client): sessions, CSRF, roles, headers,
lockout, the query budget of each page, and `mailer operators add`."""

from __future__ import annotations

import asyncio
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
from mailer.core.addresses import address_hash
from mailer.core.settings import Settings
from mailer.demo.stores import Stores
from tests.cli_run import run_cli
from tests.console_setup import (
    PASSWORD,
    Client,
    console_settings,
    csrf_of,
    log_in,
    operator,
    small_world,
)
from tests.engine_setup import TEMPLATES

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def settings_(db_url: str) -> Settings:
    settings = console_settings(db_url, TEMPLATES)
    await operator(settings, "ada@example.com", Role.SENDER)
    await operator(settings, "vic@example.com", Role.VIEWER)
    await operator(settings, "root@example.com", Role.ADMIN)
    return settings


@pytest.fixture
async def client(settings_: Settings) -> AsyncIterator[Client]:
    async with TestClient(TestServer(create_app(settings_))) as c:
        yield c


@pytest.fixture
async def draft(conn: asyncpg.Connection, stores: Stores) -> str:
    await small_world(conn)
    _, definition = await lifecycle.create(
        stores.campaigns, TEMPLATES / "service_reminder.toml", TEMPLATES
    )
    return definition.slug


def _cookie(client: Client, name: str) -> str | None:
    morsel = client.session.cookie_jar.filter_cookies(client.make_url("/")).get(name)
    return None if morsel is None else morsel.value


async def test_a_page_without_a_session_sends_the_browser_to_the_login_form(
    client: Client,
) -> None:
    response = await client.get("/campaigns", allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/login?next=/campaigns"
    assert (await client.post("/campaigns/x/pause", data={})).status == 401


async def test_login_issues_a_new_session_and_a_planted_cookie_never_becomes_one(
    client: Client, conn: asyncpg.Connection
) -> None:
    # Session fixation (OWASP): a token chosen before login must not be the one afterwards.
    client.session.cookie_jar.update_cookies(
        {"console_session": "planted-by-attacker"}, response_url=client.make_url("/")
    )
    await log_in(client, "ada@example.com")
    issued = _cookie(client, "console_session")
    assert issued is not None
    assert issued != "planted-by-attacker"
    assert await conn.fetchval("SELECT count(*) FROM console_sessions") == 1
    # Logging in again rotates: a second token, the first one still only its own session.
    await log_in(client, "ada@example.com")
    assert _cookie(client, "console_session") not in (issued, None)
    # The database holds only hashes, never a usable token.
    tokens = await conn.fetch("SELECT token_hash FROM console_sessions")
    assert all(len(r["token_hash"]) == 32 for r in tokens)


async def test_a_session_ends_after_its_idle_and_its_absolute_timeout(
    client: Client, conn: asyncpg.Connection
) -> None:
    await log_in(client, "ada@example.com")
    assert (await client.get("/", allow_redirects=False)).status == 200
    await conn.execute("UPDATE console_sessions SET last_seen_at = now() - interval '31 minutes'")
    assert (await client.get("/", allow_redirects=False)).status == 303
    await log_in(client, "ada@example.com")
    await conn.execute("UPDATE console_sessions SET created_at = now() - interval '13 hours'")
    assert (await client.get("/", allow_redirects=False)).status == 303


async def test_logout_everywhere_ends_the_sessions_of_every_browser(
    settings_: Settings, conn: asyncpg.Connection
) -> None:
    app = create_app(settings_)
    async with (
        TestClient(TestServer(app)) as laptop,
        TestClient(TestServer(create_app(settings_))) as phone,
    ):
        await log_in(phone, "ada@example.com")
        token = await log_in(laptop, "ada@example.com")
        await laptop.post("/logout-everywhere", data={"csrf": token})
        assert await conn.fetchval("SELECT count(*) FROM console_sessions") == 0
        assert (await phone.get("/", allow_redirects=False)).status == 303


async def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(
    client: Client, draft: str, conn: asyncpg.Connection
) -> None:
    token = await log_in(client, "ada@example.com")
    for data in ({}, {"csrf": "forged"}):
        response = await client.post(f"/campaigns/{draft}/cancel", data=data)
        assert response.status == 403
        assert "This form has expired" in await response.text()
    assert await conn.fetchval("SELECT status FROM campaigns") == "draft"
    response = await client.post(f"/campaigns/{draft}/cancel", data={"csrf": token})
    assert response.status == 200
    assert await conn.fetchval("SELECT status FROM campaigns") == "cancelled"
    # In the operator log (#19's), once: the refused attempts wrote nothing.
    logged = await conn.fetch(
        "SELECT actor_kind, actor_id, action, object_id FROM operator_log"
        " WHERE action LIKE 'campaign.%'"
    )
    assert [tuple(r) for r in logged] == [("operator", "ada@example.com", "campaign.cancel", draft)]
    # The login form is protected too (double-submit cookie): no token, no login.
    response = await client.post("/login", data={"email": "ada@example.com", "password": PASSWORD})
    assert response.status == 403


async def test_a_viewer_sees_no_launch_button_and_its_launch_is_refused(
    client: Client, draft: str, conn: asyncpg.Connection
) -> None:
    token = await log_in(client, "vic@example.com")
    page = await (await client.get(f"/campaigns/{draft}")).text()
    assert 'id="launch"' not in page
    assert 'id="pause"' not in page
    response = await client.post(f"/campaigns/{draft}/launch", data={"csrf": token})
    assert response.status == 403
    assert "Your role does not allow this." in await response.text()
    assert (await client.get(f"/campaigns/{draft}/launch")).status == 403
    assert await conn.fetchval("SELECT status FROM campaigns") == "draft"
    assert await conn.fetchval("SELECT count(*) FROM deliveries") == 0
    assert (await client.get("/operators")).status == 403
    assert not await conn.fetchval(
        "SELECT count(*) FROM operator_log WHERE action LIKE 'campaign.%'"
    )


async def test_failed_logins_lock_the_address_with_a_growing_wait(
    settings_: Settings, conn: asyncpg.Connection
) -> None:
    async with TestClient(TestServer(create_app(settings_))) as client:
        for _ in range(5):
            page = await client.get("/login")
            response = await client.post(
                "/login",
                data={
                    "email": "ada@example.com",
                    "password": "wrong",
                    "csrf": csrf_of(await page.text()),
                },
            )
            assert response.status == 401
        assert "try again in" in await response.text()
        # Locked: even the right password is not accepted now.
        page = await client.get("/login")
        response = await client.post(
            "/login",
            data={
                "email": "ada@example.com",
                "password": PASSWORD,
                "csrf": csrf_of(await page.text()),
            },
        )
        assert response.status == 401
        assert "try again in" in await response.text()
        first = await conn.fetchval(
            "SELECT extract(epoch FROM locked_until - last_failure_at) FROM console_login_failures"
            " WHERE key = 'email:ada@example.com'"
        )
        await conn.execute("UPDATE console_login_failures SET locked_until = now()")
        page = await client.get("/login")
        await client.post(
            "/login",
            data={
                "email": "ada@example.com",
                "password": "wrong",
                "csrf": csrf_of(await page.text()),
            },
        )
        second = await conn.fetchval(
            "SELECT extract(epoch FROM locked_until - last_failure_at) FROM console_login_failures"
            " WHERE key = 'email:ada@example.com'"
        )
        assert 29 <= float(first) <= 31
        assert 59 <= float(second) <= 61
        # Once the lock has passed, the right password logs in and clears the count.
        await conn.execute("UPDATE console_login_failures SET locked_until = now()")
        await log_in(client, "ada@example.com")
        assert not await conn.fetchval(
            "SELECT count(*) FROM console_login_failures WHERE key = 'email:ada@example.com'"
        )


async def test_every_answer_carries_the_security_headers_and_hsts_only_over_https(
    db_url: str, settings_: Settings
) -> None:
    async with TestClient(TestServer(create_app(settings_))) as client:
        for path in ("/login", "/static/console.css", "/nowhere"):
            headers = (await client.get(path)).headers
            csp = headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp
            assert "unsafe-inline" not in csp
            assert "frame-ancestors 'none'" in csp
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert "Strict-Transport-Security" not in headers
        # A client cannot claim https: X-Forwarded-Proto counts only from a trusted proxy.
        spoofed = await client.get("/login", headers={"X-Forwarded-Proto": "https"})
        assert "Strict-Transport-Security" not in spoofed.headers
    behind_proxy = console_settings(db_url, TEMPLATES, trusted_proxies=("127.0.0.1",))
    async with TestClient(TestServer(create_app(behind_proxy))) as client:
        response = await client.get(
            "/login", headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
        )
        assert response.headers["Strict-Transport-Security"].startswith("max-age=")
        assert "Secure" in response.headers["Set-Cookie"]


async def test_no_page_runs_more_than_ten_queries(
    client: Client, draft: str, settings_: Settings
) -> None:
    await log_in(client, "root@example.com")
    pages = {
        "dashboard": "/",
        "campaigns": "/campaigns",
        "campaign": f"/campaigns/{draft}",
        "audience": f"/campaigns/{draft}/audience",
        "launch_page": f"/campaigns/{draft}/launch",
        "report": f"/campaigns/{draft}/report",
        "contacts": "/contacts?q=person",
        "contact": "/contacts/person1@example.com",
        "explain": f"/contacts/person1@example.com/explain?campaign={draft}",
        "operators": "/operators",
        "topics": "/topics",
        "keys": "/keys",
        "webhooks": "/webhooks",
    }
    for _name, path in pages.items():
        response = await client.get(path)
        assert response.status == 200, (path, await response.text())
    counted = client.app[CONSOLE].queries_by_route
    # The report is the CLI's own report (ReportStore.campaign_report_rows): one transaction
    # of a fixed list of statements (fold, totals, links, opt-outs...), whatever the size.
    budget = {name: 30 if name == "report" else 10 for name in pages}
    over = {name: counted[name] for name in pages if counted[name] > budget[name]}
    assert not over, over
    assert counted["dashboard"] <= 5  # session, campaigns, last 24 h, webhooks, SLA check


async def test_contact_search_pages_by_address(client: Client, draft: str) -> None:
    await log_in(client, "vic@example.com")
    page = await (await client.get("/contacts?q=person")).text()
    assert "person0@example.com" in page
    assert 'id="next"' not in page
    page = await (await client.get("/contacts?q=Person 3")).text()
    assert re.findall(r">(person\d@example.com)<", page) == ["person3@example.com"]
    page = await (await client.get("/contacts?q=person&after=person2@example.com")).text()
    assert "person2@example.com" not in page
    assert "person3@example.com" in page


async def test_operators_add_prints_a_one_time_link_that_sets_the_password(
    monkeypatch: pytest.MonkeyPatch, db_url: str, conn: asyncpg.Connection
) -> None:
    monkeypatch.setenv("MAILER_CONSOLE_BASE_URL", "https://console.example.com")
    code, out = await run_cli(
        monkeypatch, db_url, "operators", "add", "New@Example.com", "--role", "sender"
    )
    assert code == 0, out
    link = re.search(r"https://console\.example\.com(/setup/\S+)", out)
    assert link is not None, out
    assert (
        await conn.fetchval("SELECT role FROM operators WHERE email = 'new@example.com'")
        == "sender"
    )
    code, out = await run_cli(
        monkeypatch, db_url, "operators", "add", "new@example.com", "--role", "admin"
    )
    assert code == 2
    assert "already has an account" in out
    code, out = await run_cli(
        monkeypatch, db_url, "operators", "add", "x@example.com", "--role", "boss"
    )
    assert code == 2
    assert "unknown role" in out

    settings = console_settings(db_url, TEMPLATES)
    async with TestClient(TestServer(create_app(settings))) as client:
        page = await client.get(link.group(1))
        assert page.status == 200
        token = csrf_of(await page.text())
        short = await client.post(
            link.group(1), data={"csrf": token, "password": "short", "password_again": "short"}
        )
        assert short.status == 400
        done = await client.post(
            link.group(1),
            data={"csrf": token, "password": PASSWORD, "password_again": PASSWORD},
        )
        assert done.status == 200
        assert str(done.url).endswith("/login?done=1")
        await log_in(client, "new@example.com")
        assert (await client.get(link.group(1))).status == 404  # the link worked once
    hashed = await conn.fetchval(
        "SELECT password_hash FROM operators WHERE email = 'new@example.com'"
    )
    assert hashed.startswith("$argon2id$")
    logged = await conn.fetch("SELECT actor_id, action, object_id FROM operator_log ORDER BY id")
    assert [(r["action"], r["object_id"]) for r in logged] == [
        ("operator.add", "new@example.com"),
        ("operator.set_password", "new@example.com"),
        ("console.login", "new@example.com"),
    ]


async def test_operators_add_with_prompt_reads_the_password_twice(
    monkeypatch: pytest.MonkeyPatch, db_url: str, conn: asyncpg.Connection
) -> None:
    typed = iter([PASSWORD, PASSWORD])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(typed))
    code, out = await run_cli(
        monkeypatch, db_url, "operators", "add", "p@example.com", "--role", "viewer", "--prompt"
    )
    assert code == 0, out
    assert "/setup/" not in out
    assert await conn.fetchval("SELECT password_hash IS NOT NULL FROM operators") is True


async def test_the_preview_shows_a_contacts_message_in_either_language_in_a_sandboxed_frame(
    client: Client, draft: str
) -> None:
    await log_in(client, "vic@example.com")
    page = await (await client.get(f"/campaigns/{draft}/preview?to=person1@example.com")).text()
    # person1 reads French (tests/engine_setup.add_contacts): the subject in French.
    assert re.search(r'id="preview-subject">[^<]*votre entretien est prévu', page), page
    assert 'sandbox=""' in page
    assert "Vous recevez ce courriel parce que" in page
    page = await (
        await client.get(f"/campaigns/{draft}/preview?to=person1@example.com&lang=en")
    ).text()
    assert re.search(r'id="preview-subject">[^<]*your service is due', page)
    frame = await client.get(f"/campaigns/{draft}/preview.html?to=person1@example.com&lang=en")
    assert frame.headers["Content-Security-Policy"].startswith("sandbox;")
    assert "frame-ancestors 'self'" in frame.headers["Content-Security-Policy"]
    assert "2450, boulevard Laurier" in await frame.text()
    missing = await (await client.get(f"/campaigns/{draft}/preview?to=who@example.com")).text()
    assert "no contact who@example.com" in missing


async def test_an_admin_exports_then_erases_a_contact_after_typing_the_address_again(
    client: Client, draft: str, conn: asyncpg.Connection
) -> None:
    token = await log_in(client, "vic@example.com")
    assert (await client.get("/contacts/person1@example.com/export.json")).status == 403
    denied = await client.post("/contacts/person1@example.com/erase", data={"csrf": token})
    assert denied.status == 403
    token = await log_in(client, "root@example.com")
    page = await (await client.get("/contacts/person1@example.com")).text()
    assert 'id="erase-link"' in page
    export = await client.get("/contacts/person1@example.com/export.json")
    assert export.headers["Content-Disposition"].startswith("attachment")
    assert (await export.json())["tables"]["contacts"][0]["email"] == "person1@example.com"
    wrong = await client.post(
        "/contacts/person1@example.com/erase", data={"csrf": token, "confirm": "person2@x.com"}
    )
    assert wrong.status == 400
    assert await conn.fetchval("SELECT count(*) FROM contacts WHERE email = 'person1@example.com'")
    done = await client.post(
        "/contacts/person1@example.com/erase",
        data={"csrf": token, "confirm": "Person1@Example.com"},
    )
    assert done.status == 200
    assert 'id="erased"' in await done.text()
    assert not await conn.fetchval(
        "SELECT count(*) FROM contacts WHERE email = 'person1@example.com'"
    )
    logged = await conn.fetch(
        "SELECT actor_id, action, object_id FROM operator_log WHERE action LIKE 'contact.%'"
        " ORDER BY id"
    )
    # The append-only log outlives the erasure: it holds the address's hash, never the address.
    hashed = address_hash("person1@example.com").hex()
    assert [tuple(r) for r in logged] == [
        ("root@example.com", "contact.export", hashed),
        ("root@example.com", "contact.erase", hashed),
    ]
    assert not await conn.fetchval(
        "SELECT count(*) FROM operator_log WHERE (to_jsonb(operator_log))::text LIKE '%person1@%'"
    )


async def test_a_launched_campaigns_audience_is_shown_as_frozen_and_live_on_request(
    client: Client, draft: str, stores: Stores, conn: asyncpg.Connection
) -> None:
    await lifecycle.launch(stores.campaigns, draft, datetime.now(UTC))
    # Someone unsubscribes after the launch: the frozen audience does not move, the live one does.
    await conn.execute(
        "INSERT INTO suppressions (email_hash, scope, channel, reason, source)"
        " VALUES ($1, 'channel', 'email', 'unsubscribe', 'test')",
        address_hash("person0@example.com"),
    )
    await log_in(client, "vic@example.com")
    frozen = await (await client.get(f"/campaigns/{draft}/audience")).text()
    assert re.search(r'id="eligible">6<', frozen)
    assert 'id="live-audience"' in frozen
    assert client.app[CONSOLE].queries_by_route["audience"] <= 3  # no audience pass
    live = await (await client.get(f"/campaigns/{draft}/audience?live=1")).text()
    assert re.search(r'id="eligible">5<', live)
    assert "person0@example.com" in live  # a sample of the new reason, linked to explain


async def test_the_dashboard_alerts_a_disabled_webhook_endpoint_and_a_guard_pause(
    client: Client, draft: str, conn: asyncpg.Connection
) -> None:
    await conn.execute(
        "INSERT INTO webhook_endpoints (url, events, secret, disabled_at, disabled_why)"
        " VALUES ('https://crm.example.com/hook', '{}', 'x', now(), 'failing for 3 days')"
    )
    await conn.execute(
        "UPDATE campaigns SET status = 'paused', pause_reason = $1::jsonb",
        '{"reason": "complaint_rate", "rate": 0.004, "threshold": 0.001, "count": 4, "sent": 1000}',
    )
    await log_in(client, "vic@example.com")
    page = await (await client.get("/")).text()
    alerts = page[page.index('id="alerts"') :]
    assert "webhook https://crm.example.com/hook disabled: failing for 3 days" in alerts
    assert f"{draft}: paused by the reputation guard: complaint rate 0.40%" in alerts


async def test_the_progress_stream_needs_a_session_and_ends_with_it(
    client: Client, conn: asyncpg.Connection
) -> None:
    refused = await client.get("/events/progress", headers={"Accept": "text/event-stream"})
    assert refused.status == 401
    await log_in(client, "vic@example.com")
    # Two seconds of the session's absolute lifetime left: the stream stops then.
    await conn.execute(
        "UPDATE console_sessions SET created_at = now() - interval '12 hours' + interval '2 s'"
    )
    stream = await client.get("/events/progress", headers={"Accept": "text/event-stream"})
    assert stream.status == 200
    assert stream.headers["Content-Type"].startswith("text/event-stream")
    assert "frame-ancestors 'none'" in stream.headers["Content-Security-Policy"]
    body = await asyncio.wait_for(stream.text(), 15)
    assert "event: progress" in body
    assert (await client.get("/", allow_redirects=False)).status == 303  # and it is over


async def test_a_console_launch_or_cancel_whose_log_line_fails_does_not_happen(
    client: Client, draft: str, conn: asyncpg.Connection
) -> None:
    """The state change and its operator-log line commit together, or neither does."""
    from tests.integration.test_api_campaigns import REFUSE_LOG, REFUSER

    token = await log_in(client, "ada@example.com")
    await conn.execute(REFUSER)
    for action, before in (("launch", "draft"), ("cancel", "running")):
        await conn.execute(REFUSE_LOG)
        response = await client.post(f"/campaigns/{draft}/{action}", data={"csrf": token})
        assert response.status == 500
        assert await conn.fetchval("SELECT status FROM campaigns") == before
        await conn.execute("DROP TRIGGER refuse_log ON operator_log")
        response = await client.post(f"/campaigns/{draft}/{action}", data={"csrf": token})
        assert response.status == 200
    assert await conn.fetchval("SELECT status FROM campaigns") == "cancelled"
    logged = await conn.fetch("SELECT action FROM operator_log WHERE action LIKE 'campaign.%'")
    assert [r["action"] for r in logged] == ["campaign.launch", "campaign.cancel"]


async def test_a_nul_in_a_search_or_address_is_a_400_not_a_500(client: Client) -> None:
    await log_in(client, "ada@example.com")
    for path in ("/contacts?q=%00", "/contacts?after=a%00", "/contacts?q=ana&x%00=1"):
        response = await client.get(path)
        assert response.status == 400, path
        assert "NUL" in await response.text()
    assert (await client.get("/contacts?q=ana")).status == 200


async def test_a_nul_in_a_form_field_is_a_400_and_writes_nothing(
    client: Client, conn: asyncpg.Connection
) -> None:
    token = await log_in(client, "ada@example.com")
    form = {"csrf": token, "email": "zz@example.com", "source": "a\x00b", "reason": "manual"}
    response = await client.post("/suppressions", data=form)
    assert response.status == 400
    assert "NUL" in await response.text()
    assert await conn.fetchval("SELECT count(*) FROM suppressions") == 0
