"""Campaigns, suppressions, webhooks and transactional notices through the API, against the
CLI's results for the same operation; every exchange validated against the document."""

from __future__ import annotations

import asyncio
import csv
import io
import zipfile
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from mailer.core.settings import Settings
from mailer.demo.stores import Stores
from tests.api_client import api_client, make_key
from tests.cli_run import run_cli
from tests.engine_setup import sample_campaign
from tests.webhook_receiver import Receiver, receiving

PARTS = {"order": "BC-1", "part": "Brake pads", "vehicle": "Toyota RAV4"}


async def test_pause_resume_and_cancel_through_the_api_match_the_cli_and_are_logged(
    settings: Settings, stores: Stores, conn: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch, db_url: str, tmp_path: Path,
) -> None:  # fmt: skip
    await sample_campaign(stores)
    key = await make_key(settings, "campaigns:read", "campaigns:send")
    reader = await make_key(settings, "campaigns:read", name="reader")
    async with api_client(settings) as api:
        listed = await api.call("GET", "/api/v1/campaigns", reader)
        slug = listed.body["items"][0]["slug"]
        assert listed.body["items"][0]["status"] == "running"
        refused = await api.call("POST", f"/api/v1/campaigns/{slug}/pause", reader)
        assert refused.status == 403
        paused = await api.call("POST", f"/api/v1/campaigns/{slug}/pause", key)
        assert paused.status == 200
        assert paused.body["status"] == "paused"
        twice = await api.call("POST", f"/api/v1/campaigns/{slug}/pause", key)
        assert twice.status == 409
        code, out = await run_cli(monkeypatch, db_url, "campaign", "status", slug)
        assert "paused" in out
        code, _ = await run_cli(monkeypatch, db_url, "campaign", "resume", slug)
        assert code == 0
        status = await api.call("GET", f"/api/v1/campaigns/{slug}", reader)
        assert status.body["status"] == "running"
        assert status.body["deliveries"] == {}  # no contacts in this audience
        cancelled = await api.call("POST", f"/api/v1/campaigns/{slug}/cancel", key)
        assert cancelled.body["status"] == "cancelled"
        missing = await api.call("POST", "/api/v1/campaigns/nope/pause", key)
        assert missing.status == 404
    log = [r["action"] for r in await conn.fetch("SELECT action FROM operator_log ORDER BY id")]
    # The CLI's resume is logged too (actor_kind 'cli', the OS user).
    assert log == ["campaign.pause", "campaign.resume", "campaign.cancel"]
    # The auditor's export carries who did it, from the append-only operator log.
    bundle_path = tmp_path / "audit.zip"
    code, printed = await run_cli(
        monkeypatch, db_url, "audit", "export", "--campaign", slug, "--out", str(bundle_path)
    )
    assert code == 0, printed
    with zipfile.ZipFile(bundle_path) as bundle:
        rows = list(csv.DictReader(io.StringIO(bundle.read(f"{slug}-operator-log.csv").decode())))
    assert [r["action"] for r in rows] == ["campaign.cancel", "campaign.resume", "campaign.pause"]
    assert [r["actor_kind"] for r in rows] == ["api_key", "cli", "api_key"]


async def test_suppressions_are_added_all_or_nothing_and_checked_like_the_cli_shows(
    settings: Settings, conn: asyncpg.Connection
) -> None:
    key = await make_key(settings, "suppressions:write", "contacts:read")
    async with api_client(settings) as api:
        bad = await api.call(
            "POST",
            "/api/v1/suppressions",
            key,
            {"emails": ["a@example.com", "nope"], "source": "DNC 2026-03", "reason": "registry"},
        )
        assert bad.status == 422
        assert [e["pointer"] for e in bad.body["errors"]] == ["/emails/1"]
        assert await conn.fetchval("SELECT count(*) FROM suppressions") == 0
        body = {"emails": ["a@example.com", "B@example.com"], "source": "DNC 2026-03",
                "reason": "registry"}  # fmt: skip
        added = await api.call("POST", "/api/v1/suppressions", key, body)
        assert added.body == {"received": 2, "added": 2}
        check = await api.call("GET", "/api/v1/suppressions/b@example.com", key)
        clean = await api.call("GET", "/api/v1/suppressions/c@example.com", key)
    assert check.body["suppressed"] is True
    assert check.body["suppressions"][0]["reason"] == "registry"
    assert clean.body == {"email": "c@example.com", "suppressed": False, "suppressions": []}


async def test_an_sms_vendor_registered_through_the_api_receives_an_unsubscribe_signed(
    settings: Settings, conn: asyncpg.Connection, stores: Stores
) -> None:
    """The third flow of the README: the SMS vendor stops texting the person the moment
    they unsubscribe by email (here: by another system through the API)."""
    admin = await make_key(settings, "webhooks:manage", name="admin")
    dms = await make_key(settings, "contacts:write", name="dms")
    async with receiving(Receiver()) as receiver, api_client(settings) as api:
        hook = {"url": receiver.url, "events": ["contact.unsubscribed"]}
        added = await api.call("POST", "/api/v1/webhooks", admin, hook)
        assert added.status == 201
        receiver.secret = added.body["secret"]
        people = {"contacts": [{"email": "sms@example.com", "consent": {
            "kind": "express", "source": "store", "obtained_at": "2026-01-02"}}]}  # fmt: skip
        assert (await api.call("POST", "/api/v1/contacts", dms, people)).status == 200
        body = {"source": "email unsubscribe"}
        assert (
            await api.call("POST", "/api/v1/contacts/sms@example.com/opt-out", dms, body)
        ).status == 200
        from mailer.core.settings import WebhookSettings
        from tests.integration.test_webhooks import run_until

        fast = WebhookSettings(retry_base_s=0.01, retry_max_s=0.05, poll_s=0.05)
        await run_until(stores, fast, lambda: len(receiver.received) == 1)
        listed = await api.call("GET", "/api/v1/webhooks", admin)
    event: dict[str, Any] = receiver.received[0]
    assert event["type"] == "contact.unsubscribed"
    assert event["data"]["contact"]["email"] == "sms@example.com"
    assert event["data"]["channels"] == ["email", "sms"]
    assert listed.body["items"][0]["delivered"] == 1
    assert "secret" not in listed.body["items"][0]


async def test_a_transactional_notice_is_enqueued_once_and_its_status_read(
    settings: Settings, conn: asyncpg.Connection
) -> None:
    key = await make_key(settings, "transactional:send")
    body = {"template": "parts_received", "to": "walkin@example.com", "data": PARTS}
    headers = {"Idempotency-Key": "dms-order-BC-1"}
    async with api_client(settings) as api:
        first, again = await asyncio.gather(
            api.call("POST", "/api/v1/transactional", key, body, headers=headers),
            api.call("POST", "/api/v1/transactional", key, body, headers=headers),
        )
        assert (first.status, again.status) == (202, 202)
        assert first.body == again.body
        assert first.body["accepted"] is True
        status = await api.call("GET", f"/api/v1/transactional/{first.body['message_id']}", key)
        assert status.body["status"] == "queued"
        unknown = await api.call("POST", "/api/v1/transactional", key, {**body, "template": "x"})
        assert unknown.status == 404
        bad = await api.call("POST", "/api/v1/transactional", key, {**body, "to": "nope"})
        assert bad.status == 422
    assert await conn.fetchval("SELECT count(*) FROM operator_log") == 1
