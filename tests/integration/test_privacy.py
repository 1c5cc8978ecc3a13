"""List hygiene, erasure and the data subject export, against a real Postgres, a real
send engine and the real tracker stores: what a purge or an erasure leaves behind."""

from __future__ import annotations

import argparse
import io
import ipaddress
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from mailer.campaigns import lifecycle
from mailer.commands import compliance as compliance_cmd
from mailer.compliance import privacy
from mailer.contacts import imports
from mailer.contacts.csvfile import Defaults
from mailer.core.addresses import address_hash
from mailer.core.settings import Settings
from mailer.demo.stores import Stores
from tests.engine_setup import (
    NOW,
    TEMPLATES,
    add_contacts,
    engine_for,
    sample_campaign,
    settings_for,
)
from tests.smtp_servers import Faults, smtp_server
from tracker.events import Event
from tracker.store import TrackerStore

OLD = NOW - timedelta(days=800)  # long before any 12-month cutoff
CUTOFF = privacy.inactivity_cutoff(NOW, 12)
RULE = privacy.purge_rule(12)


def _console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=200), out


async def _row(conn: asyncpg.Connection, sql: str, *args: Any) -> asyncpg.Record:
    row = await conn.fetchrow(sql, *args)
    assert row is not None, sql
    return row


async def _contact(
    conn: asyncpg.Connection,
    email: str,
    *,
    created: datetime = OLD,
    active: datetime | None = None,
    name: str | None = None,
) -> int:
    return int(
        await conn.fetchval(
            "INSERT INTO contacts (email, email_hash, name, last_activity_at, created_at) "
            "VALUES ($1, $2, $3, $4, $5) RETURNING id",
            email,
            address_hash(email),
            name,
            active,
            created,
        )
    )


async def _ledger(
    conn: asyncpg.Connection, contact: int, action: str, kind: str | None, at: datetime
) -> None:
    await conn.execute(
        "INSERT INTO consents (contact_id, channel, action, kind, source, obtained_at) "
        "VALUES ($1, 'email', $2, $3, 'test', $4)",
        contact,
        action,
        kind,
        at,
    )


async def _delivery(
    conn: asyncpg.Connection, campaign: int, contact: int, status: str = "sent"
) -> int:
    return int(
        await conn.fetchval(
            "INSERT INTO deliveries (campaign_id, contact_id, domain, status, sent_at) "
            "VALUES ($1, $2, 'example.com', $3, $4) RETURNING id",
            campaign,
            contact,
            status,
            OLD if status == "sent" else None,
        )
    )


async def _open(conn: asyncpg.Connection, delivery: int, at: datetime, machine: bool) -> None:
    await conn.execute(
        "INSERT INTO events (occurred_at, kind, delivery_id, campaign_id, machine) "
        "SELECT $1, 'open', id, campaign_id, $2 FROM deliveries WHERE id = $3",
        at,
        machine,
        delivery,
    )


PURGED = {
    "dormant@example.com",
    "lapsed@example.com",
    "recent-purchase@example.com",
    "withdrawn@example.com",
    "machine-opener@example.com",
}


async def _hygiene_population(stores: Stores, conn: asyncpg.Connection) -> None:
    """Ten live contacts; the five in PURGED are inactive for a year without express consent."""
    topic = await stores.contacts.topic_upsert("service", "Service")
    campaign = await stores.campaigns.campaign_insert_minimal("old-mailing", topic)
    await _contact(conn, "dormant@example.com", active=NOW - timedelta(days=700))
    lapsed = await _contact(conn, "lapsed@example.com")
    await _ledger(conn, lapsed, "grant", "implied_purchase", NOW - timedelta(days=1100))
    # Implied consent still valid (18 months of 24), but nothing done for a year: purged.
    recent = await _contact(conn, "recent-purchase@example.com")
    await _ledger(conn, recent, "grant", "implied_purchase", NOW - timedelta(days=540))
    express = await _contact(conn, "express@example.com")
    await _ledger(conn, express, "grant", "express", NOW - timedelta(days=1100))
    withdrawn = await _contact(conn, "withdrawn@example.com")
    await _ledger(conn, withdrawn, "grant", "express", NOW - timedelta(days=1100))
    await _ledger(conn, withdrawn, "withdraw", None, NOW - timedelta(days=700))
    await _contact(conn, "active@example.com", active=NOW - timedelta(days=30))
    clicker = await _contact(conn, "human-opener@example.com")
    await _open(conn, await _delivery(conn, campaign, clicker), NOW - timedelta(days=20), False)
    proxy = await _contact(conn, "machine-opener@example.com")
    await _open(conn, await _delivery(conn, campaign, proxy), NOW - timedelta(days=20), True)
    await _contact(conn, "newcomer@example.com", created=NOW - timedelta(days=3))
    in_flight = await _contact(conn, "in-flight@example.com")
    await _delivery(conn, campaign, in_flight, status="sending")


