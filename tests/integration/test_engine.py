from __future__ import annotations

import asyncio
import dataclasses
import email
import hashlib
from email import policy
from pathlib import Path

import asyncpg
from prometheus_client import generate_latest

from mailer.campaigns import lifecycle
from mailer.core.addresses import address_hash
from mailer.core.settings import DomainThrottle
from mailer.demo.stores import Stores
from tests.engine_setup import (
    add_contacts,
    engine_for,
    sample_campaign,
    settings_for,
)
from tests.smtp_servers import Faults, smtp_server, wait_until


async def statuses(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch("SELECT status, count(*) AS n FROM deliveries GROUP BY status")
    return {r["status"]: r["n"] for r in rows}


async def test_every_delivery_is_sent_once_and_the_sink_received_exactly_the_sent_set(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    emails = await add_contacts(conn, 60, domains=("a.example", "b.example", "c.example"))
    await sample_campaign(stores)
    with smtp_server() as (port, sink):
        progress = await engine_for(stores, settings_for(port)).run(until_idle=True)
    assert await statuses(conn) == {"sent": 60}
    assert sorted(sink.recipients) == sorted(emails)
    assert progress.by_status == {"sent": 60}
    assert await conn.fetchval("SELECT status FROM campaigns") == "done"
    assert await conn.fetchval("SELECT count(*) FROM archive") == 60


async def test_messages_composed_in_render_processes_are_the_ones_sent_and_archived(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    emails = await add_contacts(conn, 30, domains=("a.example", "b.example"))
    await sample_campaign(stores)
    base = settings_for(port=0)
    with smtp_server() as (port, sink):
        settings = settings_for(port)
        pooled = dataclasses.replace(
            settings, engine=dataclasses.replace(settings.engine, render_processes=1)
        )
        progress = await engine_for(stores, pooled).run(until_idle=True)
    assert base.engine.render_processes == 1  # the default
    assert progress.by_status == {"sent": 30}
    assert sorted(sink.recipients) == sorted(emails)
    # What the sink received is byte for byte what the archive says was handed to SMTP.
    hashes = {
        r["email"]: bytes(r["sha256"]).hex()
        for r in await conn.fetch(
            "SELECT c.email, a.sha256 FROM archive a JOIN deliveries d ON d.id = a.delivery_id "
            "JOIN contacts c ON c.id = d.contact_id"
        )
    }
    for message in sink.messages:
        assert hashlib.sha256(message.data).hexdigest() == hashes[message.rcpt]


async def test_a_sent_message_carries_the_one_click_headers_and_the_consent_footer(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    await add_contacts(conn, 2)
    await sample_campaign(stores)
    with smtp_server() as (port, sink):
        await engine_for(stores, settings_for(port)).run(until_idle=True)
    message = email.message_from_bytes(sink.messages[0].data, policy=policy.default)
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "/u/" in message["List-Unsubscribe"]
    assert sink.messages[0].mail_from.startswith("bounces+")
    body = message.get_body(("plain",))
    assert body is not None
    assert "Salon E-commerce Paris" in body.get_content()


async def test_a_hard_bounce_is_recorded_and_suppresses_the_address(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    emails = await add_contacts(conn, 5)
    await sample_campaign(stores)
    faults = Faults(rcpt={emails[0]: "550 5.1.1 no such user"})
    with smtp_server(faults) as (port, _sink):
        await engine_for(stores, settings_for(port)).run(until_idle=True)
    assert await statuses(conn) == {"sent": 4, "bounced": 1}
    scope = await conn.fetchrow(
        "SELECT scope, channel, reason FROM suppressions WHERE email_hash = $1",
        address_hash(emails[0]),
    )
    assert tuple(scope or ()) == ("channel", "email", "hard_bounce")


async def test_a_temporary_failure_is_deferred_with_backoff_not_failed(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    emails = await add_contacts(conn, 3)
    await sample_campaign(stores)
    faults = Faults(transient={emails[1]: (5, "451 4.7.1 greylisted, try again later")})
    with smtp_server(faults) as (port, sink):
        await engine_for(stores, settings_for(port)).run(until_idle=True)
    assert await statuses(conn) == {"sent": 2, "deferred": 1}
    row = await conn.fetchrow(
        "SELECT d.next_attempt_at - now() AS wait, d.smtp_code FROM deliveries d "
        "JOIN contacts c ON c.id = d.contact_id WHERE c.email = $1",
        emails[1],
    )
    assert row is not None
    assert row["smtp_code"] == 451
    assert row["wait"].total_seconds() > 20  # at least half a minute of backoff, with jitter
    assert emails[1] not in sink.recipients
    assert await conn.fetchval("SELECT status FROM campaigns") == "running"


async def test_a_contact_who_unsubscribes_after_launch_is_skipped_not_sent(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    emails = await add_contacts(conn, 4)
    await sample_campaign(stores)
    await conn.execute(
        "INSERT INTO suppressions (email_hash, scope, channel, reason, source) "
        "VALUES ($1, 'channel', 'email', 'unsubscribe', 'one-click')",
        address_hash(emails[2]),
    )
    with smtp_server() as (port, sink):
        await engine_for(stores, settings_for(port)).run(until_idle=True)
    assert await statuses(conn) == {"sent": 3, "skipped": 1}
    assert emails[2] not in sink.recipients
    reason = await conn.fetchval("SELECT skip_reason FROM deliveries WHERE status = 'skipped'")
    assert reason == "unsubscribed_channel"


async def test_two_and_four_workers_on_one_campaign_never_send_an_address_twice(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    emails = await add_contacts(conn, 400, domains=("a.example", "b.example"))
    await sample_campaign(stores)
    with smtp_server() as (port, sink):
        settings = settings_for(port, batch_size=20)
        workers = [engine_for(stores, settings) for _ in range(4)]
        await asyncio.gather(*(w.run(until_idle=True) for w in workers))
    assert sorted(sink.recipients) == sorted(emails)
    assert await statuses(conn) == {"sent": 400}


async def test_pause_stops_claiming_within_one_batch_and_resume_finishes(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    emails = await add_contacts(conn, 200)
    await sample_campaign(stores)
    slug = await conn.fetchval("SELECT slug FROM campaigns")
    with smtp_server(Faults(delay_s=0.01)) as (port, sink):
        settings = settings_for(port, batch_size=10)
        engine = engine_for(stores, settings, max_pending=10)
        run = asyncio.create_task(engine.run())
        await wait_until(lambda: len(sink.recipients) >= 20)
        await lifecycle.transition(stores.campaigns, slug, "paused")
        at_pause = len(sink.recipients)
        # Settled: everything claimed is sent or handed back, and nothing is claimed while
        # paused, so the count below is final, not a snapshot.
        await wait_until(lambda: engine.pending == 0)
        assert len(sink.recipients) <= at_pause + 10  # at most the batch in flight
        await lifecycle.transition(stores.campaigns, slug, "running")
        await wait_until(lambda: len(sink.recipients) >= len(emails))
        engine.stop.set()
        await run
    assert await statuses(conn) == {"sent": 200}


async def test_a_pause_does_not_wait_for_a_slow_campaigns_throttle_tokens(
    stores: Stores, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await add_contacts(conn, 40, domains=("slow.example",))
    await sample_campaign(stores, {"rate = 20.0": "rate = 2.0"}, tmp_path)
    slug = await conn.fetchval("SELECT slug FROM campaigns")
    with smtp_server() as (port, sink):
        engine = engine_for(stores, settings_for(port, batch_size=40))
        run = asyncio.create_task(engine.run())
        await wait_until(lambda: len(sink.recipients) >= 2)
        await lifecycle.transition(stores.campaigns, slug, "paused")

        async def sending() -> int:  # held by the worker: claimed, or started
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM deliveries WHERE status IN ('claimed', 'sending')"
                )
            )

        # ~36 messages were queued behind the campaign's 2/s: at most the ones already
        # holding a token go out, the rest are handed back at once, not at 2 per second
        # (18 s): 10 s leave a loaded machine room for its 36 hand-backs.
        for _ in range(100):
            if await sending() == 0:
                break
            await asyncio.sleep(0.1)
        assert await sending() == 0
        assert len(sink.recipients) <= 10
        engine.stop.set()
        await run


async def test_cancel_gives_every_unsent_row_a_final_state(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    await add_contacts(conn, 50)
    await sample_campaign(stores)
    slug = await conn.fetchval("SELECT slug FROM campaigns")
    await lifecycle.transition(stores.campaigns, slug, "cancelled")
    assert await statuses(conn) == {"skipped": 50}
    assert await conn.fetchval("SELECT DISTINCT skip_reason FROM deliveries") == "cancelled"


async def test_graceful_stop_hands_back_what_was_not_sent_and_records_the_rest(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    await add_contacts(conn, 100)
    await sample_campaign(stores)
    with smtp_server(Faults(delay_s=0.02)) as (port, sink):
        engine = engine_for(stores, settings_for(port, batch_size=50))
        run = asyncio.create_task(engine.run())
        await wait_until(lambda: len(sink.recipients) >= 10)
        engine.stop.set()
        await run
        received = len(sink.recipients)
    counts = await statuses(conn)
    assert counts.get("sending", 0) == counts.get("claimed", 0) == 0
    assert counts["sent"] == received
    assert counts["sent"] + counts.get("queued", 0) == 100


async def test_a_domain_rate_limit_holds_across_several_workers(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    await add_contacts(conn, 120, domains=("slow.example",))
    await sample_campaign(stores)
    with smtp_server() as (port, sink):
        base = settings_for(port, batch_size=20)
        limited = dataclasses.replace(
            base,
            throttle=dataclasses.replace(
                base.throttle,
                domains={"slow.example": DomainThrottle(rate=40.0, concurrency=4)},
            ),
        )
        workers = [engine_for(stores, limited) for _ in range(3)]
        await asyncio.gather(*(w.run(until_idle=True) for w in workers))
        times = sorted(m.at for m in sink.messages)
    assert len(times) == 120
    # After the first burst (a quarter second of tokens), the sink sees at most 40/s.
    span = times[-1] - times[0]
    assert span >= (120 - 10) / 40 * 0.9
    assert await statuses(conn) == {"sent": 120}


async def test_a_campaigns_tighter_domain_limit_holds_it_back_without_holding_back_others(
    stores: Stores, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await add_contacts(conn, 20, domains=("shared.example",))
    # The held campaign caps the domain at 5 msg/s, the other has no cap of its own. Slow
    # enough that even a loaded machine sends the free campaign's 20 messages well within
    # the held one's 4 s (at 20/s the free one had 0.9 s for 40, and once took longer).
    held = await sample_campaign(stores, {"rate = 20.0": "rate = 5.0"}, tmp_path)
    free = await sample_campaign(
        stores,
        {
            'slug = "service-reminder-2024-10"': 'slug = "free"',
            "[throttle]\nrate = 20.0\nconcurrency = 4\n": "",
        },
        tmp_path,
    )
    with smtp_server() as (port, sink):
        await engine_for(stores, settings_for(port, batch_size=100)).run(until_idle=True)
    assert len(sink.messages) == 40
    spans = {
        r["campaign_id"]: (r["first"], r["last"])
        for r in await conn.fetch(
            "SELECT campaign_id, min(sent_at) AS first, max(sent_at) AS last FROM deliveries "
            "WHERE status = 'sent' GROUP BY campaign_id"
        )
    }
    held_seconds = (spans[held][1] - spans[held][0]).total_seconds()
    # 20 messages at 5/s after a first token: the campaign's own bucket held (19 / 5 = 3.8 s).
    # The span runs from the first message's answer, which comes after its token by
    # that message's own latency (connection, EHLO, start mark): 0.1-0.2 s under load.
    assert held_seconds >= (20 - 2) / 5 * 0.8
    # The other campaign, on the same domain, was not queued behind it nor paced with it:
    # at 5/s its 20 messages would have taken as long.
    assert spans[free][1] < spans[held][1]
    assert (spans[free][1] - spans[free][0]).total_seconds() < held_seconds / 2


async def test_the_engine_exports_its_metrics_by_outcome_and_reply_class(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    emails = await add_contacts(conn, 4)
    await sample_campaign(stores)
    faults = Faults(rcpt={emails[0]: "550 5.1.1 no such user"})
    with smtp_server(faults) as (port, _sink):
        engine = engine_for(stores, settings_for(port))
        await engine.run(until_idle=True)
    exposition = generate_latest(engine.metrics.registry).decode()
    assert 'mailer_messages_total{outcome="sent",reply_class="2xx"} 3.0' in exposition
    assert 'mailer_messages_total{outcome="bounced",reply_class="5xx"} 1.0' in exposition
    assert "mailer_render_duration_seconds_count 4.0" in exposition
    assert "mailer_send_duration_seconds_count 4.0" in exposition


async def test_a_refused_sender_address_defers_and_never_suppresses_the_recipients(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    await add_contacts(conn, 3)
    await sample_campaign(stores)
    with smtp_server(Faults(mail_reply="553 5.1.8 sender address rejected")) as (port, _sink):
        await engine_for(stores, settings_for(port)).run(until_idle=True)
    assert await statuses(conn) == {"deferred": 3}
    assert await conn.fetchval("SELECT count(*) FROM suppressions") == 0


async def test_a_reply_lost_after_the_message_was_handed_over_is_uncertain_not_retried(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    await add_contacts(conn, 1)
    await sample_campaign(stores)
    with smtp_server(Faults(delay_s=2.5)) as (port, _sink):
        settings = settings_for(port)
        slow = dataclasses.replace(settings, smtp=dataclasses.replace(settings.smtp, timeout_s=1.0))
        await engine_for(stores, slow).run(until_idle=True)
    # The server held the whole message when the reply timed out: it may be delivered.
    assert await statuses(conn) == {"uncertain": 1}


async def test_resending_uncertain_rows_reopens_a_finished_campaign_and_sends_them(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    await add_contacts(conn, 2)
    campaign = await sample_campaign(stores)
    await conn.execute("UPDATE deliveries SET status = 'uncertain'")
    await conn.execute("UPDATE campaigns SET status = 'done'")
    assert await stores.campaigns.resend_uncertain(campaign) == 2
    with smtp_server() as (port, sink):
        await engine_for(stores, settings_for(port)).run(until_idle=True)
    assert await statuses(conn) == {"sent": 2}
    assert len(sink.recipients) == 2


async def test_a_pause_also_holds_back_messages_already_rendered_and_queued(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    await add_contacts(conn, 300)
    await sample_campaign(stores)
    slug = await conn.fetchval("SELECT slug FROM campaigns")
    with smtp_server(Faults(delay_s=0.02)) as (port, sink):
        engine = engine_for(stores, settings_for(port, batch_size=300))  # all queued at once
        run = asyncio.create_task(engine.run())
        await wait_until(lambda: len(sink.recipients) >= 10)
        await lifecycle.transition(stores.campaigns, slug, "paused")
        at_pause = len(sink.recipients)
        await wait_until(lambda: engine.pending == 0)  # settled: the count below is final
        # Only what was on the wire (4 connections) and what the claimer had not yet
        # noticed (one idle round) may still go.
        assert len(sink.recipients) <= at_pause + 40
        engine.stop.set()
        await run
    counts = await statuses(conn)
    assert counts.get("sending", 0) == counts.get("claimed", 0) == 0
    assert counts["sent"] == len(sink.recipients)
    assert counts["sent"] + counts.get("queued", 0) == 300


async def test_the_warm_up_cap_defers_what_exceeds_todays_allowance_to_tomorrow(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    await add_contacts(conn, 8)
    await sample_campaign(stores)
    with smtp_server() as (port, sink):
        base = settings_for(port)
        capped = dataclasses.replace(
            base, throttle=dataclasses.replace(base.throttle, warmup_daily_cap=5)
        )
        await engine_for(stores, capped).run(until_idle=True)
    assert await statuses(conn) == {"sent": 5, "deferred": 3}
    assert len(sink.recipients) == 5
    later = await conn.fetchval(
        "SELECT bool_and(next_attempt_at >= date_trunc('day', now()) + interval '1 day') "
        "FROM deliveries WHERE status = 'deferred'"
    )
    assert later is True


async def test_the_send_queue_depth_shows_what_waits_and_is_zero_once_all_is_sent(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    await add_contacts(conn, 50)
    await sample_campaign(stores)  # 20 msg/s: the batch waits in the send queue
    with smtp_server() as (port, sink):
        engine = engine_for(stores, settings_for(port))
        registry = engine.metrics.registry

        def depth(stage: str) -> float | None:
            return registry.get_sample_value("mailer_queue_depth", {"stage": stage})

        # A worker that stays up, as in production: the gauge must fall with the queue,
        # not keep the last batch's size on an idle worker.
        run = asyncio.create_task(engine.run())
        seen: list[float] = []
        while len(sink.recipients) < 50:
            seen.append(depth("send") or 0.0)
            await asyncio.sleep(0.02)
        await wait_until(lambda: engine.pending == 0)
        assert (depth("send"), depth("record")) == (0.0, 0.0)
        engine.stop.set()
        await run
    assert max(seen) >= 40  # the claimed batch, waiting for throttle tokens
    assert await statuses(conn) == {"sent": 50}
    assert (depth("send"), depth("record")) == (0.0, 0.0)
