"""The inbound mail behind a suppression or an opt-out shows where the operator and the
auditor look: `contacts explain`, `contacts show`, `hygiene report` and `audit export` print
the DSN, feedback report or mailto message (received time, kind, status, diagnostic, hash)."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import asyncpg
import pytest

from mailer.core.addresses import address_hash
from mailer.core.settings import Settings
from mailer.demo.stores import Stores
from tests.cli_run import run_cli
from tests.inbound_setup import DOMAIN, Sent, deliver, inbound_serve, inbound_settings, processed
from tests.inbound_setup import sent_deliveries as sent


async def _story(
    stores: Stores, conn: asyncpg.Connection, settings: Settings
) -> tuple[str, Sent, Sent, Sent, dict[str, str]]:
    """A hard bounce, a complaint and a mailto unsubscribe; the campaign and each's sha256."""
    bounced, complained, left = await sent(stores, conn, 3)
    complaint = complained.fill("yahoo_arf_complaint", **{"reader@yahoo.example": complained.email})
    async with inbound_serve(inbound_settings(settings)) as service:
        await deliver(
            service.port,
            bounced.verp,
            bounced.fill("postfix_hard", **{"dead@example.org": bounced.email}),
        )
        await deliver(service.port, f"fbl@{DOMAIN}", complaint)
        await deliver(service.port, left.mailto, left.fill("mailto_unsubscribe"))
        await processed(conn, 3)
    hashes = {
        r["kind"]: bytes(r["sha256"]).hex()
        for r in await conn.fetch("SELECT kind, sha256 FROM inbound_messages")
    }
    slug = await conn.fetchval("SELECT slug FROM campaigns")
    return slug, bounced, complained, left, hashes


async def test_contacts_explain_and_show_print_the_mail_behind_a_suppression_or_opt_out(
    stores: Stores,
    conn: asyncpg.Connection,
    settings: Settings,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slug, bounced, complained, left, hashes = await _story(stores, conn, settings)
    code, out = await run_cli(
        monkeypatch, db_url, "contacts", "explain", bounced.email, "--campaign", slug
    )
    assert code == 0, out
    assert "not eligible" in out
    assert "hard bounce (DSN), status 5.1.1" in out
    assert "User unknown in virtual" in out  # the diagnostic, as the DSN gave it
    assert "received 20" in out
    assert "UTC by smtp, matched by token" in out  # the VERP token named the delivery
    assert f"sha256 {hashes['dsn_hard']}" in out
    code, out = await run_cli(
        monkeypatch, db_url, "contacts", "explain", complained.email, "--campaign", slug
    )
    assert "complaint (feedback report), feedback type abuse" in out
    assert f"sha256 {hashes['complaint']}" in out
    code, out = await run_cli(
        monkeypatch, db_url, "contacts", "explain", left.email, "--campaign", slug
    )
    assert "mailto unsubscribe" in out
    assert f"sha256 {hashes['unsubscribe']}" in out
    # `contacts show` names that mail beside each suppression it caused.
    mail = await conn.fetchval("SELECT id FROM inbound_messages WHERE kind = 'unsubscribe'")
    story = await stores.contacts.contact_story(left.email, address_hash(left.email))
    assert story is not None
    assert story.suppressions
    for held in story.suppressions:
        assert held.evidence().startswith(f"inbound message {mail}"), held.evidence()
    code, out = await run_cli(monkeypatch, db_url, "contacts", "show", bounced.email)
    assert code == 0, out
    assert f"sha256 {hashes['dsn_hard']}" in out
    assert hashes["complaint"] not in out  # only this person's mail


async def test_the_hygiene_report_lists_suppressions_by_source_and_the_mail_behind_them(
    stores: Stores,
    conn: asyncpg.Connection,
    settings: Settings,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, bounced, complained, _, hashes = await _story(stores, conn, settings)
    code, out = await run_cli(monkeypatch, db_url, "hygiene", "report")
    assert code == 0, out
    assert "suppressed by source: complaint feedback report 1, hard_bounce dsn 1" in out
    assert "latest suppressions from inbound mail" in out
    lines = out.splitlines()
    bounce_line = next(line for line in lines if bounced.email in line)
    assert "hard bounce (DSN), status 5.1.1" in bounce_line
    assert hashes["dsn_hard"] in bounce_line
    complaint_line = next(line for line in lines if complained.email in line)
    assert "feedback type abuse" in complaint_line
    assert hashes["complaint"] in complaint_line


async def test_the_audit_export_carries_the_mail_behind_each_bounce_complaint_and_opt_out(
    stores: Stores,
    conn: asyncpg.Connection,
    settings: Settings,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    slug, bounced, complained, left, hashes = await _story(stores, conn, settings)
    out = tmp_path / "audit.zip"
    code, text = await run_cli(
        monkeypatch, db_url, "audit", "export", "--campaign", slug, "--out", str(out)
    )
    assert code in (0, 1), text  # 1: deliveries marked sent without an archive
    bundle = zipfile.ZipFile(out)
    table = bundle.read(f"{slug}-audit.csv").decode("utf-8")
    rows = {int(r["delivery_id"]): r for r in csv.DictReader(io.StringIO(table))}
    (dsn,) = json.loads(rows[bounced.delivery_id]["inbound_evidence"])
    assert dsn["kind"] == "dsn_hard"
    assert dsn["status"] == "5.1.1"
    assert "User unknown" in dsn["diagnostic"]
    assert dsn["sha256"] == hashes["dsn_hard"]
    assert dsn["received_at"].startswith("20")
    assert dsn["attributed_by"] == "token"
    (arf,) = json.loads(rows[complained.delivery_id]["inbound_evidence"])
    assert (arf["kind"], arf["feedback_type"]) == ("complaint", "abuse")
    (mailto,) = json.loads(rows[left.delivery_id]["inbound_evidence"])
    assert (mailto["kind"], mailto["sha256"]) == ("unsubscribe", hashes["unsubscribe"])
    # The opt-out names the message it came by.
    optouts = json.loads(rows[left.delivery_id]["optouts"])
    assert {o["inbound_id"] for o in optouts} == {mailto["inbound_id"]}
    summary = json.loads(bundle.read(f"{slug}-summary.json"))
    assert summary["inbound_messages_by_kind"] == {"complaint": 1, "dsn_hard": 1, "unsubscribe": 1}


async def test_a_persons_data_export_includes_the_mail_that_came_back_about_them(
    stores: Stores,
    conn: asyncpg.Connection,
    settings: Settings,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    _, bounced, _, _, hashes = await _story(stores, conn, settings)
    out = tmp_path / "export.json"
    code, text = await run_cli(
        monkeypatch, db_url, "contacts", "export", bounced.email, "--out", str(out)
    )
    assert code == 0, text
    document = json.loads(out.read_text(encoding="utf-8"))
    (message,) = document["tables"]["inbound_messages"]
    assert message["kind"] == "dsn_hard"
    assert message["sha256"] == "\\x" + hashes["dsn_hard"]
    assert bounced.email in message["raw"]  # GDPR art. 15: what we hold, readable
