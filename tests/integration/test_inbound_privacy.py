"""Erasure reaches inbound mail: the DSNs, feedback reports and mailto unsubscribes about a
person lose every trace of the address, and keep the hash-only evidence of the suppression."""

from __future__ import annotations

import json

import asyncpg
import pytest

from mailer.core.addresses import address_hash
from mailer.core.settings import Settings
from mailer.demo.stores import Stores
from tests.cli_run import run_cli
from tests.inbound_setup import DOMAIN, deliver, inbound_serve, inbound_settings, processed
from tests.inbound_setup import sent_deliveries as sent


async def _columns(conn: asyncpg.Connection) -> list[tuple[str, str, str]]:
    rows = await conn.fetch(
        "SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c "
        "JOIN information_schema.tables t USING (table_schema, table_name) "
        "WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE' "
        "AND c.data_type IN ('text', 'character varying', 'jsonb', 'json', 'ARRAY', 'bytea') "
        "ORDER BY 1, 2"
    )
    return [(r["table_name"], r["column_name"], r["data_type"]) for r in rows]


async def where_found(conn: asyncpg.Connection, needle: str) -> list[str]:
    """Every table.column holding `needle` (any case), raw bytes included."""
    found = []
    for table, column, kind in await _columns(conn):
        value = f"encode(\"{column}\", 'escape')" if kind == "bytea" else f'"{column}"::text'
        # Identifiers come from information_schema, not from input.
        query = f'SELECT count(*) FROM "{table}" WHERE {value} ILIKE $1'  # noqa: S608
        if await conn.fetchval(query, f"%{needle}%"):
            found.append(f"{table}.{column}")
    return found


async def test_erasing_a_contact_who_bounced_complained_and_unsubscribed_by_mail_scrubs_it_all(
    stores: Stores,
    conn: asyncpg.Connection,
    settings: Settings,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    victim, other = await sent(stores, conn, 2)
    shout = victim.email.upper()  # MTAs quote addresses in any case
    async with inbound_serve(inbound_settings(settings)) as service:
        # A hard bounce quoting her address, a mailto unsubscribe from it, a human message
        # to postmaster that names her (unmatched), and the same bounce for someone else.
        await deliver(
            service.port, victim.verp, victim.fill("postfix_hard", **{"dead@example.org": shout})
        )
        await deliver(
            service.port,
            victim.mailto,
            victim.fill("mailto_unsubscribe", **{"reader@example.org": victim.email}),
            mail_from=victim.email,
        )
        await deliver(
            service.port,
            f"postmaster@{DOMAIN}",
            victim.fill(
                "human_to_postmaster",
                **{"electric cars?": f"electric cars? Write to {victim.email}"},
            ),
        )
        await deliver(
            service.port,
            other.verp,
            other.fill("postfix_hard", **{"dead@example.org": other.email}),
        )
        await processed(conn, 4)
    assert await where_found(conn, victim.email)  # the story put the address in inbound rows
    code, out = await run_cli(monkeypatch, db_url, "contacts", "erase", victim.email, "--yes")
    assert code == 0, out
    assert "3 inbound message(s)" in out
    assert await where_found(conn, victim.email) == []
    # The hash-only evidence stays: each message's SHA-256, kind, time, delivery and status.
    kept = await conn.fetch(
        "SELECT kind, delivery_id, sha256, octet_length(raw) AS size, detail "
        "FROM inbound_messages WHERE detail ? 'erased' ORDER BY id"
    )
    assert [r["kind"] for r in kept] == ["dsn_hard", "unsubscribe", "unmatched"]
    assert all(len(r["sha256"]) == 32 and r["size"] == 0 for r in kept)
    assert json.loads(kept[0]["detail"])["status"] == "5.1.1"
    suppression = await conn.fetchval(
        "SELECT detail FROM suppressions WHERE email_hash = $1 AND reason = 'hard_bounce'",
        address_hash(victim.email),
    )
    assert json.loads(suppression)["inbound_id"] is not None
    # Someone else's bounce is untouched.
    assert await where_found(conn, other.email)
    assert await conn.fetchval(
        "SELECT octet_length(raw) > 0 FROM inbound_messages WHERE delivery_id = $1",
        other.delivery_id,
    )


async def test_a_complaint_arriving_after_the_erasure_suppresses_the_hash_and_keeps_no_address(
    stores: Stores,
    conn: asyncpg.Connection,
    settings: Settings,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (victim,) = await sent(stores, conn, 1)
    code, out = await run_cli(monkeypatch, db_url, "contacts", "erase", victim.email, "--yes")
    assert code == 0, out
    data = victim.fill("yahoo_arf_complaint", **{"reader@yahoo.example": victim.email})
    async with inbound_serve(inbound_settings(settings)) as service:
        await deliver(service.port, f"fbl@{DOMAIN}", data, mail_from=victim.email)
        await processed(conn, 1)
    reasons = await conn.fetch(
        "SELECT reason FROM suppressions WHERE email_hash = $1 ORDER BY reason",
        address_hash(victim.email),
    )
    assert [r["reason"] for r in reasons] == ["complaint", "erasure"]
    assert await where_found(conn, victim.email) == []
    row = await conn.fetchrow("SELECT kind, sha256, detail FROM inbound_messages")
    assert row is not None
    assert row["kind"] == "complaint"
    assert json.loads(row["detail"])["feedback_type"] == "abuse"