async def _erased_emails(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch("SELECT email FROM contacts WHERE erased_at IS NULL")
    live = {r["email"] for r in rows}
    return {
        "dormant@example.com",
        "lapsed@example.com",
        "recent-purchase@example.com",
        "express@example.com",
        "withdrawn@example.com",
        "active@example.com",
        "human-opener@example.com",
        "machine-opener@example.com",
        "newcomer@example.com",
        "in-flight@example.com",
    } - live


# ---------------------------------------------------------------- pure rules


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=1, max_value=600))
def test_periods_read_in_months_or_years(n: int) -> None:
    assert privacy.parse_months(f"{n}m") == n
    assert privacy.parse_months(f"{n} months") == n
    assert privacy.parse_months(str(n)) == n
    assert privacy.parse_months(f"{n}y") == 12 * n


@pytest.mark.parametrize("text", ["", "0m", "12d", "twelve", "-3m"])
def test_a_period_that_is_not_months_or_years_is_refused_by_name(text: str) -> None:
    with pytest.raises(ValueError, match="period"):
        privacy.parse_months(text)


def test_the_inactivity_cutoff_counts_calendar_months_back() -> None:
    at = datetime(2025, 3, 31, 12, tzinfo=UTC)
    assert privacy.inactivity_cutoff(at, 1) == datetime(2025, 2, 28, 12, tzinfo=UTC)
    assert privacy.inactivity_cutoff(at, 12) == datetime(2024, 3, 31, 12, tzinfo=UTC)


def test_the_sla_line_says_ok_only_without_sends_after_an_opt_out() -> None:
    sla = {"optouts": 3, "followed": 1, "held_back": 1, "violations": 0, "max_processing_s": 0.0}
    assert privacy.sla_line(sla).startswith("unsubscribe SLA OK")
    assert "max processing 0 s" in privacy.sla_line(sla)
    assert "VIOLATED (2 sent after)" in privacy.sla_line({**sla, "violations": 2})


# ---------------------------------------------------------------- hygiene


