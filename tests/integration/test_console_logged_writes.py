"""The console's form and webhook writes commit with their operator-log line, or not at all:
a line that cannot be written leaves the form, its texts and the endpoint as they were."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from tests.console_pages import ADMIN, as_, settings_
from tests.console_setup import Client
from tests.integration.test_api_campaigns import REFUSE_LOG, REFUSER
from tests.integration.test_console_forms import client  # the business is named

pytestmark = pytest.mark.timeout(120)
__all__ = ["client", "settings_"]

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
