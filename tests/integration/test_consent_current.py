"""consent_current (migration 0005): the ledger's state per contact, kept as rows arrive."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailer.campaigns.audience import CampaignSpec
from mailer.contacts import batches, imports
from mailer.contacts.csvfile import Defaults
from mailer.demo.stores import Stores
from tests.barriers import waiting_on_a_lock
from tests.integration.test_audience_freeze import AT, add_contact

CASL = CampaignSpec(0, 1, True, "email", "casl", None, None)
# The ledger's summary, without written_at: when the row was first written is not the
# ledger's state (a rebuild writes every row anew).
SUMMARY = (
    "SELECT contact_id, channel, newest_at, withdrawn, withdrawal, express, purchase, "
    "contract, inquiry, publication, best_id, best_kind, best_source, best_obtained_at, "
    "best_valid_until FROM consent_current ORDER BY contact_id, channel"
)


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
    kept = [dict(r) for r in await conn.fetch(SUMMARY)]
    assert await conn.fetchval("SELECT consent_current_rebuild()") == len(kept) == 3
    assert [dict(r) for r in await conn.fetch(SUMMARY)] == kept


# ------------------------------------------------- kept by the contact import (migration 0010)

EMAILS = ("a@example.com", "b@example.com", "c@example.com")
DAYS = ("2024-02-29", "2025-01-31", "2025-01-31T12:00:00+00:00", "2025-08-31", "2026-05-01")
KINDS = [
    "express",
    "implied_purchase",
    "implied_contract",
    "implied_inquiry",
    "implied_publication",
]
HEADER = "email,consent,consent_source,consent_date,consent_ends,channel\r\n"


def _line(email: str, kind: str, source: str, day: str, ends: str | None, channel: str) -> str:
    if kind not in ("implied_contract", "implied_publication") or (ends or "") < day:
        ends = None
    return f"{email},{kind},{source},{day},{ends or ''},{channel}\r\n"


lines = st.builds(
    _line,
    st.sampled_from(EMAILS),
    st.sampled_from(KINDS),
    st.sampled_from(["form", "invoice"]),
    st.sampled_from(DAYS),
    st.one_of(st.none(), st.sampled_from(DAYS)),
    st.sampled_from(["email", "email", "sms"]),
)
# A step: a file imported, or a row recorded by another writer (the tracker's withdrawal,
# a grant from psql) through the ledger trigger.
steps = st.one_of(
    st.lists(lines, min_size=1, max_size=7).map(lambda ls: ("import", HEADER + "".join(ls))),
    st.tuples(
        st.sampled_from(["withdraw", "grant"]), st.sampled_from(EMAILS), st.sampled_from(DAYS)
    ),
)


async def _import(stores: Stores, folder: Path, text: str) -> None:
    path = folder / "contacts.csv"
    path.write_text(text, encoding="utf-8")
    await imports.import_contacts(
        stores.contacts, path, Defaults(), default_locale="en", skip_invalid=False
    )


async def _state(conn: asyncpg.Connection) -> list[dict[str, object]]:
    return [dict(r) for r in await conn.fetch(SUMMARY)]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=st.lists(steps, min_size=1, max_size=5), chunk=st.sampled_from([1, 2, 25_000]))
async def test_consent_current_kept_by_imports_and_by_the_trigger_equals_a_rebuild(
    stores: Stores,
    conn: asyncpg.Connection,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    plan: list[tuple[str, ...]],
    chunk: int,
) -> None:
    # Small chunks: an address again in a later batch of a chunk, and in a later chunk.
    monkeypatch.setattr(batches, "CHUNK_ROWS", chunk)
    await conn.execute("TRUNCATE contacts, consents, contact_topics, imports RESTART IDENTITY")
    for step in plan:
        if step[0] == "import":
            await _import(stores, tmp_path, step[1])
            continue
        action, email, day = step
        contact = await conn.fetchval("SELECT id FROM contacts WHERE email = $1", email)
        if contact is None:
            continue
        await conn.execute(
            "INSERT INTO consents (contact_id, channel, action, kind, source, obtained_at) "
            "VALUES ($1, 'email', $2, $3, 'elsewhere', $4::text::timestamptz)",
            contact,
            action,
            "express" if action == "grant" else None,
            day,
        )
    kept = await _state(conn)
    await conn.fetchval("SELECT consent_current_rebuild()")
    assert kept == await _state(conn)


async def test_two_imports_of_the_same_contacts_in_opposite_orders_run_at_once_without_deadlock(
    stores: Stores, conn: asyncpg.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batches, "CHUNK_ROWS", 3)  # several batches each, so they interleave
    people = [f"p{i}@example.com" for i in range(12)]
    await _import(stores, tmp_path, HEADER + "".join(
        _line(e, "implied_inquiry", "quote", "2025-01-31", None, "email") for e in people
    ))  # fmt: skip
    forward, backward = tmp_path / "f", tmp_path / "b"
    forward.mkdir()
    backward.mkdir()
    one = HEADER + "".join(_line(e, "express", "form", "2026-05-01", None, "email") for e in people)
    two = HEADER + "".join(
        _line(e, "implied_purchase", "invoice", "2025-08-31", None, "email")
        for e in reversed(people)
    )
    await asyncio.wait_for(
        asyncio.gather(_import(stores, forward, one), _import(stores, backward, two)), 60
    )
    assert await conn.fetchval("SELECT count(*) FROM consents") == 36
    kept = await _state(conn)
    assert {r["best_kind"] for r in kept} == {"express"}
    await conn.fetchval("SELECT consent_current_rebuild()")
    assert kept == await _state(conn)


async def test_an_import_merges_with_a_grant_another_transaction_commits_meanwhile(
    stores: Stores, conn: asyncpg.Connection, db_url: str, tmp_path: Path
) -> None:
    await _import(
        stores, tmp_path, HEADER + _line(EMAILS[0], "implied_inquiry", "q", DAYS[1], None, "email")
    )
    contact = await conn.fetchval("SELECT id FROM contacts")
    other = await asyncpg.connect(db_url)
    try:
        granting = other.transaction()
        await granting.start()
        # Through the ledger trigger, without the contact lock: only consent_current's
        # own row lock orders the two writers.
        await other.execute(
            "INSERT INTO consents (contact_id, channel, action, kind, source, obtained_at) "
            "VALUES ($1, 'email', 'grant', 'express', 'psql', '2025-03-01')",
            contact,
        )
        later = HEADER + _line(EMAILS[0], "implied_purchase", "invoice", DAYS[3], None, "email")
        importing = asyncio.ensure_future(_import(stores, tmp_path, later))
        await asyncio.sleep(0.5)
        assert not importing.done()
        await granting.commit()
        await asyncio.wait_for(importing, 30)
    finally:
        await other.close()
    kept = await _state(conn)
    assert [(r["best_kind"], str(r["newest_at"])[:10]) for r in kept] == [("express", "2025-08-31")]
    await conn.fetchval("SELECT consent_current_rebuild()")
    assert kept == await _state(conn)
