"""Campaigns created, checked, counted, launched and reported through the API, against the
CLI's results for the same operation; transitions and their operator-log lines commit
together. Every exchange is validated against the OpenAPI document."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import asyncpg
import pytest

from mailer.core.addresses import address_hash
from mailer.core.settings import Settings
from mailer.demo.stores import Stores
from tests.api_client import api_client, make_key
from tests.cli_run import run_cli
from tests.engine_setup import TEMPLATES, add_contacts

FILE = TEMPLATES / "service_reminder.toml"
SLUG = "service-reminder-2024-10"
TOML = "application/toml"


def api_settings(settings: Settings) -> Settings:
    return dataclasses.replace(
        settings, api=dataclasses.replace(settings.api, templates_dir=str(TEMPLATES))
    )


async def log_actions(conn: asyncpg.Connection) -> list[str]:
    return [r["action"] for r in await conn.fetch("SELECT action FROM operator_log ORDER BY id")]


async def test_a_campaign_file_posted_becomes_the_draft_the_cli_makes_of_the_same_file(
    settings: Settings, stores: Stores, conn: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch, db_url: str, tmp_path: Path,
) -> None:  # fmt: skip
    await stores.contacts.topic_upsert("service", "Service reminders")
    key = await make_key(settings, "campaigns:send", "campaigns:read")
    text = FILE.read_text(encoding="utf-8")
    async with api_client(api_settings(settings)) as api:
        created = await api.call("POST", "/api/v1/campaigns", key, raw=text.encode(),
                                 content_type=TOML, headers={"Idempotency-Key": "c1"})  # fmt: skip
        assert created.status == 201, created.body
        assert (created.body["slug"], created.body["status"]) == (SLUG, "draft")
        replay = await api.call("POST", "/api/v1/campaigns", key, raw=text.encode(),
                                content_type=TOML, headers={"Idempotency-Key": "c1"})  # fmt: skip
        assert replay.body == created.body
        assert replay.headers["Idempotent-Replayed"] == "true"
        again = await api.call("POST", "/api/v1/campaigns", key, raw=text.encode(),
                               content_type=TOML)  # fmt: skip
        assert again.status == 409
        assert again.body["errors"][0]["pointer"] == "/slug"
        broken = text.replace(f'slug = "{SLUG}"', 'slug = "Not A Slug"').replace(
            'postal_address = "', 'postal_address_typo = "'
        )
        bad = await api.call("POST", "/api/v1/campaigns", key, raw=broken.encode(),
                             content_type=TOML)  # fmt: skip
        assert bad.status == 422
        pointers = {e["pointer"] for e in bad.body["errors"]}
        assert {"/slug", "/sender/postal_address"} <= pointers, bad.body
    # The CLI, given the same file under another slug, stores the same definition.
    other = tmp_path / "copy.toml"
    other.write_text(text.replace(f'slug = "{SLUG}"', 'slug = "by-cli"'), encoding="utf-8")
    code, out = await run_cli(monkeypatch, db_url, "campaign", "create", str(other))
    assert code == 0, out
    rows = {
        r["slug"]: (json.loads(r["definition"]), r["template_version_id"], r["status"])
        for r in await conn.fetch(
            "SELECT slug, definition::text, template_version_id, status FROM campaigns"
        )
    }
    api_def, cli_def = rows[SLUG][0], rows["by-cli"][0]
    assert {**api_def, "slug": "by-cli"} == cli_def
    assert rows[SLUG][1:] == rows["by-cli"][1:]
    assert await log_actions(conn) == ["campaign.create"] * 2  # the API's, then the CLI's


async def test_check_audience_send_and_report_answer_what_the_cli_prints(
    settings: Settings, stores: Stores, conn: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch, db_url: str,
) -> None:  # fmt: skip
    await stores.contacts.topic_upsert("service", "Service reminders")
    await add_contacts(conn, 5)
    await conn.execute(  # one more, with no consent: excluded, for a named reason
        "INSERT INTO contacts (email, email_hash, locale) VALUES ('none@example.com', $1, 'en')",
        address_hash("none@example.com"),
    )
    key = await make_key(settings, "campaigns:send", "campaigns:read")
    reader = await make_key(settings, "campaigns:read", name="reader")
    async with api_client(api_settings(settings)) as api:
        created = await api.call("POST", "/api/v1/campaigns", key, raw=FILE.read_bytes(),
                                 content_type=TOML)  # fmt: skip
        assert created.status == 201
        checked = await api.call("GET", f"/api/v1/campaigns/{SLUG}/check", reader)
        code, out = await run_cli(monkeypatch, db_url, "campaign", "check", SLUG)
        assert checked.body["ok"] is (code == 0)
        assert checked.body["lint"] == []
        assert "every sample carries" in out
        for finding in checked.body["setup"]:
            assert finding["message"][:40] in out
        counted = await api.call("GET", f"/api/v1/campaigns/{SLUG}/audience", reader)
        code, out = await run_cli(monkeypatch, db_url, "campaign", "audience", SLUG)
        assert code == 0
        assert counted.body["eligible"] == 5
        assert counted.body["total"] == 6
        for line in counted.body["excluded"]:
            assert line["reason"] in out
        assert "5" in out.split("eligible", 1)[1].split("\n", 1)[0]
        refused = await api.call("POST", f"/api/v1/campaigns/{SLUG}/send", reader)
        assert refused.status == 403
        sent = await api.call("POST", f"/api/v1/campaigns/{SLUG}/send", key)
        assert sent.status == 200, sent.body
        assert (sent.body["status"], sent.body["added"]) == ("running", 5)
        assert sent.body["deliveries"] == {"queued": 5}
        code, out = await run_cli(monkeypatch, db_url, "campaign", "status", SLUG)
        assert "running" in out
        assert "queued" in out
        reported = await api.call("GET", f"/api/v1/campaigns/{SLUG}/report", reader)
        code, out = await run_cli(monkeypatch, db_url, "campaign", "report", SLUG, "--json")
        assert code == 0
        missing = await api.call("GET", "/api/v1/campaigns/nope/report", reader)
        assert missing.status == 404
    from_cli = json.loads(out)
    for document in (from_cli, reported.body):
        document.pop("generated_at")
    assert reported.body == from_cli
    assert reported.body["audience"]["eligible"] == 5
    assert await log_actions(conn) == ["campaign.create", "campaign.send"]


async def test_a_campaign_with_a_fatal_setup_finding_is_not_sent_and_nothing_is_logged(
    settings: Settings, stores: Stores, conn: asyncpg.Connection
) -> None:
    await stores.contacts.topic_upsert("service", "Service reminders")
    # A tracker on plain http:// across a network: no one-click unsubscribe (RFC 8058).
    unsafe = dataclasses.replace(
        api_settings(settings),
        tracker=dataclasses.replace(settings.tracker, base_url="http://track.example.com"),
    )
    key = await make_key(settings, "campaigns:send", "campaigns:read")
    async with api_client(unsafe) as api:
        await api.call("POST", "/api/v1/campaigns", key, raw=FILE.read_bytes(), content_type=TOML)
        checked = await api.call("GET", f"/api/v1/campaigns/{SLUG}/check", key)
        refused = await api.call("POST", f"/api/v1/campaigns/{SLUG}/send", key)
    assert checked.body["ok"] is False
    assert any(f["fatal"] for f in checked.body["setup"])
    assert refused.status == 409
    assert "sending setup" in refused.body["detail"]
    assert await conn.fetchval("SELECT status FROM campaigns") == "draft"
    assert await log_actions(conn) == ["campaign.create"]


REFUSER = """CREATE FUNCTION refuse_log() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN RAISE EXCEPTION 'operator log unavailable'; END $$"""
REFUSE_LOG = (
    "CREATE TRIGGER refuse_log BEFORE INSERT ON operator_log "
    "FOR EACH ROW EXECUTE FUNCTION refuse_log()"
)


async def test_a_transition_whose_log_line_fails_does_not_happen(
    settings: Settings, stores: Stores, conn: asyncpg.Connection
) -> None:
    """The state change and its operator-log line commit together, or neither does."""
    await stores.contacts.topic_upsert("service", "Service reminders")
    await add_contacts(conn, 2)
    key = await make_key(settings, "campaigns:send", "campaigns:read")
    async with api_client(api_settings(settings)) as api:
        await api.call("POST", "/api/v1/campaigns", key, raw=FILE.read_bytes(), content_type=TOML)
        await conn.execute(REFUSER)
        await conn.execute(REFUSE_LOG)
        failed = await api.call("POST", f"/api/v1/campaigns/{SLUG}/send", key, validate=False)
        assert failed.status == 500
        assert await conn.fetchval("SELECT status FROM campaigns") == "draft"
        await conn.execute("DROP TRIGGER refuse_log ON operator_log")
        sent = await api.call("POST", f"/api/v1/campaigns/{SLUG}/send", key)
        assert (sent.status, sent.body["status"]) == (200, "running")
        for verb, before in (("pause", "running"), ("cancel", "paused")):
            await conn.execute(REFUSE_LOG)
            failed = await api.call("POST", f"/api/v1/campaigns/{SLUG}/{verb}", key, validate=False)
            assert failed.status == 500
            assert await conn.fetchval("SELECT status FROM campaigns") == before
            await conn.execute("DROP TRIGGER refuse_log ON operator_log")
            done = await api.call("POST", f"/api/v1/campaigns/{SLUG}/{verb}", key)
            assert done.status == 200
    assert await conn.fetchval("SELECT status FROM campaigns") == "cancelled"
    assert await log_actions(conn) == [
        "campaign.create", "campaign.send", "campaign.pause", "campaign.cancel",
    ]  # fmt: skip


async def test_two_creates_of_one_slug_at_once_make_one_draft_and_one_409(
    settings: Settings, stores: Stores, conn: asyncpg.Connection
) -> None:
    await stores.contacts.topic_upsert("service", "Service reminders")
    key = await make_key(settings, "campaigns:send", "campaigns:read")
    text = FILE.read_text(encoding="utf-8").encode()
    async with api_client(api_settings(settings)) as api:
        answers = await asyncio.gather(
            *(
                api.call("POST", "/api/v1/campaigns", key, raw=text, content_type=TOML)
                for _ in range(4)
            )
        )
    assert sorted(a.status for a in answers) == [201, 409, 409, 409]
    assert all(a.body["errors"][0]["pointer"] == "/slug" for a in answers if a.status == 409)
    assert await conn.fetchval("SELECT count(*) FROM campaigns") == 1
    assert await log_actions(conn) == ["campaign.create"]
