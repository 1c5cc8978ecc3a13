"""The auditor's export: every sent message names a consent that stood at its send time,
its archived bytes match the hash taken at send time, and opt-outs show their timing."""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from mailer.campaigns import audience
from mailer.commands import compliance as compliance_cmd
from mailer.compliance import audit, privacy
from mailer.core.addresses import address_hash
from mailer.core.consent import Action, Channel, Kind, LedgerEntry, Policy, evaluate_consent
from mailer.core.settings import Settings
from mailer.demo.stores import Stores
from tests.engine_setup import NOW, add_contacts, engine_for, sample_campaign, settings_for
from tests.smtp_servers import smtp_server
from tracker.store import TrackerStore

SLUG = "service-reminder-2024-10"  # the shipped sample campaign
ATTRIBUTES = json.dumps({"vehicle": "Mazda 3", "next_service": "2026-11-02", "mileage": 9000})


async def _implied(
    conn: asyncpg.Connection, email: str, kind: str, obtained: datetime, evidence: dict[str, Any]
) -> None:
    contact = await conn.fetchval(
        "INSERT INTO contacts (email, email_hash, name, attributes, last_activity_at) "
        "VALUES ($1, $2, 'Client', $3, now()) RETURNING id",
        email,
        address_hash(email),
        ATTRIBUTES,
    )
    await conn.execute(
        "INSERT INTO consents (contact_id, channel, action, kind, source, obtained_at, evidence) "
        "VALUES ($1, 'email', 'grant', $2, 'service desk', $3, $4)",
        contact,
        kind,
        obtained,
        json.dumps(evidence),
    )


async def _sent_campaign(stores: Stores, conn: asyncpg.Connection) -> int:
    """The sample campaign sent to express, purchase and inquiry consents; one lapsed
    inquiry is left out by the audience."""
    await add_contacts(conn, 3)
    await _implied(
        conn,
        "buyer@example.com",
        "implied_purchase",
        NOW - timedelta(days=300),
        {"invoice": "F-1042"},
    )
    await _implied(
        conn,
        "asker@example.com",
        "implied_inquiry",
        NOW - timedelta(days=30),
        {"form": "quote request"},
    )
    await _implied(
        conn,
        "lapsed@example.com",
        "implied_inquiry",
        NOW - timedelta(days=250),
        {"form": "quote request"},
    )
    campaign = await sample_campaign(stores)
    with smtp_server() as (port, _sink):
        await engine_for(stores, settings_for(port)).run(until_idle=True)
    return campaign


def _read(out: Path, label: str) -> tuple[list[dict[str, str]], dict[str, Any], zipfile.ZipFile]:
    bundle = zipfile.ZipFile(out)
    rows = list(csv.DictReader(io.TextIOWrapper(bundle.open(f"{label}-audit.csv"), "utf-8")))
    summary = json.loads(bundle.read(f"{label}-summary.json"))
    return rows, summary, bundle


def _console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=200), out


# ---------------------------------------------------------------- pure rules

BASE = datetime(2024, 1, 15, 9, tzinfo=UTC)


@settings(max_examples=200, deadline=None)
@given(
    kind=st.sampled_from(list(Kind)),
    policy=st.sampled_from(list(Policy)),
    ends_in=st.one_of(st.none(), st.integers(min_value=0, max_value=1500)),
    withdraw_after=st.one_of(st.none(), st.integers(min_value=0, max_value=1500)),
    send_after=st.integers(min_value=-30, max_value=1500),
)
def test_a_single_grant_stands_at_send_time_exactly_when_the_consent_rules_say_eligible(
    kind: Kind,
    policy: Policy,
    ends_in: int | None,
    withdraw_after: int | None,
    send_after: int,
) -> None:
    obtained = BASE
    ends = None if ends_in is None else obtained + timedelta(days=ends_in)
    withdrawn = None if withdraw_after is None else obtained + timedelta(days=withdraw_after)
    sent = obtained + timedelta(days=send_after, hours=1)
    ledger = [LedgerEntry(1, Channel.EMAIL, Action.GRANT, kind, "desk", obtained, ends)]
    if withdrawn is not None:
        ledger.append(LedgerEntry(2, Channel.EMAIL, Action.WITHDRAW, None, "one-click", withdrawn))
    standing = audit.consent_standing(
        policy=policy,
        channel=Channel.EMAIL,
        consent_id=1,
        kind=kind.value,
        source="desk",
        obtained_at=obtained,
        ends_at=ends,
        withdrawn_at=withdrawn,
        sent_at=sent,
    )
    assert standing.valid_at_send == evaluate_consent(ledger, Channel.EMAIL, policy, sent).eligible


