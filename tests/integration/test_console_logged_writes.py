"""The console's writes commit with their operator-log line, or not at all: a line that
cannot be written leaves forms, webhooks, campaigns, contacts, suppressions, operators and
passwords as they were."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from tests.console_pages import ADMIN, VIEWER, as_, settings_
from tests.console_setup import Client, csrf_of
from tests.engine_setup import TEMPLATES
from tests.integration.test_api_campaigns import REFUSE_LOG, REFUSER
from tests.integration.test_console_forms import client  # the business is named
from tests.integration.test_console_http import draft  # small_world's service reminder

pytestmark = pytest.mark.timeout(120)
__all__ = ["client", "draft", "settings_"]

EN = "Yes, send me the service newsletter."
HOOK = [("url", "https://crm.example.com/hook"), ("events", "contact.consent.granted")]


async def test_a_console_form_or_webhook_write_whose_log_line_fails_does_not_happen(
    client: Client, conn: asyncpg.Connection
) -> None:
    csrf = await as_(client, ADMIN)
    form = {"csrf": csrf, "slug": "infolettre", "source": "Site web", "locale_en": "on",
            "text_en": EN}  # fmt: skip
    assert (await client.post("/forms", data=form, allow_redirects=False)).status == 303
    for url in ("https://crm.example.com/hook", "https://erp.example.com/hook"):
        data = [("csrf", csrf), ("url", url), ("events", "contact.consent.granted")]
        assert (await client.post("/webhooks", data=data)).status == 200
    assert (await client.post("/webhooks/2/disable", data={"csrf": csrf})).status == 200
    # An event endpoint 1 has not had: a replay would queue it.
    await conn.execute(
        "INSERT INTO webhook_events (type, data) VALUES ('contact.consent.granted', '{}')"
    )
    await conn.execute(REFUSER)
    await conn.execute(REFUSE_LOG)

    async def undone(path: str, data: Any, state: Callable[[], Awaitable[object]]) -> None:
        before = await state()
        answer = await client.post(path, data=data, allow_redirects=False)
        assert answer.status == 500, (path, await answer.text())
        assert await state() == before, path

    def value(sql: str) -> Callable[[], Awaitable[object]]:
        return lambda: conn.fetchval(sql)

    await undone("/forms", {**form, "slug": "ventes"}, value("SELECT count(*) FROM forms"))
    reword = {"csrf": csrf, "locale": "en", "text": EN + " Thanks."}
    await undone("/forms/infolettre/text", reword, value("SELECT max(version) FROM form_texts"))
    disabled = value("SELECT disabled_at FROM forms")
    await undone("/forms/infolettre/disable", {"csrf": csrf}, disabled)
    hooks = value("SELECT count(*) FROM webhook_endpoints")
    await undone("/webhooks", [("csrf", csrf), *HOOK], hooks)
    off = value("SELECT array_agg(disabled_at IS NULL ORDER BY id) FROM webhook_endpoints")
    await undone("/webhooks/1/disable", {"csrf": csrf}, off)
    await undone("/webhooks/2/enable", {"csrf": csrf}, off)
    queued = value("SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = 1")
    replay = {"csrf": csrf, "since": "2020-01-01T00:00"}
    await undone("/webhooks/1/replay", replay, queued)
    await conn.execute("DROP TRIGGER refuse_log ON operator_log")
    assert (await client.post("/webhooks/1/replay", data=replay)).status == 200
    assert await queued() == 1


async def test_a_console_campaign_or_password_write_whose_log_line_fails_does_not_happen(
    client: Client, conn: asyncpg.Connection
) -> None:
    csrf = await as_(client, ADMIN)
    await conn.execute("INSERT INTO topics (slug, name) VALUES ('service', 'Service reminders')")
    text = (TEMPLATES / "service_reminder.toml").read_text(encoding="utf-8")
    created = await client.post("/campaigns", data={"csrf": csrf, "text": text},
                                allow_redirects=False)  # fmt: skip
    assert created.status == 303, await created.text()
    slug = await conn.fetchval("SELECT slug FROM campaigns")
    # A row a crash left uncertain (what resend-uncertain queues again).
    await conn.execute(
        "INSERT INTO contacts (email, email_hash)"
        " VALUES ('lea@example.com', sha256(convert_to('lea@example.com', 'UTF8')))"
    )
    await conn.execute(
        "INSERT INTO deliveries (campaign_id, contact_id, status, domain)"
        " SELECT p.id, c.id, 'uncertain', 'example.com' FROM campaigns p, contacts c"
    )
    await conn.execute("UPDATE campaigns SET status = 'done'")
    await conn.execute(
        "UPDATE operators SET setup_token_hash = sha256('tok'::bytea),"
        " setup_expires_at = now() + interval '1 day' WHERE email = $1",
        VIEWER,
    )
    await conn.execute(REFUSER)
    await conn.execute(REFUSE_LOG)

    other = text.replace(f'slug = "{slug}"', 'slug = "another-reminder"')
    assert other != text
    answer = await client.post("/campaigns", data={"csrf": csrf, "text": other})
    assert answer.status == 500
    assert await conn.fetchval("SELECT count(*) FROM campaigns") == 1
    answer = await client.post(f"/campaigns/{slug}/resend-uncertain", data={"csrf": csrf})
    assert answer.status == 500
    assert await conn.fetchval("SELECT status FROM deliveries") == "uncertain"
    password = await conn.fetchval("SELECT password_hash FROM operators WHERE email = $1", VIEWER)
    setup = "/setup/tok"  # token_hash("tok") = sha256 of its bytes
    page = await client.get(setup)
    assert page.status == 200, await page.text()
    new = "a long enough passphrase"
    answer = await client.post(
        setup, data={"csrf": csrf_of(await page.text()), "password": new, "password_again": new}
    )
    assert answer.status == 500
    assert (
        await conn.fetchval("SELECT password_hash FROM operators WHERE email = $1", VIEWER)
        == password
    )


async def test_a_console_launch_erasure_suppression_or_enrolment_whose_log_fails_is_undone(
    client: Client, conn: asyncpg.Connection, draft: str
) -> None:
    slug = draft
    csrf = await as_(client, ADMIN)
    await conn.execute(REFUSER)
    await conn.execute(REFUSE_LOG)

    async def undone(path: str, data: dict[str, str], sql: str, *args: object) -> None:
        before = await conn.fetchval(sql, *args)
        answer = await client.post(path, data={"csrf": csrf, **data}, allow_redirects=False)
        assert answer.status == 500, (path, answer.status, await answer.text())
        assert await conn.fetchval(sql, *args) == before, path

    # The freeze commits on its own connections (lifecycle.launch); the status change is
    # the write that goes with the line, and launching again completes the freeze.
    status = "SELECT status FROM campaigns"
    await undone(f"/campaigns/{slug}/launch", {}, status)
    await undone(f"/campaigns/{slug}/cancel", {}, status)
    person = "SELECT count(*) FROM contacts WHERE email = $1"
    erase = {"confirm": "person1@example.com"}
    await undone("/contacts/person1@example.com/erase", erase, person, "person1@example.com")
    one = {"email": "zz@example.com", "source": "phone call", "reason": "manual"}
    await undone("/suppressions", one, "SELECT count(*) FROM suppressions")
    enrol = {"email": "new@example.com", "role": "sender"}
    await undone("/operators", enrol, "SELECT count(*) FROM operators")
    # The same pages write, and log once each, when the log can take the line.
    await conn.execute("DROP TRIGGER refuse_log ON operator_log")
    last = await conn.fetchval("SELECT max(id) FROM operator_log")
    pages = [
        (f"/campaigns/{slug}/launch", {}),
        ("/suppressions", one),
        ("/contacts/person1@example.com/erase", erase),
        ("/operators", enrol),
    ]
    for path, data in pages:
        answer = await client.post(path, data={"csrf": csrf, **data}, allow_redirects=False)
        assert answer.status in (200, 303), (path, await answer.text())
    logged = await conn.fetch(
        "SELECT action, detail->>'via' AS via FROM operator_log WHERE id > $1 ORDER BY id",
        last,
    )
    assert [(r["action"], r["via"]) for r in logged] == [
        ("campaign.launch", "console"),
        ("suppressions.add", "console"),
        ("contact.erase", "console"),
        ("operator.add", None),
    ]
