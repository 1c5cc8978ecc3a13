"""`make demo` in smoke mode: the same code path, fewer contacts, checked against the ledger."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from datetime import date
from email import message_from_bytes, policy
from pathlib import Path

import asyncpg
from rich.console import Console

from mailer.core.footer import format_date
from mailer.core.settings import load
from mailer.db import connect
from mailer.demo import relay
from mailer.demo import run as demo
from mailer.demo.readers import is_transactional
from mailer.report.figures import figures
from mailer.report.store import ReportStore


async def test_the_demo_mails_every_eligible_contact_once_and_nobody_else(
    db_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    base = load(environ={})
    settings = dataclasses.replace(base, database=dataclasses.replace(base.database, url=db_url))
    with (tmp_path / "demo.log").open("w") as log:
        assert await demo.run(settings, tmp_path, Console(file=log, width=120), contacts=300) == 0

    mailboxes = list((tmp_path / "runs").glob("*/mail"))
    assert len(mailboxes) == 1
    files = sorted(mailboxes[0].glob("*.eml"))
    with (tmp_path / "contacts.csv").open(encoding="utf-8", newline="") as fh:
        consent_dates = {row["email"]: row["consent_date"] for row in csv.DictReader(fh)}
    sent = {
        r["email"]
        for r in await conn.fetch(
            "SELECT c.email FROM deliveries d JOIN contacts c ON c.id = d.contact_id "
            "WHERE d.status = 'sent'"
        )
    }
    frozen = await conn.fetchval("SELECT count(*) FROM deliveries")
    eligible = await conn.fetchval("SELECT (audience_counts->>'eligible')::int FROM campaigns")
    assert frozen == eligible
    recipients = []
    notices = []
    for path in files:
        message = message_from_bytes(path.read_bytes(), policy=policy.default)
        if is_transactional(message):
            notices.append(message)
            continue
        recipients.append(str(message["To"]).rpartition("<")[2].rstrip(">"))
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert "/u/" in str(message["List-Unsubscribe"])
        text = message.get_body(("plain",))
        assert text is not None
        assert "2450, boulevard Laurier" in text.get_content()  # sender's postal address
        # The footer cites the consent date as the file gave it (a calendar date), not the
        # day before as America/Toronto saw its midnight UTC (issue 13, item 2).
        sentence = next(
            line
            for line in text.get_content().splitlines()
            if line.startswith(("You receive this email", "Vous recevez ce courriel"))
        )
        lang = "fr" if sentence.startswith("Vous") else "en"
        given = date.fromisoformat(consent_dates[recipients[-1]])
        assert re.findall(r"\d{1,2}(?:er)? [^\W\d]+ \d{4}", sentence) == [
            format_date(given, lang)
        ], sentence
    assert len(recipients) == len(set(recipients))  # exactly one message each
    # The "parts received" notices went out during the campaign through the transactional
    # lane, one to a person who unsubscribed from marketing: delivered, and the row says why.
    assert len(notices) == 3
    rows = await conn.fetch(
        "SELECT status, note FROM transactional_messages WHERE template = 'parts_received'"
        " ORDER BY id"
    )
    assert [r["status"] for r in rows] == ["sent"] * 3
    assert [r["note"] is not None for r in rows] == [False, False, True]
    assert "unsubscribed from this channel" in rows[2]["note"]
    # The demo's relay refused a few after accepting them; their DSNs came back through
    # inbound serve: exactly those are bounced (and suppressed), the soft ones still sent.
    hard = {r for r in recipients if (v := relay.verdict(r)) is not None and v[0][0] == "5"}
    bounced = {
        r["email"]
        for r in await conn.fetch(
            "SELECT c.email FROM deliveries d JOIN contacts c ON c.id = d.contact_id "
            "WHERE d.status = 'bounced'"
        )
    }
    assert hard
    assert bounced == hard
    assert set(recipients) == sent | bounced  # every row has its message, nobody else got one
    suppressed = await conn.fetchval(
        "SELECT count(*) FROM suppressions WHERE reason = 'hard_bounce' AND source = 'dsn'"
    )
    assert suppressed == len(hard)
    assert (
        await conn.fetchval("SELECT count(*) FROM inbound_messages WHERE kind = 'unsubscribe'") == 1
    )
    not_sent = await conn.fetchval(
        "SELECT count(*) FROM deliveries WHERE status NOT IN ('sent', 'bounced')"
    )
    assert not_sent == 0
    # Every open, click and scanner's HEAD the simulated readers made is one event (the
    # tracker flushed its buffer on shutdown); one-click unsubscribes are opt-outs, not events.
    (activity,) = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*/readers.json")]
    assert activity["failures"] == 0
    made = sum(
        n
        for hits in (activity["machines"], activity["people"])
        for kind, n in hits.items()
        if kind != "one-click unsubscribe"
    )
    assert made > 0
    assert await conn.fetchval("SELECT count(*) FROM events") == made
    # The report's numbers are the ledger's.
    async with connect(db_url) as pool:
        campaign_id = await conn.fetchval("SELECT id FROM campaigns")
        found = await figures(ReportStore(pool), campaign_id)
    assert found.adds_up
    assert found.outcomes["sent"] == len(sent)
    assert found.outcome_details["bounced"] == {"DSN 5.1.1": len(hard)}
    opens = await conn.fetchval("SELECT count(*) FROM events WHERE kind = 'open'")
    assert found.opens.human_events + found.opens.machine_events == opens
    assert list((tmp_path / "runs").glob("*/report.html"))
    # The sign-up form: four visitors, three confirmed by email (express grants citing the
    # form's text), one never did (still pending, until its request expires).
    grants = await conn.fetch(
        "SELECT evidence FROM consents WHERE source = 'Site web — infolettre' AND kind = 'express'"
    )
    assert len(grants) == 3
    assert all(json.loads(g["evidence"])["form"]["text_version"] == 1 for g in grants)
    assert await conn.fetchval("SELECT count(*) FROM signup_requests WHERE state = 'pending'") == 1
    assert len(list((tmp_path / "runs").glob("*/signup-mail/*.eml"))) == 4
    # The operator API: a key, a webhook endpoint, a contact upserted then opted out, and
    # the receiver verified the signed contact.unsubscribed; the console: login, two pages.
    said = " ".join((tmp_path / "demo.log").read_text(encoding="utf-8").split())
    assert "POST /api/v1/contacts → created 1, consents added 1" in said
    assert re.search(r"opt-out → changed True", said)
    assert re.search(
        r"webhook received and verified \(Standard Webhooks signature\): contact\.unsubscribed "
        r"for quote-\d+@example\.org \(contact \d+\), webhook-id \S+",
        said,
    ), said[-3000:]
    assert re.search(r"logged in as \S+: GET / → 200, GET /campaigns/\S+ → 200", said)
    assert "mailer console serve" in said
    # The demo's receiver is gone with its endpoint: later opt-outs queue nothing for it.
    assert await conn.fetchval("SELECT count(*) FROM webhook_endpoints") == 0
    assert await conn.fetchval("SELECT count(*) FROM webhook_deliveries") == 0
    assert [
        r["action"]
        for r in await conn.fetch(
            "SELECT action FROM operator_log WHERE actor_kind = 'api_key' ORDER BY id"
        )
    ] == ["webhook.add", "contacts.upsert", "contacts.opt_out"]
    assert await conn.fetchval("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL") == 0