def test_an_inquiry_consent_does_not_stand_for_a_message_sent_seven_months_later() -> None:
    standing = audit.consent_standing(
        policy=Policy.CASL,
        channel=Channel.EMAIL,
        consent_id=7,
        kind="implied_inquiry",
        source="quote request",
        obtained_at=BASE,
        ends_at=None,
        withdrawn_at=None,
        sent_at=BASE + timedelta(days=213),
    )
    assert standing.valid_until == datetime(2024, 7, 15, 9, tzinfo=UTC)  # CASL s.10(10)(c)
    assert standing.valid_at_send is False


def test_a_delivery_without_consent_stands_only_under_the_can_spam_opt_out_model() -> None:
    args: dict[str, Any] = {
        "channel": Channel.EMAIL,
        "consent_id": None,
        "kind": None,
        "source": None,
        "obtained_at": None,
        "ends_at": None,
        "withdrawn_at": None,
        "sent_at": BASE,
    }
    assert audit.consent_standing(policy=Policy.CAN_SPAM, **args).valid_at_send is True
    assert audit.consent_standing(policy=Policy.CASL, **args).valid_at_send is False
    unsent = audit.consent_standing(policy=Policy.CASL, **{**args, "sent_at": None})
    assert unsent.valid_at_send is None


# ---------------------------------------------------------------- the bundle


async def test_the_auditor_export_names_for_every_sent_message_a_consent_valid_at_its_send_time(
    stores: Stores,
    conn: asyncpg.Connection,
    tmp_path: Path,
    settings: Settings,
    printed: io.StringIO,
) -> None:
    campaign = await _sent_campaign(stores, conn)
    out = tmp_path / "audit.zip"
    args = argparse.Namespace(campaign=SLUG, contact=None, out=str(out))
    assert await compliance_cmd.audit_export(args, settings) == 0
    rows, summary, bundle = _read(out, SLUG)
    sent = [r for r in rows if r["status"] == "sent"]
    assert len(sent) == len(rows) == 5  # three express, one purchase, one inquiry
    spec = await stores.campaigns.campaign_spec(SLUG)
    assert spec is not None
    for row in sent:
        sent_at = datetime.fromisoformat(row["sent_at"])
        assert row["consent_kind"]
        assert row["consent_valid_at_send"] == "true"
        assert datetime.fromisoformat(row["consent_obtained_at"]) <= sent_at
        if row["consent_valid_until"]:
            assert sent_at < datetime.fromisoformat(row["consent_valid_until"])
        # An independent check: the consent rules, replayed on the whole ledger at send time.
        inputs = await stores.contacts.contact_rule_inputs(row["email"])
        assert inputs is not None
        assert audience.explain(inputs, spec, sent_at).eligible, row["email"]
        assert row["hash_verified"] == "true"
        assert hashlib.sha256(bundle.read(row["eml"])).hexdigest() == row["sha256"]
    kinds = {r["email"]: (r["consent_kind"], r["consent_valid_until"] != "") for r in sent}
    assert kinds["buyer@example.com"] == ("implied_purchase", True)
    assert kinds["asker@example.com"] == ("implied_inquiry", True)
    assert kinds["person0@example.com"] == ("express", False)
    evidence = {r["email"]: json.loads(r["consent_evidence"]) for r in sent}
    assert evidence["buyer@example.com"] == {"invoice": "F-1042"}
    assert summary["campaign"]["slug"] == SLUG
    assert summary["campaign"]["audience_counts"]["consent_expired"] == 1  # lapsed inquiry
    assert summary["sent"] == summary["sent_with_valid_consent"] == 5
    assert summary["hashes_verified"] == summary["messages_archived"] == 5
    assert summary["consent_kinds_of_sent"] == {
        "express": 3,
        "implied_inquiry": 1,
        "implied_purchase": 1,
    }
    assert summary["unsubscribe_sla"]["violations"] == 0
    assert summary["unsubscribe_sla"]["line"].startswith("unsubscribe SLA OK")
    assert "5 with a consent valid at send time" in printed.getvalue()
    assert campaign


