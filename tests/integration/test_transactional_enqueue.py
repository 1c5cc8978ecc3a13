"""ENQUEUE (issue #18 items 2-3): durable before the answer, idempotent, refusals per basis."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import asyncpg
import pytest

from mailer.core.addresses import address_hash
from mailer.demo.stores import Stores
from mailer.transactional.enqueue import (
    EnqueueError,
    IdempotencyConflict,
    UnknownTemplate,
    enqueue,
)
from mailer.transactional.store import TransactionalStore

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "templates" / "transactional"
PARTS = {"order": "BC-1", "part": "Brake pads", "vehicle": "Toyota RAV4"}
RECALL = {"recall": "24V-123", "vehicle": "Toyota RAV4", "issue": "Airbag inflator"}


def store_of(stores: Stores, templates: Path = TEMPLATES) -> TransactionalStore:
    return TransactionalStore(stores.pool, templates)


async def suppress(
    conn: asyncpg.Connection, email: str, reason: str, scope: str = "channel"
) -> None:
    await conn.execute(
        "INSERT INTO suppressions (email_hash, scope, channel, reason, source) "
        "VALUES ($1, $2, CASE WHEN $2 = 'channel' THEN 'email' END, $3, 'test')",
        address_hash(email),
        scope,
        reason,
    )


async def test_a_walk_in_recipient_is_accepted_durably_with_a_contact_and_no_consent(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    result = await enqueue(
        store_of(stores),
        template="parts_received",
        to="Walk.In@Example.com",
        data=PARTS,
        idempotency_key="dms-1",
    )
    assert result.accepted
    assert not result.duplicate
    # Committed before the answer: another connection sees the row at once.
    row = await conn.fetchrow(
        "SELECT m.status, m.basis, m.data, m.idempotency_key, m.template_version_id, c.email "
        "FROM transactional_messages m JOIN contacts c ON c.id = m.contact_id WHERE m.id = $1",
        result.message_id,
    )
    assert row is not None
    assert (row["status"], row["basis"], row["idempotency_key"], row["email"]) == (
        "queued",
        "transaction",
        "dms-1",
        "walk.in@example.com",
    )
    assert row["template_version_id"] is not None
    assert await conn.fetchval("SELECT count(*) FROM consents") == 0


async def test_the_same_idempotency_key_returns_the_first_message_and_writes_nothing(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    store = store_of(stores)
    first = await enqueue(store, template="parts_received", to="a@example.com", data=PARTS,
                          idempotency_key="k")  # fmt: skip
    again = await enqueue(store, template="parts_received", to="a@example.com", data=PARTS,
                          idempotency_key="k")  # fmt: skip
    assert (again.message_id, again.duplicate) == (first.message_id, True)
    assert await conn.fetchval("SELECT count(*) FROM transactional_messages") == 1
    with pytest.raises(IdempotencyConflict):
        await enqueue(store, template="parts_received", to="b@example.com", data=PARTS,
                      idempotency_key="k")  # fmt: skip


async def test_two_identical_requests_at_once_make_one_message(
    db_url: str, conn: asyncpg.Connection
) -> None:
    from mailer.db import connect

    async with connect(db_url, max_size=2) as pool_a, connect(db_url, max_size=2) as pool_b:
        results = await asyncio.gather(
            *(
                enqueue(
                    TransactionalStore(pool, TEMPLATES),
                    template="parts_received",
                    to="same@example.com",
                    data=PARTS,
                    idempotency_key="twice",
                )
                for pool in (pool_a, pool_b, pool_a, pool_b)
            )
        )
    assert len({r.message_id for r in results}) == 1
    assert sorted(r.duplicate for r in results) == [False, True, True, True]
    assert await conn.fetchval("SELECT count(*) FROM transactional_messages") == 1
    assert await conn.fetchval("SELECT count(*) FROM contacts") == 1


@pytest.mark.parametrize("reason", ["hard_bounce", "complaint"])
@pytest.mark.parametrize(
    ("template", "data"), [("parts_received", PARTS), ("safety_recall", RECALL)]
)
async def test_hard_bounced_and_complained_addresses_are_refused_whatever_the_basis(
    stores: Stores, conn: asyncpg.Connection, reason: str, template: str, data: dict[str, str]
) -> None:
    await suppress(conn, "dead@example.com", reason, scope="global")
    result = await enqueue(store_of(stores), template=template, to="dead@example.com", data=data)
    assert result.refusal is not None
    assert (
        result.refusal.reason == {"hard_bounce": "hard_bounced", "complaint": "complained"}[reason]
    )
    status = await conn.fetchval(
        "SELECT status FROM transactional_messages WHERE id = $1", result.message_id
    )
    assert status == "refused"


async def test_an_unsubscribe_from_marketing_does_not_stop_a_recall_and_the_note_says_why(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    await suppress(conn, "opted.out@example.com", "unsubscribe")
    result = await enqueue(
        store_of(stores), template="safety_recall", to="opted.out@example.com", data=RECALL
    )
    assert result.accepted
    assert result.note is not None
    assert "unsubscribed from this channel" in result.note
    assert "s.6(6)(c)" in result.note
    note = await conn.fetchval(
        "SELECT note FROM transactional_messages WHERE id = $1", result.message_id
    )
    assert note == result.note


async def test_an_erased_address_is_refused_and_never_written_back(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    await suppress(conn, "gone@example.com", "erasure", scope="global")
    result = await enqueue(
        store_of(stores), template="safety_recall", to="gone@example.com", data=RECALL
    )
    assert result.refusal is not None
    assert result.refusal.reason == "erased"
    assert await conn.fetchval("SELECT count(*) FROM contacts") == 0
    row = await conn.fetchrow("SELECT contact_id, domain, data FROM transactional_messages")
    assert row is not None
    assert (row["contact_id"], row["domain"], row["data"]) == (None, None, "{}")


async def test_a_commercial_template_goes_through_the_consent_rules(
    stores: Stores, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    folder = commercial_templates(tmp_path)
    await stores.contacts.topic_upsert("offers", "Offers")
    store = store_of(stores, folder)
    refused = await enqueue(store, template="winter_offer", to="nobody@example.com", data={})
    assert refused.refusal is not None
    assert refused.refusal.reason == "no_consent"
    await conn.execute(
        "INSERT INTO contacts (email, email_hash) VALUES ('fan@example.com', $1)",
        address_hash("fan@example.com"),
    )
    await conn.execute(
        "INSERT INTO consents (contact_id, channel, action, kind, source, obtained_at) "
        "SELECT id, 'email', 'grant', 'express', 'checkout form', now() - interval '1 day' "
        "FROM contacts WHERE email = 'fan@example.com'"
    )
    accepted = await enqueue(store, template="winter_offer", to="fan@example.com", data={})
    assert accepted.accepted
    kind = await conn.fetchval(
        "SELECT consent_kind FROM transactional_messages WHERE id = $1", accepted.message_id
    )
    assert kind == "express"


async def test_bad_requests_name_the_field_and_write_nothing(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    store = store_of(stores)
    with pytest.raises(UnknownTemplate, match="template"):
        await enqueue(store, template="no_such", to="a@example.com", data={})
    with pytest.raises(EnqueueError, match=r"^to:"):
        await enqueue(store, template="parts_received", to="not an address", data=PARTS)
    with pytest.raises(EnqueueError, match=r"^data:.*part"):
        await enqueue(store, template="parts_received", to="a@example.com", data={"order": "1"})
    assert await conn.fetchval("SELECT count(*) FROM transactional_messages") == 0
    assert await conn.fetchval("SELECT count(*) FROM contacts") == 0


def commercial_templates(tmp_path: Path) -> Path:
    """A folder with the shipped layouts and a commercial template (consent rules apply)."""
    folder = tmp_path / "transactional"
    folder.mkdir()
    for name in ("layout.html", "layout.txt", "_sender.html", "_sender.txt"):
        shutil.copy(TEMPLATES / name, folder / name)
    (folder / "winter_offer.toml").write_text(
        'basis = "commercial"\ntopic = "offers"\nlocales = ["en"]\n'
        'subject = { en = "Winter tires: 10 % off" }\n'
        'from_name = "Garage Tremblay"\nfrom_address = "offers@garage-tremblay.example"\n'
        '[sender]\nbusiness_name = "Garage Tremblay"\npostal_address = "1 Main St"\n'
        'phone = "+1 418-555-0142"\n',
        encoding="utf-8",
    )
    (folder / "winter_offer.html").write_text(
        "<p>10 % off winter tires.</p><p>{{ consent_sentence }}</p>"
        "<p>{{ sender.business_name }}, {{ sender.postal_address }}, {{ sender.phone }}</p>"
        '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a> '
        '<a href="{{ preferences_url }}">Preferences</a></p>',
        encoding="utf-8",
    )
    return folder


async def test_an_edited_template_file_is_a_new_version_for_the_next_message(
    stores: Stores, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    folder = tmp_path / "transactional"
    shutil.copytree(TEMPLATES, folder)
    store = store_of(stores, folder)
    first = await enqueue(store, template="parts_received", to="a@example.com", data=PARTS)
    html = folder / "parts_received.html"
    html.write_text(html.read_text(encoding="utf-8").replace("Hello", "Hi"), encoding="utf-8")
    second = await enqueue(store, template="parts_received", to="a@example.com", data=PARTS)
    versions = await conn.fetch(
        "SELECT template_version_id FROM transactional_messages WHERE id = ANY($1::bigint[]) "
        "ORDER BY id",
        [first.message_id, second.message_id],
    )
    assert versions[0]["template_version_id"] != versions[1]["template_version_id"]
