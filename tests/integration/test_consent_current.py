"""consent_current (migration 0005): the ledger's state per contact, kept as rows arrive."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import asyncpg

from mailer.campaigns.audience import CampaignSpec
from mailer.demo.stores import Stores
from tests.barriers import waiting_on_a_lock
from tests.integration.test_audience_freeze import AT, add_contact

CASL = CampaignSpec(0, 1, True, "email", "casl", None, None)


async def _withdraw(conn: asyncpg.Connection, contact: int, at: datetime) -> None:
    await conn.execute(
        "INSERT INTO consents (contact_id, channel, action, source, obtained_at) "
        "VALUES ($1, 'email', 'withdraw', 'unsubscribe link', $2)",
        contact,
        at,
    )


async def _verdict(stores: Stores, contact: int, at: datetime) -> tuple[str | None, str | None]:
    [row] = await stores.campaigns.audience(CASL, at, [contact])
    return row.reason, row.consent_kind


async def _topic(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "INSERT INTO topics (id, slug, name) OVERRIDING SYSTEM VALUE VALUES (1, 'news', 'News') "
        "ON CONFLICT DO NOTHING"
    )


async def test_a_withdrawal_dated_after_the_send_time_does_not_count_at_that_time(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    await _topic(conn)
    contact = await add_contact(conn, "a@example.com", "express", AT - timedelta(days=10))
    await _withdraw(conn, contact, AT + timedelta(days=1))
    # Asked about AT, the summary (newest row AT + 1 day) does not apply: the ledger answers.
    assert await _verdict(stores, contact, AT) == (None, "express")
    assert await _verdict(stores, contact, AT + timedelta(days=2)) == ("consent_withdrawn", None)


async def test_rows_recorded_by_two_transactions_at_once_both_count(
    stores: Stores, conn: asyncpg.Connection, db_url: str
) -> None:
    await _topic(conn)
    contact = await add_contact(conn, "b@example.com", None, AT)
    first, second = await asyncpg.connect(db_url), await asyncpg.connect(db_url)
    try:
        granting = first.transaction()
        await granting.start()
        await first.execute(
            "INSERT INTO consents (contact_id, channel, action, kind, source, obtained_at) "
            "VALUES ($1, 'email', 'grant', 'express', 'form', $2)",
            contact,
            AT - timedelta(days=3),
        )
        # A later purchase waits for that transaction, then merges with its row
        # instead of replacing it: express still ranks first.
        purchase = second.execute(
            "INSERT INTO consents (contact_id, channel, action, kind, source, obtained_at) "
            "VALUES ($1, 'email', 'grant', 'implied_purchase', 'invoice', $2)",
            contact,
            AT - timedelta(days=1),
        )
        recording = asyncio.ensure_future(purchase)
        await waiting_on_a_lock(conn)  # the second writer queues behind the first
        assert not recording.done()
        await granting.commit()
        await recording
    finally:
        await first.close()
        await second.close()
    assert await _verdict(stores, contact, AT) == (None, "express")


async def test_rebuilding_consent_current_from_the_ledger_gives_the_same_rows(
    conn: asyncpg.Connection,
) -> None:
    one = await add_contact(conn, "c@example.com", "implied_purchase", AT - timedelta(days=900))
    two = await add_contact(conn, "d@example.com", "express", AT - timedelta(days=30))
    await _withdraw(conn, two, AT - timedelta(days=20))
    # Several rows in one statement: one merge for the statement.
    await conn.execute(
        "INSERT INTO consents (contact_id, channel, action, kind, source, obtained_at, ends_at) "
        "VALUES ($1, 'email', 'grant', 'implied_inquiry', 'quote', $2, NULL), "
        "($1, 'email', 'grant', 'implied_contract', 'lease', $3, $4), "
        "($1, 'sms', 'grant', 'express', 'shop', $3, NULL), "
        "($5, 'email', 'grant', 'implied_purchase', 'invoice', $2, NULL)",
        one,
        AT - timedelta(days=40),
        AT - timedelta(days=400),
        AT - timedelta(days=100),
        two,
    )
    query = "SELECT * FROM consent_current ORDER BY contact_id, channel"
    kept = [dict(r) for r in await conn.fetch(query)]
    assert await conn.fetchval("SELECT consent_current_rebuild()") == len(kept) == 3
    assert [dict(r) for r in await conn.fetch(query)] == kept
