"""Inbound mail about a transactional notice (issues #16 and #18): a DSN, a feedback report or a
mailto unsubscribe whose token or Message-ID names a notice acts on that notice, and a DSN
matched only by its recipient is not pinned on the person's older campaign delivery."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from email import message_from_bytes, policy
from pathlib import Path

import asyncpg
import pytest

from mailer.core.settings import Settings
from mailer.core.tokens import Purpose
from mailer.demo.stores import Stores
from mailer.transactional.enqueue import enqueue
from tests.cli_run import run_cli
from tests.inbound_setup import DOMAIN, Sent, deliver, inbound_serve, inbound_settings, processed
from tests.inbound_setup import sent_deliveries as sent
from tests.lane_setup import PARTS, lane_for, lane_settings, transactional_store
from tests.smtp_servers import smtp_server


@dataclass(frozen=True)
class Notice:
    """A notice as the sink received it: its id, address and the lane's own references."""

    sent: Sent
    bounce: str  # the VERP token of its envelope sender
    unsubscribe: str | None  # the token of its List-Unsubscribe mailto, if it has one

    def fill(self, name: str, **extra: str) -> bytes:
        tokens = {
            "{BOUNCE}": self.bounce,
            **({"{UNSUB}": self.unsubscribe} if self.unsubscribe else {}),
        }
        return self.sent.fill(name, **{**tokens, **extra})

    @property
    def id(self) -> int:
        return self.sent.delivery_id

    @property
    def email(self) -> str:
        return self.sent.email


async def _notice_after_campaign(stores: Stores, conn: asyncpg.Connection) -> tuple[Sent, Notice]:
    """A person's campaign delivery (sent a minute ago), then a notice the lane sends them now."""
    (campaign,) = await sent(stores, conn, 1)
    accepted = await enqueue(
        transactional_store(stores), template="parts_received", to=campaign.email, data=PARTS
    )
    assert accepted.accepted
    with smtp_server() as (port, sink):
        await lane_for(stores, lane_settings(port)).run(until_idle=True)
    (received,) = sink.messages
    original = message_from_bytes(received.data, policy=policy.default)
    verp = re.fullmatch(r"bounces\+(.+)@" + re.escape(DOMAIN), received.mail_from)
    assert verp is not None, received.mail_from
    mailto = re.search(r"unsubscribe\+([^@>]+)@", str(original["List-Unsubscribe"] or ""))
    notice_id = await conn.fetchval("SELECT id FROM transactional_messages")
    notice = Sent(notice_id, campaign.contact_id, 0, campaign.email, str(original["Message-ID"]))
    return campaign, Notice(notice, verp[1], None if mailto is None else mailto[1])


async def _ingested(settings: Settings, conn: asyncpg.Connection, rcpt: str, data: bytes) -> None:
    async with inbound_serve(inbound_settings(settings)) as service:
        await deliver(service.port, rcpt, data)
        await processed(conn, 1)


async def test_a_hard_bounce_of_a_notice_marks_the_notice_bounced_and_suppresses_the_address(
    stores: Stores, conn: asyncpg.Connection, settings: Settings
) -> None:
    campaign, notice = await _notice_after_campaign(stores, conn)
    dsn = notice.fill("postfix_hard", **{"dead@example.org": notice.email})
    await _ingested(settings, conn, f"bounces+{notice.bounce}@{DOMAIN}", dsn)
    row = await conn.fetchrow(
        "SELECT kind, delivery_id, transactional_id, attributed_by, id FROM inbound_messages"
    )
    assert row is not None
    assert (row["kind"], row["delivery_id"], row["transactional_id"], row["attributed_by"]) == (
        "dsn_hard",
        None,
        notice.id,
        "token",
    )
    assert (
        await conn.fetchval("SELECT status FROM transactional_messages WHERE id = $1", notice.id)
        == "bounced"
    )
    assert (
        await conn.fetchval("SELECT status FROM deliveries WHERE id = $1", campaign.delivery_id)
        == "sent"
    )
    assert await conn.fetchval("SELECT count(*) FROM bounces") == 0  # no campaign's bounce
    suppression = await conn.fetchrow(
        "SELECT scope, channel, reason, source, detail FROM suppressions"
    )
    assert suppression is not None
    assert (suppression["scope"], suppression["channel"], suppression["reason"]) == (
        "channel",
        "email",
        "hard_bounce",
    )
    assert json.loads(suppression["detail"])["transactional_id"] == notice.id
    assert json.loads(suppression["detail"])["inbound_id"] == row["id"]  # the DSN is the evidence
    assert json.loads(suppression["detail"])["status"] == "5.1.1"


async def test_a_dsn_matched_by_recipient_goes_to_the_latest_notice_not_an_older_campaign_delivery(
    stores: Stores, conn: asyncpg.Connection, settings: Settings
) -> None:
    campaign, notice = await _notice_after_campaign(stores, conn)
    # A relay that rewrote the envelope and dropped the original: only the address is left.
    dsn = notice.fill(
        "postfix_hard",
        **{"dead@example.org": notice.email, "{BOUNCE}": "x", "{MSGID}": "<lost@elsewhere>"},
    )
    await _ingested(settings, conn, f"postmaster@{DOMAIN}", dsn)
    row = await conn.fetchrow(
        "SELECT delivery_id, transactional_id, attributed_by FROM inbound_messages"
    )
    assert row is not None
    assert tuple(row) == (None, notice.id, "recipient")
    assert (
        await conn.fetchval("SELECT status FROM deliveries WHERE id = $1", campaign.delivery_id)
        == "sent"
    )
    assert (
        await conn.fetchval("SELECT status FROM transactional_messages WHERE id = $1", notice.id)
        == "bounced"
    )


