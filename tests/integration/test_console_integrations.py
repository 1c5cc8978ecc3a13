"""The console's API keys and webhooks (admin): create a key shown once, revoke and expire it;
add an endpoint (its secret shown once), disable and enable it, replay its events; the
operations of `mailer api-keys` and `mailer webhooks`, each in the operator log."""

from __future__ import annotations

import re

import asyncpg
import pytest

from mailer.api.keys import key_hash
from tests.cli_run import run_cli
from tests.console_pages import ADMIN, SENDER, as_, client, queries, settings_
from tests.console_setup import Client

pytestmark = pytest.mark.timeout(120)
__all__ = ["client", "settings_"]


async def _log(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        "SELECT action FROM operator_log WHERE actor_id = $1 AND action <> 'console.login'"
        " ORDER BY id",
        ADMIN,
    )
    return [r["action"] for r in rows]


async def test_an_admin_creates_a_key_seen_once_then_expires_and_revokes_keys(
    client: Client, conn: asyncpg.Connection
) -> None:
    csrf = await as_(client, ADMIN)
    page = await client.post(
        "/keys",
        data=[("csrf", csrf), ("name", "dms"), ("scopes", "contacts:read"),
              ("scopes", "contacts:write"), ("expires", "90d")],
    )  # fmt: skip
    assert page.status == 200, await page.text()
    found = re.search(r'id="new-key">(mk_[0-9a-f]{8}_[\w-]{43})<', await page.text())
    assert found
    row = await conn.fetchrow("SELECT prefix, scopes, secret_hash FROM api_keys")
    assert row is not None
    assert row["scopes"] == ["contacts:read", "contacts:write"]
    assert bytes(row["secret_hash"]) == key_hash(found.group(1))  # only the hash is kept
    again = await (await client.get("/keys")).text()
    assert found.group(1) not in again
    assert queries(client, "keys") <= 10
    prefix = row["prefix"]
    done = await client.post(f"/keys/{prefix}/expire", data={"csrf": csrf, "at": "7d"})
    assert done.status == 200
    assert await conn.fetchval("SELECT expires_at > now() + interval '6 days' FROM api_keys")
    done = await client.post(f"/keys/{prefix}/revoke", data={"csrf": csrf})
    assert done.status == 200
    assert await conn.fetchval("SELECT revoked_at IS NOT NULL FROM api_keys")
    gone = await client.post("/keys/00000000/revoke", data={"csrf": csrf})
    assert gone.status == 404
    refused = await client.post("/keys", data={"csrf": csrf, "name": "x", "scopes": "root"})
    assert refused.status == 400
    assert "--scopes: unknown scope(s) root" in await refused.text()
    assert await _log(conn) == ["api_key.create", "api_key.expire", "api_key.revoke"]


async def test_an_admin_adds_an_endpoint_disables_enables_and_replays_it(
    client: Client, conn: asyncpg.Connection
) -> None:
    csrf = await as_(client, ADMIN)
    page = await client.post(
        "/webhooks",
        data=[("csrf", csrf), ("url", "https://crm.example.com/hook"),
              ("events", "contact.unsubscribed")],
    )  # fmt: skip
    assert page.status == 200, await page.text()
    secret = re.search(r'id="new-secret">(whsec_[^<]+)<', await page.text())
    assert secret
    endpoint = await conn.fetchrow("SELECT id, secret, events FROM webhook_endpoints")
    assert endpoint is not None
    assert endpoint["secret"] == secret.group(1)
    assert endpoint["events"] == ["contact.unsubscribed"]
    assert secret.group(1) not in await (await client.get("/webhooks")).text()
    assert queries(client, "webhooks") <= 10
    hook = endpoint["id"]
    assert (await client.post(f"/webhooks/{hook}/disable", data={"csrf": csrf})).status == 200
    assert await conn.fetchval("SELECT disabled_why FROM webhook_endpoints") == (
        f"disabled by {ADMIN}"
    )
    assert (await client.post(f"/webhooks/{hook}/enable", data={"csrf": csrf})).status == 200
    assert await conn.fetchval("SELECT disabled_at FROM webhook_endpoints") is None
    replay = await client.post(
        f"/webhooks/{hook}/replay", data={"csrf": csrf, "since": "2020-01-01T00:00"}
    )
    assert replay.status == 200
    assert 'id="notice"' in await replay.text()
    bad = await client.post("/webhooks", data={"csrf": csrf, "url": "ftp://x", "events": "x"})
    assert bad.status == 400
    assert await _log(conn) == [
        "webhook.add", "webhook.disable", "webhook.enable", "webhook.replay",
    ]  # fmt: skip


async def test_keys_and_webhooks_are_refused_to_a_sender_and_to_a_post_without_csrf(
    client: Client, conn: asyncpg.Connection
) -> None:
    csrf = await as_(client, SENDER)
    data = {"csrf": csrf, "name": "dms", "scopes": "contacts:read"}
    assert (await client.post("/keys", data=data)).status == 403
    assert (await client.get("/keys")).status == 403
    hook = {"csrf": csrf, "url": "https://crm.example.com/hook", "events": "contact.unsubscribed"}
    assert (await client.post("/webhooks", data=hook)).status == 403
    await as_(client, ADMIN)
    assert (await client.post("/keys", data={**data, "csrf": "forged"})).status == 403
    assert (await client.post("/webhooks", data={**hook, "csrf": "forged"})).status == 403
    assert await conn.fetchval("SELECT count(*) FROM api_keys") == 0
    assert await conn.fetchval("SELECT count(*) FROM webhook_endpoints") == 0


async def test_the_cli_disables_an_endpoint_as_the_console_does(
    monkeypatch: pytest.MonkeyPatch, db_url: str, conn: asyncpg.Connection
) -> None:
    code, out = await run_cli(
        monkeypatch, db_url, "webhooks", "add", "https://crm.example.com/hook",
        "--events", "contact.unsubscribed",
    )  # fmt: skip
    assert code == 0, out
    hook = await conn.fetchval("SELECT id FROM webhook_endpoints")
    code, out = await run_cli(monkeypatch, db_url, "webhooks", "disable", str(hook))
    assert code == 0, out
    assert await conn.fetchval("SELECT disabled_at IS NOT NULL FROM webhook_endpoints")