async def test_the_hygiene_report_counts_each_rule_and_the_purge_candidates(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    await _hygiene_population(stores, conn)
    counts = await stores.compliance.hygiene_report(CUTOFF, NOW, 5)
    assert counts["contacts"] == 10
    # The five purged, the express holder and the contact with a message in flight.
    assert counts["inactive"] == 7
    assert counts["without_express"] == 9
    assert counts["only_expired_implied"] == 1  # lapsed: a purchase three years ago
    assert counts["purge_candidates"] == len(PURGED)
    assert counts["in_flight"] == 1
    assert counts["erased"] == 0


async def test_a_purge_erases_exactly_the_contacts_its_dry_run_counted(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    await _hygiene_population(stores, conn)
    predicted = await stores.compliance.hygiene_candidate_count(CUTOFF, NOW)
    done = privacy.erasure_of(
        await stores.compliance.hygiene_purge(
            CUTOFF, NOW, rule=RULE, os_user="tester", evidence_kept=privacy.EVIDENCE_KEPT
        )
    )
    assert predicted == done.contacts == len(PURGED)
    assert await _erased_emails(conn) == PURGED
    assert await stores.compliance.hygiene_candidate_count(CUTOFF, NOW) == 0
    log = await _row(conn, "SELECT * FROM privacy_log")
    assert (log["action"], log["rule"], log["contacts"], log["os_user"]) == (
        "purge",
        RULE,
        len(PURGED),
        "tester",
    )
    assert log["db_user"]
    assert log["performed_at"] is not None
    assert json.loads(log["details"])["suppressions"] == len(PURGED)


async def test_the_purge_command_only_counts_unless_told_yes(
    stores: Stores, conn: asyncpg.Connection, settings: Settings, printed: io.StringIO
) -> None:
    await _hygiene_population(stores, conn)
    args = argparse.Namespace(inactive="12m", dry_run=False, yes=False)
    assert await compliance_cmd.hygiene_purge(args, settings) == 0
    assert f"dry run: {len(PURGED)} contact(s) would be erased" in printed.getvalue()
    assert await _erased_emails(conn) == set()
    assert (
        await compliance_cmd.hygiene_purge(
            argparse.Namespace(**{**vars(args), "dry_run": True, "yes": True}), settings
        )
        == 0
    )
    assert await _erased_emails(conn) == set()  # --dry-run wins over --yes
    assert (
        await compliance_cmd.hygiene_purge(
            argparse.Namespace(**{**vars(args), "yes": True}), settings
        )
        == 0
    )
    assert await _erased_emails(conn) == PURGED
    assert f"{len(PURGED)} contact(s) anonymised" in printed.getvalue()


async def test_purged_addresses_imported_again_are_suppressed_and_left_out_of_the_audience(
    stores: Stores, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await _hygiene_population(stores, conn)
    await stores.compliance.hygiene_purge(
        CUTOFF, NOW, rule=RULE, os_user=None, evidence_kept=privacy.EVIDENCE_KEPT
    )
    csv_file = tmp_path / "again.csv"
    csv_file.write_text(
        "email,name,last_activity\n"
        + "".join(f"{e.upper()},Someone,{NOW.date()}\n" for e in sorted(PURGED))
        + f"stranger@example.com,New Person,{NOW.date()}\n",
        encoding="utf-8",
    )
    outcome = await imports.import_contacts(
        stores.contacts,
        csv_file,
        Defaults(consent="express", source="trade show", consent_date=str(NOW.date())),
        default_locale="en",
        skip_invalid=False,
    )
    assert outcome.result.contacts_created == len(PURGED) + 1
    assert outcome.result.suppressed == len(PURGED)  # the operator is told at import
    topic = await stores.contacts.topic_upsert("service", "Service")
    await stores.campaigns.campaign_insert_minimal("after-purge", topic)
    spec = await stores.campaigns.campaign_spec("after-purge")
    assert spec is not None
    emails = {
        r["id"]: r["email"]
        for r in await conn.fetch("SELECT id, email FROM contacts WHERE erased_at IS NULL")
    }
    verdicts = {
        emails[row.contact_id]: row.reason
        for row in await stores.campaigns.audience(spec, NOW + timedelta(seconds=1))
        if row.contact_id in emails
    }
    assert {verdicts[e] for e in PURGED} == {"suppressed_global"}
    assert verdicts["stranger@example.com"] is None


# ---------------------------------------------------------------- one person's story

VICTIM = "jeanne.dupont@lafleur.example"
VICTIM_NAME = "Jeanne Dupont-Lafleur"
AGENT = "Mozilla/5.0 (iPhone of Jeanne)"
IP = "198.51.100.0/24"
REASON = "Jeanne Dupont-Lafleur moved away"


@dataclass(frozen=True)
class Story:
    contact: int
    campaign: int
    deliveries: list[int]


async def _story(stores: Stores, conn: asyncpg.Connection, db_url: str) -> Story:
    """A contact who got a message, opened it, hard-bounced on another, opted out with a
    reason, and has a third campaign queued for her."""
    attributes = json.dumps({"vehicle": "Honda Civic", "next_service": "2026-12-01"})
    contact = int(
        await conn.fetchval(
            "INSERT INTO contacts (email, email_hash, name, locale, attributes, last_activity_at) "
            "VALUES ($1, $2, $3, 'fr', $4, now()) RETURNING id",
            VICTIM,
            address_hash(VICTIM),
            VICTIM_NAME,
            attributes,
        )
    )
    await add_contacts(conn, 3)  # express consent for every contact, her included
    campaign = await sample_campaign(stores)
    await lifecycle.create(
        stores.campaigns, TEMPLATES / "service_reminder.toml", TEMPLATES, slug="later"
    )
    await lifecycle.launch(stores.campaigns, "later", NOW)
    await lifecycle.transition(stores.campaigns, "later", "paused")
    with smtp_server() as (port, _sink):
        await engine_for(stores, settings_for(port)).run(until_idle=True)
    await lifecycle.create(
        stores.campaigns, TEMPLATES / "service_reminder.toml", TEMPLATES, slug="bounce"
    )
    await lifecycle.launch(stores.campaigns, "bounce", NOW)
    faults = Faults(rcpt={VICTIM: f"550 5.1.1 <{VICTIM}>: Recipient address rejected"})
    with smtp_server(faults) as (port, _sink):
        await engine_for(stores, settings_for(port)).run(until_idle=True)
    await conn.execute(
        "INSERT INTO contact_topics (contact_id, topic_id, subscribed, source) "
        "SELECT $1, id, true, 'import 1 line 2' FROM topics",
        contact,
    )
    deliveries = [
        r["id"]
        for r in await conn.fetch(
            "SELECT id FROM deliveries WHERE contact_id = $1 ORDER BY id", contact
        )
    ]
    sent = await conn.fetchval(
        "SELECT id FROM deliveries WHERE contact_id = $1 AND campaign_id = $2", contact, campaign
    )
    tracker = TrackerStore(db_url)
    await tracker.start()
    try:
        await tracker.write_events([Event(time.time(), "open", sent, None, False, AGENT, IP)])
        recipient = await tracker.recipient(sent)
        assert recipient is not None
        evidence = {
            "delivery_id": sent,
            "campaign_id": campaign,
            "ip_prefix": IP,
            "user_agent": AGENT,
            "method": "form",
            "reason": REASON,
        }
        assert await tracker.opt_out(
            recipient,
            channels=["email", "sms"],
            topic_ids=[],
            source="unsubscribe page",
            evidence=evidence,
        )
    finally:
        await tracker.close()
    return Story(contact, campaign, deliveries)


async def _text_columns(conn: asyncpg.Connection) -> list[tuple[str, str]]:
    rows = await conn.fetch(
        "SELECT c.table_name, c.column_name FROM information_schema.columns c "
        "JOIN information_schema.tables t USING (table_schema, table_name) "
        "WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE' "
        "AND c.data_type IN ('text', 'character varying', 'jsonb', 'json', 'cidr', 'inet', "
        "'ARRAY') ORDER BY 1, 2"
    )
    return [(r["table_name"], r["column_name"]) for r in rows]


async def _where_found(conn: asyncpg.Connection, needle: str) -> list[str]:
    found = []
    for table, column in await _text_columns(conn):
        hits = await conn.fetchval(
            # Identifiers come from information_schema, not from input.
            f'SELECT count(*) FROM "{table}" WHERE "{column}"::text ILIKE $1',  # noqa: S608
            f"%{needle}%",
        )
        if hits:
            found.append(f"{table}.{column}")
    return found


async def _row_counts(conn: asyncpg.Connection) -> dict[str, int]:
    tables = await conn.fetch(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
    )
    return {
        t["table_name"]: int(await conn.fetchval(f'SELECT count(*) FROM "{t["table_name"]}"'))  # noqa: S608
        for t in tables
    }


async def _report_totals(conn: asyncpg.Connection, campaign: int) -> list[Any]:
    """What a campaign report counts: outcomes, opens and clicks, opt-outs by whether a
    reason was given (mailer/sql/report.sql reads the same columns)."""
    queries = (
        "SELECT status, count(*) FROM deliveries WHERE campaign_id = $1 GROUP BY 1 ORDER BY 1",
        "SELECT kind, machine, count(*), count(DISTINCT delivery_id) FROM events "
        "WHERE campaign_id = $1 GROUP BY 1, 2 ORDER BY 1, 2",
        "SELECT evidence ->> 'method', evidence ->> 'reason' IS NOT NULL, "
        "count(DISTINCT contact_id) FROM consents WHERE action = 'withdraw' "
        "AND evidence ->> 'campaign_id' = $1::bigint::text GROUP BY 1, 2 ORDER BY 1, 2",
    )
    return [[tuple(r) for r in await conn.fetch(q, campaign)] for q in queries]


async def test_erasure_leaves_no_trace_of_the_address_the_name_or_the_device_in_any_table(
    stores: Stores, conn: asyncpg.Connection, db_url: str, settings: Settings, printed: io.StringIO
) -> None:
    story = await _story(stores, conn, db_url)
    needles = (VICTIM, VICTIM_NAME, "Dupont", AGENT, "198.51.100", "moved away")
    for needle in needles:
        assert await _where_found(conn, needle), needle  # the story put each one somewhere
    before_rows = await _row_counts(conn)
    before_report = await _report_totals(conn, story.campaign)
    args = argparse.Namespace(email=VICTIM.upper(), yes=True)
    assert await compliance_cmd.contacts_erase(args, settings) == 0
    for needle in needles:
        assert await _where_found(conn, needle) == [], needle
    # Rows stay, so report totals stay: only the suppression and the log rows are new
    # (the privacy log's, and the operator log's line for the command).
    after_rows = await _row_counts(conn)
    for new in ("suppressions", "privacy_log", "operator_log"):
        assert after_rows[new] == before_rows[new] + 1, new
        del after_rows[new], before_rows[new]
    assert after_rows == before_rows
    assert await _report_totals(conn, story.campaign) == before_report
    contact = await _row(conn, "SELECT * FROM contacts WHERE id = $1", story.contact)
    assert contact["erased_at"] is not None
    assert contact["email_hash"] is None
    assert contact["attributes"] == "{}"
    # Her queued message in the paused campaign can never go; the sent one keeps its hash.
    states = {
        r["status"]: r["skip_reason"]
        for r in await conn.fetch(
            "SELECT status, skip_reason FROM deliveries WHERE contact_id = $1", story.contact
        )
    }
    assert states == {"sent": None, "bounced": None, "skipped": "erased"}
    archive = await _row(
        conn,
        "SELECT a.* FROM archive a JOIN deliveries d ON d.id = a.delivery_id "
        "WHERE d.contact_id = $1",
        story.contact,
    )
    assert len(archive["sha256"]) == 32
    assert set(json.loads(archive["render_inputs"])) == {"erased_at", "message_id", "date"}
    kept = await _row(
        conn,
        "SELECT scope, reason FROM suppressions WHERE email_hash = $1 AND reason = 'erasure'",
        address_hash(VICTIM),
    )
    assert tuple(kept) == ("global", "erasure")
    assert "logged as privacy_log #" in printed.getvalue()


async def test_erasure_waits_while_a_message_to_the_contact_is_in_flight(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    topic = await stores.contacts.topic_upsert("service", "Service")
    campaign = await stores.campaigns.campaign_insert_minimal("busy", topic)
    contact = await _contact(conn, "busy@example.com", name="Busy Person")
    await _delivery(conn, campaign, contact, status="sending")
    result = await stores.compliance.contact_erase(
        "busy@example.com",
        address_hash("busy@example.com"),
        rule=privacy.ERASE_RULE,
        os_user=None,
        evidence_kept=privacy.EVIDENCE_KEPT,
    )
    with pytest.raises(privacy.ErasureBusy, match="nothing was erased"):
        privacy.erasure_of(result)
    assert await conn.fetchval("SELECT name FROM contacts WHERE id = $1", contact) == "Busy Person"
    assert await conn.fetchval("SELECT count(*) FROM suppressions") == 0
    assert await conn.fetchval("SELECT count(*) FROM privacy_log") == 0


async def test_erasing_an_address_we_do_not_hold_still_suppresses_it_and_logs_the_request(
    stores: Stores, conn: asyncpg.Connection, settings: Settings
) -> None:
    assert (
        await compliance_cmd.contacts_erase(
            argparse.Namespace(email="nobody@example.com", yes=True), settings
        )
        == 0
    )
    assert (
        await conn.fetchval(
            "SELECT reason FROM suppressions WHERE email_hash = $1",
            address_hash("nobody@example.com"),
        )
        == "erasure"
    )
    log = await _row(conn, "SELECT action, contacts, subject_hash FROM privacy_log")
    assert (log["action"], log["contacts"]) == ("erase", 0)
    assert bytes(log["subject_hash"]) == address_hash("nobody@example.com")


async def test_erasure_without_yes_changes_nothing(
    stores: Stores, conn: asyncpg.Connection, printed: io.StringIO, settings: Settings
) -> None:
    await _contact(conn, "keep@example.com", name="Kept")
    assert (
        await compliance_cmd.contacts_erase(
            argparse.Namespace(email="keep@example.com", yes=False), settings
        )
        == 1
    )
    assert "--yes" in printed.getvalue()
    assert await conn.fetchval("SELECT name FROM contacts") == "Kept"


async def test_the_privacy_log_refuses_updates_and_deletes(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    await stores.compliance.contact_erase(
        "x@example.com",
        address_hash("x@example.com"),
        rule="r",
        os_user=None,
        evidence_kept=(),
    )
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await conn.execute("UPDATE privacy_log SET contacts = 0")
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await conn.execute("DELETE FROM privacy_log")


# ---------------------------------------------------------------- export


def _same(exported: Any, stored: Any) -> bool:
    """A value of the JSON export against the value asyncpg reads from the table."""
    if stored is None or exported is None:
        return stored is exported
    if isinstance(stored, datetime):
        return datetime.fromisoformat(exported) == stored
    if isinstance(stored, bytes):
        return bool(exported == "\\x" + stored.hex())
    if isinstance(stored, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return bool(exported == str(stored))
    if isinstance(stored, str) and isinstance(exported, dict | list):
        return bool(json.loads(stored) == exported)  # jsonb arrives as text
    return bool(str(exported) == str(stored))


EXPORTED_TABLES = {
    "contacts": ("SELECT * FROM contacts WHERE id = $1", "id"),
    "consents": ("SELECT * FROM consents WHERE contact_id = $1", "id"),
    "contact_topics": ("SELECT * FROM contact_topics WHERE contact_id = $1", "topic_id"),
    "contact_channels": ("SELECT * FROM contact_channels WHERE contact_id = $1", "channel"),
    # Keyed by the address hash ($1 is the hash here): suppressions outlive the contact.
    "suppressions": ("SELECT * FROM suppressions WHERE email_hash = $1", "id"),
    "deliveries": ("SELECT * FROM deliveries WHERE contact_id = $1", "id"),
    "events": (
        "SELECT * FROM events WHERE delivery_id IN "
        "(SELECT id FROM deliveries WHERE contact_id = $1)",
        "occurred_at",
    ),
    "archive": (
        "SELECT * FROM archive WHERE delivery_id IN "
        "(SELECT id FROM deliveries WHERE contact_id = $1)",
        "delivery_id",
    ),
}


async def test_the_export_round_trips_every_row_and_column_held_about_the_person(
    stores: Stores, conn: asyncpg.Connection, db_url: str, tmp_path: Path, settings: Settings
) -> None:
    story = await _story(stores, conn, db_url)
    out = tmp_path / "jeanne.json"
    args = argparse.Namespace(email=VICTIM, out=str(out))
    assert await compliance_cmd.contacts_export(args, settings) == 0
    document = json.loads(out.read_text(encoding="utf-8"))
    assert document["subject"] == VICTIM
    assert document["held"]
    tables = document["tables"]
    for table, (sql, key) in EXPORTED_TABLES.items():
        key_value = address_hash(VICTIM) if table == "suppressions" else story.contact
        stored = await conn.fetch(sql, key_value)
        exported = tables[table]
        assert stored, f"the story put nothing in {table}"
        assert len(exported) == len(stored), table
        columns = set(stored[0].keys())
        for row in exported:
            assert set(row) == columns, table
        ordered = sorted(stored, key=lambda r: r[key])
        by_key = sorted(exported, key=lambda r: _sort_key(r[key]))
        for got, want in zip(by_key, ordered, strict=True):
            for column in columns:
                assert _same(got[column], want[column]), (table, column, got[column])
    assert {c["slug"] for c in tables["campaigns"]} == {
        "service-reminder-2024-10",
        "later",
        "bounce",
    }


def _sort_key(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return value
    return value


async def test_the_export_after_erasure_shows_only_the_suppression_and_the_erasure(
    stores: Stores, conn: asyncpg.Connection, db_url: str
) -> None:
    await _story(stores, conn, db_url)
    await stores.compliance.contact_erase(
        VICTIM,
        address_hash(VICTIM),
        rule=privacy.ERASE_RULE,
        os_user=None,
        evidence_kept=privacy.EVIDENCE_KEPT,
    )
    tables = await stores.compliance.contact_export(VICTIM, address_hash(VICTIM))
    assert tables["contacts"] == []
    assert tables["deliveries"] == []
    assert "erasure" in {s["reason"] for s in tables["suppressions"]}
    assert [g["action"] for g in tables["privacy_log"]] == ["erase"]


# ---------------------------------------------------------------- unsubscribe SLA


async def test_an_opt_out_holds_back_the_next_send_and_a_send_after_it_is_a_violation(
    stores: Stores, conn: asyncpg.Connection, db_url: str, settings: Settings, printed: io.StringIO
) -> None:
    await add_contacts(conn, 3)
    first = await sample_campaign(stores)
    with smtp_server() as (port, _sink):
        await engine_for(stores, settings_for(port)).run(until_idle=True)
    await lifecycle.create(
        stores.campaigns, TEMPLATES / "service_reminder.toml", TEMPLATES, slug="next"
    )
    second = (await lifecycle.launch(stores.campaigns, "next", NOW)).campaign_id
    delivery = await conn.fetchval(
        "SELECT d.id FROM deliveries d JOIN contacts c ON c.id = d.contact_id "
        "WHERE c.email = 'person0@example.com' AND d.campaign_id = $1",
        first,
    )
    tracker = TrackerStore(db_url)
    await tracker.start()
    try:
        recipient = await tracker.recipient(delivery)
        assert recipient is not None
        await tracker.opt_out(
            recipient,
            channels=["email"],
            topic_ids=[],
            source="one-click",
            evidence={"delivery_id": delivery, "campaign_id": first, "method": "one-click"},
        )
    finally:
        await tracker.close()
    with smtp_server() as (port, sink):
        await engine_for(stores, settings_for(port)).run(until_idle=True)
    assert "person0@example.com" not in sink.recipients
    sla = await stores.compliance.unsubscribe_sla(None)
    assert (sla["optouts"], sla["followed"], sla["held_back"], sla["violations"]) == (1, 1, 1, 0)
    assert sla["max_processing_s"] == 0.0
    assert await stores.compliance.unsubscribe_sla(second) == sla
    # A message that went out after the opt-out (a broken sender) is caught.
    await conn.execute(
        "UPDATE deliveries d SET status = 'sent', sent_at = now(), skip_reason = NULL "
        "FROM contacts c WHERE c.id = d.contact_id AND c.email = 'person0@example.com' "
        "AND d.campaign_id = $1",
        second,
    )
    broken = await stores.compliance.unsubscribe_sla(None)
    assert broken["violations"] == 1
    assert len(broken["violating"]) == 1
    assert "VIOLATED" in privacy.sla_line(broken)
    args = argparse.Namespace(inactive="12m", unengaged=5)
    assert await compliance_cmd.hygiene_report(args, settings) == 0
    assert "unsubscribe SLA VIOLATED (1 sent after)" in printed.getvalue()


# ---------------------------------------------------------------- CLI wiring


def test_the_commands_register_on_the_cli_parser_with_their_handlers() -> None:
    parser = argparse.ArgumentParser(prog="mailer")
    sub = parser.add_subparsers(dest="command", required=True)
    contacts = sub.add_parser("contacts").add_subparsers(dest="c", required=True)
    compliance_cmd.register(sub, contacts)
    purge = parser.parse_args(["hygiene", "purge", "--inactive", "18m", "--yes"])
    assert (purge.handler, purge.inactive, purge.yes, purge.dry_run) == (
        compliance_cmd.hygiene_purge,
        "18m",
        True,
        False,
    )
    report = parser.parse_args(["hygiene", "report"])
    assert (report.handler, report.inactive, report.unengaged) == (
        compliance_cmd.hygiene_report,
        "12m",
        5,
    )
    erase = parser.parse_args(["contacts", "erase", "a@example.com"])
    assert (erase.handler, erase.yes) == (compliance_cmd.contacts_erase, False)
    export = parser.parse_args(["contacts", "export", "a@example.com", "--out", "a.json"])
    assert (export.handler, export.out) == (compliance_cmd.contacts_export, "a.json")
    bundle = parser.parse_args(["audit", "export", "--campaign", "c", "--contact", "a@b.example"])
    assert bundle.handler.__name__ == "audit_export"
    assert (bundle.campaign, bundle.contact, bundle.out) == ("c", "a@b.example", None)