async def test_the_export_for_one_contact_shows_its_opt_out_and_how_fast_it_took_effect(
    stores: Stores, conn: asyncpg.Connection, db_url: str, tmp_path: Path, settings: Settings
) -> None:
    campaign = await _sent_campaign(stores, conn)
    delivery = await conn.fetchval(
        "SELECT d.id FROM deliveries d JOIN contacts c ON c.id = d.contact_id "
        "WHERE c.email = 'asker@example.com'"
    )
    tracker = TrackerStore(db_url)
    await tracker.start()
    try:
        recipient = await tracker.recipient(delivery)
        assert recipient is not None
        await tracker.opt_out(
            recipient,
            channels=["email", "sms"],
            topic_ids=[],
            source="one-click",
            evidence={"delivery_id": delivery, "campaign_id": campaign, "method": "one-click"},
        )
    finally:
        await tracker.close()
    out = tmp_path / "one.zip"
    args = argparse.Namespace(campaign=SLUG, contact="Asker@Example.com", out=str(out))
    assert await compliance_cmd.audit_export(args, settings) == 0
    rows, summary, _ = _read(out, SLUG)
    assert [r["email"] for r in rows] == ["asker@example.com"]
    optouts = json.loads(rows[0]["optouts"])
    assert {o["channel"] for o in optouts} == {"email", "sms"}
    assert {o["method"] for o in optouts} == {"one-click"}
    assert {o["processing_s"] for o in optouts} == {0.0}  # written before the answer
    assert rows[0]["consent_valid_at_send"] == "true"  # the opt-out came after the send
    assert rows[0]["consent_withdrawn_at"] != ""
    assert summary["optouts_from_these_messages"] == 2
    assert summary["unsubscribe_sla"]["max_processing_s"] == 0.0


async def test_an_erased_recipient_keeps_its_consent_and_hash_in_the_audit_but_no_message(
    stores: Stores, conn: asyncpg.Connection, tmp_path: Path, settings: Settings
) -> None:
    await _sent_campaign(stores, conn)
    privacy.erasure_of(
        await stores.compliance.contact_erase(
            "buyer@example.com",
            address_hash("buyer@example.com"),
            rule=privacy.ERASE_RULE,
            os_user=None,
            evidence_kept=privacy.EVIDENCE_KEPT,
        )
    )
    out = tmp_path / "after.zip"
    args = argparse.Namespace(campaign=SLUG, contact=None, out=str(out))
    assert await compliance_cmd.audit_export(args, settings) == 0
    rows, summary, bundle = _read(out, SLUG)
    erased = [r for r in rows if r["email"] == "(erased)"]
    assert len(erased) == 1
    row = erased[0]
    assert (row["consent_kind"], row["consent_valid_at_send"]) == ("implied_purchase", "true")
    assert json.loads(row["consent_evidence"]) == {"erased": True}  # the invoice number is gone
    assert (row["eml"], row["hash_verified"]) == ("", "erased")
    assert len(row["sha256"]) == 64
    assert summary["archived_messages_of_erased_recipients"] == 1
    assert summary["hashes_verified"] == 4
    assert summary["erased_recipients"] == 1
    assert len([n for n in bundle.namelist() if n.endswith(".eml")]) == 4


async def test_the_audit_command_names_a_campaign_or_contact_it_cannot_find(
    stores: Stores, tmp_path: Path, settings: Settings, printed: io.StringIO
) -> None:
    for campaign, contact in ((None, None), ("nope", None), (None, "ghost@example.com")):
        args = argparse.Namespace(campaign=campaign, contact=contact, out=str(tmp_path / "x"))
        assert await compliance_cmd.audit_export(args, settings) == 2
    text = printed.getvalue()
    assert "give --campaign, --contact or both" in text
    assert "no campaign 'nope'" in text
    assert "no contact ghost@example.com" in text