async def test_a_complaint_about_a_notice_suppresses_the_address_and_withdraws_commercial_email(
    stores: Stores, conn: asyncpg.Connection, settings: Settings
) -> None:
    _, notice = await _notice_after_campaign(stores, conn)
    report = notice.fill("yahoo_arf_complaint", **{"reader@yahoo.example": notice.email})
    await _ingested(settings, conn, f"fbl@{DOMAIN}", report)
    row = await conn.fetchrow("SELECT id, kind, transactional_id FROM inbound_messages")
    assert row is not None
    assert (row["kind"], row["transactional_id"]) == ("complaint", notice.id)
    reasons = await conn.fetch("SELECT channel, reason, detail FROM suppressions ORDER BY 1, 2")
    complaint = [s for s in reasons if s["reason"] == "complaint"]
    assert [s["channel"] for s in complaint] == ["email"]
    assert json.loads(complaint[0]["detail"])["transactional_id"] == notice.id
    assert json.loads(complaint[0]["detail"])["inbound_id"] == row["id"]
    withdrawn = await conn.fetch(
        "SELECT channel, source, evidence FROM consents WHERE action = 'withdraw' ORDER BY channel"
    )
    assert [(w["channel"], w["source"]) for w in withdrawn] == [
        ("email", "complaint"),
        ("sms", "complaint"),
    ]
    assert json.loads(withdrawn[0]["evidence"])["inbound_id"] == row["id"]
    assert await conn.fetchval("SELECT count(*) FROM complaints") == 0  # no campaign to count
    assert (
        await conn.fetchval("SELECT status FROM transactional_messages WHERE id = $1", notice.id)
        == "sent"
    )


async def test_a_mailto_unsubscribe_from_a_notice_withdraws_commercial_email_as_one_click_does(
    stores: Stores, conn: asyncpg.Connection, settings: Settings
) -> None:
    _, notice = await _notice_after_campaign(stores, conn)
    # The notice's own mailto if it has one; else one signed for its id, as a client would use.
    token = notice.unsubscribe or notice.sent.token(Purpose.UNSUBSCRIBE)
    rcpt = f"unsubscribe+{token}@{DOMAIN}"
    await _ingested(settings, conn, rcpt, notice.fill("mailto_unsubscribe"))
    row = await conn.fetchrow(
        "SELECT id, kind, transactional_id, attributed_by FROM inbound_messages"
    )
    assert row is not None
    assert (row["kind"], row["transactional_id"], row["attributed_by"]) == (
        "unsubscribe",
        notice.id,
        "token",
    )
    # As the tracker's one-click for a notice (test_transactional_unsubscribe.py).
    suppressions = await conn.fetch("SELECT channel, reason FROM suppressions ORDER BY channel")
    assert [tuple(s) for s in suppressions] == [("email", "unsubscribe"), ("sms", "unsubscribe")]
    evidence = await conn.fetchval(
        "SELECT evidence FROM consents WHERE action = 'withdraw' AND channel = 'email'"
    )
    assert json.loads(evidence)["method"] == "mailto"
    assert json.loads(evidence)["inbound_id"] == row["id"]
    assert json.loads(evidence)["transactional_id"] == notice.id


async def test_a_persons_export_and_erasure_reach_the_mail_about_her_notices_even_from_an_alias(
    stores: Stores,
    conn: asyncpg.Connection,
    settings: Settings,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    _, notice = await _notice_after_campaign(stores, conn)
    token = notice.unsubscribe or notice.sent.token(Purpose.UNSUBSCRIBE)
    # Sent from an alias: her address is nowhere in it, only the token names her notice.
    alias = "marie.alias@example.net"
    message = notice.fill("mailto_unsubscribe", **{"reader@example.org": alias})
    async with inbound_serve(inbound_settings(settings)) as service:
        await deliver(service.port, f"unsubscribe+{token}@{DOMAIN}", message, mail_from=alias)
        await processed(conn, 1)
    # GDPR art. 15 first: her data export carries the mail about her notice.
    export = tmp_path / "export.json"
    code, out = await run_cli(
        monkeypatch, db_url, "contacts", "export", notice.email, "--out", str(export)
    )
    assert code == 0, out
    (exported,) = json.loads(export.read_text(encoding="utf-8"))["tables"]["inbound_messages"]
    assert (exported["kind"], exported["transactional_id"]) == ("unsubscribe", notice.id)
    code, out = await run_cli(monkeypatch, db_url, "contacts", "erase", notice.email, "--yes")
    assert code == 0, out
    row = await conn.fetchrow(
        "SELECT octet_length(raw) AS size, mail_from, transactional_id FROM inbound_messages"
    )
    assert row is not None
    assert (row["size"], row["mail_from"], row["transactional_id"]) == (0, None, notice.id)
