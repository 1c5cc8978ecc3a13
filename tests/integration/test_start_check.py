"""The last check before MAIL FROM (send.sql: start_sending) says what the audience says.

It reads only what can change after a claim — erasure, suppressions, channel and topic
preferences, the consent ledger — by key, for a handful of rows at a time; the audience
(campaigns.sql) is the rule. For each such change, under each policy, both must agree:
the start refuses exactly the contacts the audience excludes, for the same reason.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from mailer.compliance import privacy
from mailer.core.addresses import address_hash
from mailer.demo.stores import Stores
from tests.engine_setup import add_contacts, sample_campaign, start

WORKER = "test-worker"


async def suppress(
    conn: asyncpg.Connection, email: str, scope: str, reason: str, **at: object
) -> None:
    await conn.execute(
        "INSERT INTO suppressions (email_hash, scope, channel, topic_id, reason, source) "
        "VALUES ($1, $2, $3, $4, $5, 'test')",
        address_hash(email),
        scope,
        at.get("channel"),
        at.get("topic_id"),
        reason,
    )


async def withdraw(conn: asyncpg.Connection, contact_id: int, *, regrant: bool = False) -> None:
    await conn.execute(
        "INSERT INTO consents (contact_id, channel, action, source, obtained_at) "
        "VALUES ($1, 'email', 'withdraw', 'test', now() - interval '1 minute')",
        contact_id,
    )
    if regrant:
        await conn.execute(
            "INSERT INTO consents (contact_id, channel, action, kind, source, obtained_at) "
            "VALUES ($1, 'email', 'grant', 'express', 'test', now() - interval '30 seconds')",
            contact_id,
        )


@pytest.mark.parametrize("policy", ["casl", "gdpr", "can_spam"])
async def test_the_start_refuses_exactly_whom_the_audience_now_excludes_and_for_its_reason(
    stores: Stores, conn: asyncpg.Connection, tmp_path: Path, policy: str
) -> None:
    emails = await add_contacts(conn, 14)
    # Implied consent "while relevant" (CASL s.10(10)(e)), ending seconds after the claim.
    expiring = await conn.fetchval(
        "INSERT INTO contacts (email, email_hash, name, locale, attributes, last_activity_at) "
        "VALUES ('expiring@example.com', $1, 'E', 'en', '{}', now()) RETURNING id",
        address_hash("expiring@example.com"),
    )
    await conn.execute(
        "INSERT INTO consents (contact_id, channel, action, kind, source, obtained_at, ends_at) "
        "VALUES ($1, 'email', 'grant', 'implied_publication', 'card', now() - interval '1 day',"
        " now() + interval '3 seconds')",
        expiring,
    )
    campaign = await sample_campaign(stores, {'policy = "casl"': f'policy = "{policy}"'}, tmp_path)
    spec = await stores.campaigns.campaign_spec(
        await conn.fetchval("SELECT slug FROM campaigns WHERE id = $1", campaign)
    )
    assert spec is not None
    other_topic = await stores.contacts.topic_upsert("news", "News")
    claimed = await stores.send.claim_batch(campaign, 100, 60, WORKER)
    ids = {r.email: r.contact_id for r in claimed}
    # After the claim, one change per contact (the first two change nothing that matters).
    await suppress(conn, emails[0], "topic", "unsubscribe", topic_id=other_topic)
    await suppress(conn, emails[1], "channel", "unsubscribe", channel="sms")
    await suppress(conn, emails[2], "global", "unsubscribe")
    await suppress(conn, emails[3], "channel", "unsubscribe", channel="email")
    await suppress(conn, emails[4], "topic", "unsubscribe", topic_id=spec.topic_id)
    await suppress(conn, emails[5], "channel", "hard_bounce", channel="email")
    await suppress(conn, emails[6], "global", "complaint")
    await suppress(conn, emails[7], "global", "registry")
    await suppress(conn, emails[8], "global", "manual")
    await conn.execute(
        "INSERT INTO contact_channels (contact_id, channel, enabled) VALUES ($1, 'email', false)",
        ids[emails[9]],
    )
    await conn.execute(
        "INSERT INTO contact_topics (contact_id, topic_id, subscribed, source) "
        "VALUES ($1, $2, false, 'test')",
        ids[emails[10]],
        spec.topic_id,
    )
    await withdraw(conn, ids[emails[11]])
    await withdraw(conn, ids[emails[12]], regrant=True)
    if "expiring@example.com" in ids:  # not under GDPR: implied consent never qualifies
        await asyncio.sleep(3.5)

    started = {r.id: r for r in await start(stores, WORKER, [r.id for r in claimed])}
    verdicts = await stores.campaigns.audience(spec, datetime.now(UTC), list(ids.values()))

    reasons = {v.contact_id: v.reason for v in verdicts}
    got = {r.email: (started[r.id].status, started[r.id].skip_reason) for r in claimed}
    want = {
        r.email: ("sending", None)
        if reasons[r.contact_id] is None
        else ("skipped", reasons[r.contact_id])
        for r in claimed
    }
    assert got == want
    # And the changes above did exclude (the comparison is not between two no-ops).
    refused = {email: why for email, (state, why) in got.items() if state == "skipped"}
    assert refused[emails[2]] == "suppressed_global"
    assert refused[emails[3]] == refused[emails[9]] == "unsubscribed_channel"
    assert refused[emails[4]] == refused[emails[10]] == "unsubscribed_topic"
    assert refused[emails[5]] == "hard_bounced"
    assert refused[emails[11]] == "consent_withdrawn"
    assert not {emails[0], emails[1], emails[12]} & set(refused)
    if policy == "casl":
        assert refused["expiring@example.com"] == "consent_expired"
    # What the start refused is final in the ledger, started rows are `sending`.
    states = {
        r["id"]: (r["status"], r["skip_reason"], r["attempts"])
        for r in await conn.fetch("SELECT id, status, skip_reason, attempts FROM deliveries")
    }
    for row in claimed:
        state, why = got[row.email]
        assert states[row.id] == (state, why, 1 if state == "sending" else 0)


async def test_a_contact_erased_while_claimed_is_never_started_and_one_started_holds_the_erasure(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    emails = await add_contacts(conn, 2)
    campaign = await sample_campaign(stores)
    claimed = {r.email: r for r in await stores.send.claim_batch(campaign, 10, 60, WORKER)}
    # Started first: erasing its contact must wait (the message may be on the wire).
    first = await start(stores, WORKER, [claimed[emails[0]].id])
    assert [r.status for r in first] == ["sending"]
    busy = await stores.compliance.contact_erase(
        emails[0],
        address_hash(emails[0]),
        rule=privacy.ERASE_RULE,
        os_user=None,
        evidence_kept=privacy.EVIDENCE_KEPT,
    )
    with pytest.raises(privacy.ErasureBusy):
        privacy.erasure_of(busy)
    # Claimed, not started: the erasure goes through and the start finds nothing to start.
    done = await stores.compliance.contact_erase(
        emails[1],
        address_hash(emails[1]),
        rule=privacy.ERASE_RULE,
        os_user=None,
        evidence_kept=privacy.EVIDENCE_KEPT,
    )
    privacy.erasure_of(done)
    assert await start(stores, WORKER, [claimed[emails[1]].id]) == []
    row = await conn.fetchrow(
        "SELECT status, skip_reason, worker FROM deliveries WHERE id = $1", claimed[emails[1]].id
    )
    assert tuple(row or ()) == ("skipped", "erased", None)


async def test_a_dead_workers_claimed_rows_are_queued_again_and_only_its_started_rows_uncertain(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    await add_contacts(conn, 6)
    campaign = await sample_campaign(stores)
    claimed = sorted(r.id for r in await stores.send.claim_batch(campaign, 10, 60, WORKER))
    await start(stores, WORKER, claimed[:2])  # two started, then kill -9
    await conn.execute("UPDATE deliveries SET lease_until = now() - interval '1 second'")
    swept = await stores.send.sweep_leases()
    assert (swept.requeued, swept.uncertain) == (4, 2)
    rows = await conn.fetch("SELECT id, status, attempts, worker FROM deliveries ORDER BY id")
    assert [r["id"] for r in rows] == claimed
    assert [(r["status"], r["attempts"]) for r in rows] == [("uncertain", 1)] * 2 + [
        ("queued", 0)
    ] * 4
    # The uncertain rows still name the worker whose MAIL FROM may have left.
    assert [r["worker"] for r in rows] == [WORKER] * 2 + [None] * 4


async def test_rows_claimed_before_a_database_crash_are_swept_uncertain_not_queued(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    # Start marks commit without waiting for the WAL flush: a crash of the server may
    # lose the last of them, so a claimed row older than the crash may have been started
    # (its MAIL FROM sent) and must not be queued again. Crash recovery empties the
    # unlogged server_life table, as this does.
    await add_contacts(conn, 4)
    campaign = await sample_campaign(stores)
    before = sorted(r.id for r in await stores.send.claim_batch(campaign, 2, 60, WORKER))
    await conn.execute("TRUNCATE server_life")  # the crash
    rounds = stores.send.start_rounds()
    try:  # the first start writer after it records when the server was whole again
        assert await rounds.start(WORKER, []) == []
    finally:
        await rounds.close()
    after = sorted(r.id for r in await stores.send.claim_batch(campaign, 2, 60, WORKER))
    await conn.execute("UPDATE deliveries SET lease_until = now() - interval '1 second'")
    swept = await stores.send.sweep_leases()
    assert (swept.requeued, swept.uncertain) == (2, 2)
    rows = {r["id"]: r["status"] for r in await conn.fetch("SELECT id, status FROM deliveries")}
    assert [rows[i] for i in before + after] == ["uncertain"] * 2 + ["queued"] * 2


async def test_a_sweep_after_a_crash_that_no_writer_saw_makes_every_lapsed_claim_uncertain(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    await add_contacts(conn, 3)
    campaign = await sample_campaign(stores)
    await stores.send.claim_batch(campaign, 10, 60, WORKER)
    await conn.execute("TRUNCATE server_life")
    await conn.execute("UPDATE deliveries SET lease_until = now() - interval '1 second'")
    swept = await stores.send.sweep_leases()
    assert (swept.requeued, swept.uncertain) == (0, 3)
    assert await conn.fetchval("SELECT count(*) FROM server_life") == 1  # recorded again


async def test_start_marks_are_committed_without_waiting_for_the_wal_flush(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    await add_contacts(conn, 2)
    campaign = await sample_campaign(stores)
    claimed = [r.id for r in await stores.send.claim_batch(campaign, 10, 60, WORKER)]
    rounds = stores.send.start_rounds()
    try:
        assert [s.status for s in await rounds.start(WORKER, claimed)] == ["sending"] * 2
        assert await rounds.setting("synchronous_commit") == "off"
    finally:
        await rounds.close()
    # The setting does not outlive the writer: its connection goes back to the pool reset.
    async with stores.send.pool.acquire() as again:
        assert await again.fetchval("SHOW synchronous_commit") == "on"
