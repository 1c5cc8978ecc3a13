"""Expiry of unconfirmed sign-ups deletes the person's data everywhere the sign-up put it
(issue 17, GDPR art. 5(1)(e)): the request, and what its confirmation mail left on the
transactional lane (the message's values and archive, and the contact the lane created).

Driven from the outside: sign-ups through the tracker's POST /s/FORM, the confirmations sent
by the lane to a real SMTP sink, the clock moved past expiry, the tracker's own sweep."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from mailer.core.addresses import address_hash
from tests.integration.test_inbound_privacy import where_found
from tests.integration.test_signup import sign_up
from tests.signup_setup import deliver_queued, make_form, signup_settings
from tests.smtp_servers import RecordingHandler, smtp_server
from tracker.app import create_app

STRANGER = "jamais.confirme@example.net"  # unknown before signing up
KNOWN = "deja.cliente@example.net"  # a customer with consent who signs up again


@pytest.fixture
def sink() -> Iterator[tuple[int, RecordingHandler]]:
    with smtp_server() as server:
        yield server


async def _known_customer(conn: asyncpg.Connection) -> int:
    contact: int = await conn.fetchval(
        "INSERT INTO contacts (email, email_hash, name) VALUES ($1, $2, 'Céline') RETURNING id",
        KNOWN,
        address_hash(KNOWN),
    )
    await conn.execute(
        "INSERT INTO consents (contact_id, channel, action, kind, source, obtained_at)"
        " VALUES ($1, 'email', 'grant', 'express', 'import', now())",
        contact,
    )
    return contact


async def _expire_all_and_sweep(conn: asyncpg.Connection) -> None:
    """Move the requests past their time; the running tracker's sweep deletes them."""
    await conn.execute("UPDATE signup_requests SET expires_at = now() - interval '1 second'")
    for _ in range(300):  # 30 s at most for a loaded machine; returns at the first sweep
        if await conn.fetchval("SELECT count(*) FROM signup_requests") == 0:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the tracker's sweep did not delete the expired requests")


async def test_an_unconfirmed_sign_up_leaves_no_trace_of_the_address_after_expiry(
    db_url: str, conn: asyncpg.Connection, sink: tuple[int, RecordingHandler]
) -> None:
    await make_form(db_url)
    settings = signup_settings(db_url, expiry_interval_s=1, ip_prefix_limit=1000)
    async with TestClient(TestServer(create_app(settings))) as client:
        status, _ = await sign_up(client, STRANGER.upper())
        assert status == 200
        port, handler = sink
        assert await deliver_queued(db_url, settings, port) == 1
        assert [m.rcpt for m in handler.messages] == [STRANGER]
        # The lane made a contact (no consent) to send to: before the fix it stayed for good.
        assert await where_found(conn, STRANGER) != []

        await _expire_all_and_sweep(conn)
        metrics = await (await client.get("/metrics")).text()
        assert 'tracker_signup_total{form="infolettre",step="expired"} 1.0' in metrics

    assert await where_found(conn, STRANGER) == []
    assert await where_found(conn, "jamais.confirme") == []
    assert await conn.fetchval(
        "SELECT count(*) FROM contacts WHERE email_hash = $1", address_hash(STRANGER)
    ) == 0  # fmt: skip
    # The message stays as proof a mail went (template, state, Message-ID, SHA-256), naming
    # no one: no values, no SMTP reply, no render inputs, no contact.
    message = await conn.fetchrow("SELECT * FROM transactional_messages")
    assert message is not None
    assert message["status"] == "sent"
    assert message["data"] == "{}"
    assert message["smtp_reply"] is None
    assert message["contact_id"] is None
    assert message["sha256"] is not None
    assert set(json.loads(message["render_inputs"])) == {"erased_at", "message_id", "date"}


async def test_a_known_customer_who_never_confirms_keeps_their_contact_and_consent(
    db_url: str, conn: asyncpg.Connection, sink: tuple[int, RecordingHandler]
) -> None:
    await make_form(db_url)
    contact = await _known_customer(conn)
    settings = signup_settings(db_url, expiry_interval_s=1, ip_prefix_limit=1000)
    async with TestClient(TestServer(create_app(settings))) as client:
        assert (await sign_up(client, KNOWN))[0] == 200
        assert (await sign_up(client, STRANGER))[0] == 200
        port, _ = sink
        assert await deliver_queued(db_url, settings, port) == 2
        await _expire_all_and_sweep(conn)

    kept = await conn.fetchrow("SELECT id, email, name FROM contacts WHERE email = $1", KNOWN)
    assert kept is not None
    assert (kept["id"], kept["name"]) == (contact, "Céline")
    assert await conn.fetchval("SELECT count(*) FROM consents WHERE contact_id = $1", contact) == 1
    # Their confirmation message is scrubbed all the same, and still names its contact.
    message = await conn.fetchrow(
        "SELECT contact_id, data, smtp_reply FROM transactional_messages WHERE contact_id = $1",
        contact,
    )
    assert message is not None
    assert (message["data"], message["smtp_reply"]) == ("{}", None)
    # Only the known customer's own row holds their address; the stranger is gone.
    assert await where_found(conn, KNOWN) == ["contacts.email"]
    assert await where_found(conn, STRANGER) == []


async def test_contacts_are_still_never_deleted_outside_the_sweep_or_with_a_ledger_row(
    db_url: str, conn: asyncpg.Connection
) -> None:
    contact = await _known_customer(conn)
    with pytest.raises(asyncpg.RaiseError, match="never deleted"):
        await conn.execute("DELETE FROM contacts WHERE id = $1", contact)
    async with conn.transaction():
        await conn.execute("SELECT set_config('mailer.delete_unreferenced_contacts', 'on', true)")
        with pytest.raises(asyncpg.RaiseError, match="never deleted"):
            await conn.execute("DELETE FROM contacts WHERE id = $1", contact)
    assert await conn.fetchval("SELECT count(*) FROM contacts") == 1
