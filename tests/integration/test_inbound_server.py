"""`mailer inbound serve` over real SMTP on real Postgres: who it accepts, what it stores
before answering, and what each kind of message does to the ledgers."""

from __future__ import annotations

import json

import aiosmtplib
import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from mailer.core.addresses import address_hash
from mailer.core.settings import Settings
from mailer.core.tokens import Purpose
from mailer.demo.stores import Stores
from tests.inbound_setup import DOMAIN, deliver, inbound_serve, inbound_settings, processed
from tests.inbound_setup import sent_deliveries as sent
from tests.integration.test_tracker_app import gmail_one_click  # the request Gmail sends
from tests.smtp_servers import wait_until
from tracker.app import create_app


async def test_a_dsn_to_the_verp_address_is_stored_then_bounces_and_suppresses_its_delivery(
    stores: Stores, conn: asyncpg.Connection, settings: Settings
) -> None:
    first, other = await sent(stores, conn, 2)
    async with inbound_serve(inbound_settings(settings)) as service:
        reply = await deliver(service.port, first.verp, first.fill("postfix_hard"))
        assert reply.startswith("2.0.0 Stored as ")
        await processed(conn, 1)
        assert service.metrics.messages.labels("dsn_hard")._value.get() == 1
    row = await conn.fetchrow("SELECT * FROM inbound_messages")
    assert row is not None
    assert (row["kind"], row["delivery_id"], row["attributed_by"]) == (
        "dsn_hard",
        first.delivery_id,
        "token",
    )
    assert row["rcpt_to"] == [first.verp]
    assert b"User unknown in virtual" in row["raw"]
    statuses = {r["id"]: r["status"] for r in await conn.fetch("SELECT id, status FROM deliveries")}
    assert statuses == {first.delivery_id: "bounced", other.delivery_id: "sent"}
    suppression = await conn.fetchrow("SELECT * FROM suppressions")
    assert suppression is not None
    assert suppression["email_hash"] == address_hash(first.email)
    assert (suppression["reason"], suppression["channel"], suppression["source"]) == (
        "hard_bounce",
        "email",
        "dsn",
    )
    assert json.loads(suppression["detail"])["inbound_id"] == row["id"]
    assert json.loads(suppression["detail"])["status"] == "5.1.1"
    bounce = await conn.fetchrow("SELECT * FROM bounces")
    assert bounce is not None
    assert bounce["hard"]
    assert bounce["diagnostic"].startswith("smtp; 550 5.1.1")


async def test_rcpt_other_than_our_tokens_and_mailboxes_is_refused_and_forgeries_counted(
    stores: Stores, conn: asyncpg.Connection, settings: Settings
) -> None:
    (first,) = await sent(stores, conn, 1)
    forged = first.verp.replace("bounces+", "bounces+A", 1)
    async with inbound_serve(inbound_settings(settings)) as service:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=service.port) as client:
            await client.mail("")
            for address in (
                "someone@example.com",
                f"info@{DOMAIN}",
                forged,
                f"unsubscribe+nottoken@{DOMAIN}",
            ):
                with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
                    await client.rcpt(address)
                assert refused.value.code == 550
            for address in (f"postmaster@{DOMAIN}", f"Abuse@{DOMAIN}", first.verp, first.mailto):
                code, _ = await client.rcpt(address)
                assert code == 250
        rejected = service.metrics.rejected
        assert rejected.labels("bad_token")._value.get() == 2
        assert rejected.labels("unknown_recipient")._value.get() == 2
        assert service.metrics.forged_tokens.labels("rcpt")._value.get() == 2
    assert await conn.fetchval("SELECT count(*) FROM inbound_messages") == 0


async def test_a_50_mb_message_is_refused_at_data_and_nothing_is_stored(
    stores: Stores, conn: asyncpg.Connection, settings: Settings
) -> None:
    (first,) = await sent(stores, conn, 1)
    big = first.fill("postfix_hard") + (b"x" * 998 + b"\r\n") * 50_000
    async with (
        inbound_serve(inbound_settings(settings)) as service,
        aiosmtplib.SMTP(hostname="127.0.0.1", port=service.port) as client,
    ):
        await client.ehlo()
        await client.mail("")  # no SIZE= declared: only DATA can refuse it
        await client.rcpt(first.verp)
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await client.data(big)
        assert refused.value.code == 552
    assert await conn.fetchval("SELECT count(*) FROM inbound_messages") == 0


