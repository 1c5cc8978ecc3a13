"""The transactional lane (issue #18 item 4): sends, archives, retries, re-checks, metrics."""

from __future__ import annotations

import hashlib
from email import message_from_bytes, policy

import asyncpg

from mailer.campaigns.template_set import TemplateSet
from mailer.core.addresses import address_hash
from mailer.demo.stores import Stores
from mailer.transactional.basis import Basis
from mailer.transactional.compose import reproduce_message
from mailer.transactional.enqueue import enqueue
from tests.lane_setup import PARTS, RECALL, lane_for, lane_settings, transactional_store
from tests.smtp_servers import Faults, smtp_server


async def test_a_notice_is_sent_untracked_with_its_footer_and_an_archive_that_reproduces_it(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    accepted = await enqueue(
        transactional_store(stores),
        template="parts_received",
        to="marie@example.com",
        data=PARTS,
        locale="fr",
    )
    with smtp_server() as (port, sink):
        lane = lane_for(stores, lane_settings(port))
        progress = await lane.run(until_idle=True)
    assert progress.by_status == {"sent": 1}
    assert sink.recipients == ["marie@example.com"]
    received = sink.messages[0].data
    row = await conn.fetchrow(
        "SELECT m.status, m.sha256, m.size_bytes, m.render_inputs::text AS archive, m.smtp_code, "
        "m.message_id, tv.files::text AS files "
        "FROM transactional_messages m JOIN template_versions tv ON tv.id = m.template_version_id "
        "WHERE m.id = $1",
        accepted.message_id,
    )
    assert row is not None
    assert (row["status"], row["smtp_code"]) == ("sent", 250)
    import json

    files = TemplateSet("parts_received", json.loads(row["files"]))
    again = reproduce_message(files, Basis.TRANSACTION, json.loads(row["archive"]))
    assert hashlib.sha256(again).digest() == bytes(row["sha256"])
    assert row["size_bytes"] == len(again)
    # What the sink got is those bytes (aiosmtpd hands the content without the final CRLF).
    assert again.rstrip(b"\r\n") == received.rstrip(b"\r\n")
    message = message_from_bytes(received, policy=policy.default)
    assert message["Message-ID"] == row["message_id"]
    assert message["List-Unsubscribe"].startswith("<http")
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "Vos pièces sont arrivées" in html
    assert "/o/" not in html  # no pixel: the template does not opt in to tracking
    assert "au sujet d'un achat ou d'un service chez Garage Tremblay" in html.replace("&#39;", "'")


async def test_a_4xx_is_retried_with_backoff_then_sent(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    accepted = await enqueue(
        transactional_store(stores), template="parts_received", to="grey@example.com", data=PARTS
    )
    faults = Faults(transient={"grey@example.com": (1, "451 4.7.1 greylisted, try again")})
    with smtp_server(faults) as (port, sink):
        settings = lane_settings(port)
        await lane_for(stores, settings).run(until_idle=True)
        row = await conn.fetchrow(
            "SELECT status, attempts, next_attempt_at > now() + interval '20 seconds' AS later "
            "FROM transactional_messages WHERE id = $1",
            accepted.message_id,
        )
        assert row is not None
        assert (row["status"], row["attempts"], row["later"]) == ("deferred", 1, True)
        await conn.execute("UPDATE transactional_messages SET next_attempt_at = now()")
        await lane_for(stores, settings).run(until_idle=True)
    status = await conn.fetchval(
        "SELECT status FROM transactional_messages WHERE id = $1", accepted.message_id
    )
    assert status == "sent"
    assert sink.recipients == ["grey@example.com"]


async def test_a_hard_bounce_after_enqueue_skips_the_message_and_says_why(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    accepted = await enqueue(
        transactional_store(stores), template="safety_recall", to="dead@example.com", data=RECALL
    )
    await conn.execute(
        "INSERT INTO suppressions (email_hash, scope, channel, reason, source) "
        "VALUES ($1, 'channel', 'email', 'hard_bounce', 'inbound')",
        address_hash("dead@example.com"),
    )
    with smtp_server() as (port, sink):
        await lane_for(stores, lane_settings(port)).run(until_idle=True)
    row = await conn.fetchrow(
        "SELECT status, skip_reason, refusal FROM transactional_messages WHERE id = $1",
        accepted.message_id,
    )
    assert row is not None
    assert (row["status"], row["skip_reason"]) == ("skipped", "hard_bounced")
    assert row["refusal"].startswith("hard_bounced")
    assert sink.recipients == []


async def test_a_hard_bounce_at_the_relay_suppresses_the_address_for_the_next_notice(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    store = transactional_store(stores)
    await enqueue(store, template="parts_received", to="nobody@example.com", data=PARTS)
    faults = Faults(rcpt={"nobody@example.com": "550 5.1.1 no such user"})
    with smtp_server(faults) as (port, _):
        progress = await lane_for(stores, lane_settings(port)).run(until_idle=True)
    assert progress.by_status == {"bounced": 1}
    again = await enqueue(store, template="parts_received", to="nobody@example.com", data=PARTS)
    assert again.refusal is not None
    assert again.refusal.reason == "hard_bounced"


async def test_the_lane_counts_outcomes_and_enqueue_to_reply_latency(stores: Stores) -> None:
    await enqueue(
        transactional_store(stores), template="parts_received", to="a@example.com", data=PARTS
    )
    with smtp_server() as (port, _):
        lane = lane_for(stores, lane_settings(port))
        await lane.run(until_idle=True)
    registry = lane.metrics.registry
    sent = registry.get_sample_value(
        "mailer_transactional_total", {"template": "parts_received", "outcome": "sent"}
    )
    assert sent == 1
    assert registry.get_sample_value("mailer_transactional_latency_seconds_count") == 1


async def test_an_idle_lane_is_woken_by_the_enqueue_not_by_its_poll(stores: Stores) -> None:
    import asyncio
    import dataclasses
    import time

    from tests.smtp_servers import wait_until

    with smtp_server() as (port, sink):
        settings = lane_settings(port)
        # The longest poll allowed: a notice that arrives within half of it was woken.
        slow_poll = dataclasses.replace(
            settings, transactional=dataclasses.replace(settings.transactional, poll_ms=60_000)
        )
        lane = lane_for(stores, slow_poll)
        run = asyncio.create_task(lane.run())
        await asyncio.sleep(0.5)  # idle, listening
        started = time.monotonic()
        await enqueue(
            transactional_store(stores), template="parts_received", to="now@example.com",
            data=PARTS,
        )  # fmt: skip
        await wait_until(lambda: sink.recipients == ["now@example.com"], within_s=30)
        waited = time.monotonic() - started
        lane.stop.set()
        lane.wake.set()
        await run
    # The poll is 60 s away: NOTIFY woke it (a bound of 5 s failed a loaded machine's
    # claim, render and SMTP transaction; 30 s is no closer to the poll).
    assert waited < 30, waited
