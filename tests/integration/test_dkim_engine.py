"""DKIM through the real engine: what the SMTP sink receives verifies with dkimpy."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import asyncpg
import pytest

from mailer.compliance import archive
from mailer.core.settings import Settings, load
from mailer.demo.stores import Stores
from tests.dkim_setup import dns_stub, ed25519_pem, rsa_pem, signatures, verify_each, write_key
from tests.engine_setup import add_contacts, engine_for, sample_campaign, settings_for
from tests.smtp_servers import smtp_server

FROM_DOMAIN = "garage-tremblay.example"  # templates/service_reminder.toml's from_address


def with_dkim(settings: Settings, folder: Path) -> Settings:
    """`settings` with the DKIM keys as an operator configures them (environment, key files)."""
    loaded = load(
        environ={
            "MAILER_SENDER_DKIM_SELECTOR": "s2024",
            "MAILER_SENDER_DKIM_KEY_FILE": write_key(folder, "rsa.pem", rsa_pem()),
            "MAILER_SENDER_DKIM_ED25519_SELECTOR": "ed2024",
            "MAILER_SENDER_DKIM_ED25519_KEY_FILE": write_key(folder, "ed.pem", ed25519_pem()),
        }
    )
    return dataclasses.replace(settings, sender=loaded.sender, dkim_keys=loaded.dkim_keys)


@pytest.mark.parametrize("render_processes", [1, 0], ids=["render process", "on the loop"])
async def test_every_message_the_sink_receives_carries_rsa_and_ed25519_signatures_that_verify(
    stores: Stores, conn: asyncpg.Connection, tmp_path: Path, render_processes: int
) -> None:
    await add_contacts(conn, 6, domains=("a.example", "b.example"))
    await sample_campaign(stores)
    with smtp_server() as (port, sink):
        settings = with_dkim(settings_for(port, render_processes=render_processes), tmp_path)
        progress = await engine_for(stores, settings).run(until_idle=True)
    assert progress.by_status == {"sent": 6}
    dns = dns_stub(settings.dkim_keys, FROM_DOMAIN)
    for received in sink.messages:
        assert verify_each(received.data, dns) == [True, True], received.rcpt
        tags = signatures(received.data)
        assert [(t["a"], t["s"], t["d"]) for t in tags] == [
            ("rsa-sha256", "s2024", FROM_DOMAIN),
            ("ed25519-sha256", "ed2024", FROM_DOMAIN),
        ]
        # RFC 8058 s.4: the one-click fields are under the signature.
        assert {"list-unsubscribe", "list-unsubscribe-post"} <= set(tags[0]["h"].split(":"))
    # The archive reproduces the signed bytes (its hash covers them) and they still verify.
    for delivery_id in [r["id"] for r in await conn.fetch("SELECT id FROM deliveries")]:
        row = await stores.compliance.archive_by_delivery(delivery_id)
        assert row is not None
        again = archive.reproduce_row(row)
        assert again.verified
        assert again.data in {m.data for m in sink.messages}
        assert verify_each(again.data, dns) == [True, True]


async def test_without_dkim_settings_messages_go_unsigned_for_the_relay_to_sign(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    await add_contacts(conn, 2)
    await sample_campaign(stores)
    with smtp_server() as (port, sink):
        await engine_for(stores, settings_for(port)).run(until_idle=True)
    assert len(sink.messages) == 2
    assert all(signatures(m.data) == [] for m in sink.messages)