async def test_the_same_message_twice_is_one_row_with_its_effects_once(
    stores: Stores, conn: asyncpg.Connection, settings: Settings
) -> None:
    (first,) = await sent(stores, conn, 1)
    async with inbound_serve(inbound_settings(settings)) as service:
        data = first.fill("gmail_mailbox_full")
        one = await deliver(service.port, first.verp, data)
        two = await deliver(service.port, first.verp, data)  # a relay retrying after a lost 250
        assert one == two
        await processed(conn, 1)
        assert service.metrics.received.labels("smtp", "duplicate")._value.get() == 1
    assert await conn.fetchval("SELECT count(*) FROM inbound_messages") == 1
    assert await conn.fetchval("SELECT count(*) FROM bounces WHERE NOT hard") == 1


async def test_a_mailto_unsubscribe_writes_exactly_the_rows_of_a_one_click(
    stores: Stores, conn: asyncpg.Connection, settings: Settings
) -> None:
    mailto, clicked = await sent(stores, conn, 2)
    # The tracker's one-click for `clicked`, through the same shared operation.

    app = create_app(settings)
    async with TestClient(TestServer(app)) as client:
        token = clicked.token(Purpose.UNSUBSCRIBE)
        response = await client.post(f"/u/{token}", **gmail_one_click())
        assert response.status == 200
    async with inbound_serve(inbound_settings(settings)) as service:
        await deliver(
            service.port, mailto.mailto, mailto.fill("mailto_unsubscribe"), mail_from=mailto.email
        )
        await processed(conn, 1)
        counted = service.metrics.optouts.optouts.labels("digital", "mailto", "recorded")
        assert counted._value.get() == 1

    async def rows(contact: int, email: str) -> tuple[tuple[tuple[object, ...], ...], ...]:
        ledger = await conn.fetch(
            "SELECT channel, action, kind, topic_id FROM consents "
            "WHERE contact_id = $1 AND action = 'withdraw' ORDER BY channel",
            contact,
        )
        suppressions = await conn.fetch(
            "SELECT scope, channel, reason FROM suppressions WHERE email_hash = $1 "
            "ORDER BY channel",
            address_hash(email),
        )
        switches = await conn.fetch(
            "SELECT channel, enabled FROM contact_channels WHERE contact_id = $1 ORDER BY 1",
            contact,
        )
        return (
            tuple(map(tuple, ledger)),
            tuple(map(tuple, suppressions)),
            tuple(map(tuple, switches)),
        )

    assert await rows(mailto.contact_id, mailto.email) == await rows(
        clicked.contact_id, clicked.email
    )
    ledger, _, _ = await rows(mailto.contact_id, mailto.email)
    assert [r[0] for r in ledger] == ["email", "sms"]  # spread to every digital channel
    evidence = await conn.fetchval(
        "SELECT evidence FROM consents WHERE contact_id = $1 AND action = 'withdraw' LIMIT 1",
        mailto.contact_id,
    )
    assert json.loads(evidence)["method"] == "mailto"
    assert json.loads(evidence)["delivery_id"] == mailto.delivery_id


async def test_a_complaint_withdraws_every_digital_channel_and_suppresses_as_complaint(
    stores: Stores, conn: asyncpg.Connection, settings: Settings
) -> None:
    (first,) = await sent(stores, conn, 1)
    async with inbound_serve(inbound_settings(settings)) as service:
        await deliver(
            service.port,
            f"fbl@{DOMAIN}",
            first.fill("yahoo_arf_complaint"),
            mail_from="feedbackloop@yahoo.example",
        )
        await processed(conn, 1)
    reasons = await conn.fetch(
        "SELECT channel, reason FROM suppressions WHERE email_hash = $1 ORDER BY 2, 1",
        address_hash(first.email),
    )
    assert [tuple(r) for r in reasons] == [
        ("email", "complaint"),
        ("email", "unsubscribe"),
        ("sms", "unsubscribe"),
    ]
    channels = await conn.fetch(
        "SELECT channel FROM consents WHERE contact_id = $1 AND action = 'withdraw'",
        first.contact_id,
    )
    assert sorted(r["channel"] for r in channels) == ["email", "sms"]
    assert await conn.fetchval("SELECT count(*) FROM complaints") == 1


async def test_a_complaint_for_an_erased_contact_still_suppresses_the_hashed_address(
    stores: Stores, conn: asyncpg.Connection, settings: Settings
) -> None:
    (first,) = await sent(stores, conn, 1)
    await conn.execute(
        "UPDATE contacts SET email = NULL, email_hash = NULL, name = NULL, erased_at = now() "
        "WHERE id = $1",
        first.contact_id,
    )
    data = first.fill("yahoo_arf_complaint").replace(
        b"Original-Rcpt-To: reader@yahoo.example", f"Original-Rcpt-To: {first.email}".encode()
    )
    async with inbound_serve(inbound_settings(settings)) as service:
        await deliver(service.port, f"fbl@{DOMAIN}", data)
        await processed(conn, 1)
    reasons = await conn.fetch(
        "SELECT reason FROM suppressions WHERE email_hash = $1", address_hash(first.email)
    )
    assert [r["reason"] for r in reasons] == ["complaint"]
    assert await conn.fetchval("SELECT count(*) FROM consents WHERE action = 'withdraw'") == 0


async def test_a_dsn_for_an_unknown_delivery_is_kept_unmatched_and_changes_nothing(
    stores: Stores, conn: asyncpg.Connection, settings: Settings
) -> None:
    (first,) = await sent(stores, conn, 1)
    stranger = first.fill("postfix_headers_only_to_postmaster")  # gone@example.com: no contact
    async with inbound_serve(inbound_settings(settings)) as service:
        await deliver(service.port, f"postmaster@{DOMAIN}", stranger)
        await deliver(service.port, f"postmaster@{DOMAIN}", first.fill("malformed_mime"))
        await processed(conn, 2)
        # Raised by the processor right after its commit, which the query above may beat.
        await wait_until(lambda: service.metrics.unmatched_backlog._value.get() == 2, 10)
    kinds = await conn.fetch("SELECT kind, detail FROM inbound_messages ORDER BY id")
    assert [r["kind"] for r in kinds] == ["unmatched", "unmatched"]
    assert json.loads(kinds[0]["detail"])["classified_as"] == "dsn_hard"
    assert await conn.fetchval("SELECT count(*) FROM suppressions") == 0
    assert await conn.fetchval("SELECT status FROM deliveries") == "sent"


async def test_three_soft_bounces_in_thirty_days_suppress_and_a_success_resets_the_count(
    stores: Stores, conn: asyncpg.Connection, settings: Settings
) -> None:
    (first,) = await sent(stores, conn, 1)
    campaign = first.campaign_id
    # Three more deliveries to the same contact, sent one after the other (other campaigns).
    ids = []
    for days_ago in (3, 2, 1):
        ids.append(
            await conn.fetchval(
                "INSERT INTO deliveries (campaign_id, contact_id, status, domain, sent_at, "
                "message_id) VALUES ($1 + 1000 + $3, $2, 'sent', 'example.com', "
                "now() - make_interval(days => $3), '<x>') RETURNING id",
                campaign,
                first.contact_id,
                days_ago,
            )
        )
    oldest, middle, newest = ids
    from tests.inbound_setup import Sent

    def soft(delivery: int) -> bytes:
        return Sent(delivery, first.contact_id, campaign, first.email, f"<{delivery}.ab@x>").fill(
            "gmail_mailbox_full"
        )

    async with inbound_serve(inbound_settings(settings)) as service:
        # oldest and newest soft-bounce; `middle` did not: a success between them.
        for delivery in (oldest, newest):
            s = Sent(delivery, first.contact_id, campaign, first.email, "<x>")
            await deliver(service.port, s.verp, soft(delivery))
        await deliver(service.port, first.verp, soft(first.delivery_id))
        await processed(conn, 3)
        assert await conn.fetchval("SELECT count(*) FROM suppressions") == 0  # reset by middle
        s = Sent(middle, first.contact_id, campaign, first.email, "<x>")
        await deliver(service.port, s.verp, soft(middle))
        await processed(conn, 4)
    suppression = await conn.fetchrow("SELECT * FROM suppressions")
    assert suppression is not None
    assert (suppression["reason"], suppression["source"]) == ("hard_bounce", "soft bounces")
    assert json.loads(suppression["detail"])["soft_bounces"] == 4
