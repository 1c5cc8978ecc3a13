from __future__ import annotations

import csv
import hashlib
import io
import zipfile
from pathlib import Path

import asyncpg

from mailer.compliance import archive
from mailer.demo.stores import Stores
from tests.engine_setup import add_contacts, engine_for, sample_campaign, settings_for
from tests.smtp_servers import smtp_server


async def test_every_sent_message_re_renders_to_the_exact_bytes_the_sink_received(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    await add_contacts(conn, 6)
    campaign = await sample_campaign(stores)
    with smtp_server() as (port, sink):
        await engine_for(stores, settings_for(port)).run(until_idle=True)
    received = {hashlib.sha256(m.data.replace(b"\r\n", b"\n")).hexdigest() for m in sink.messages}
    ids = [r["id"] for r in await conn.fetch("SELECT id FROM deliveries WHERE status = 'sent'")]
    assert len(ids) == 6
    for delivery_id in ids:
        row = await stores.compliance.archive_by_delivery(delivery_id)
        assert row is not None
        again = archive.reproduce_row(row)
        assert again.verified
        # aiosmtpd hands over the content with its own line endings: compare normalised.
        assert hashlib.sha256(again.data.replace(b"\r\n", b"\n")).hexdigest() in received
    assert campaign


async def test_the_export_bundles_each_message_with_the_consent_that_justified_it(
    stores: Stores, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await add_contacts(conn, 3)
    campaign = await sample_campaign(stores)
    with smtp_server() as (port, _sink):
        await engine_for(stores, settings_for(port)).run(until_idle=True)
    out = tmp_path / "export.zip"
    counts = await archive.export_campaign(stores.compliance, campaign, "c", out)
    assert (counts.messages, counts.verified, counts.erased) == (3, 3, 0)
    with zipfile.ZipFile(out) as bundle:
        rows = list(csv.DictReader(io.TextIOWrapper(bundle.open("c-consents.csv"), "utf-8")))
        assert {r["consent_kind"] for r in rows} == {"express"}
        assert {r["consent_source"] for r in rows} == {"Salon E-commerce Paris"}
        for r in rows:
            assert hashlib.sha256(bundle.read(r["eml"])).hexdigest() == r["sha256"]
        assert len([n for n in bundle.namelist() if n.endswith(".eml")]) == 3


async def test_an_erased_recipient_stays_in_the_export_with_hash_and_consent_but_no_message(
    stores: Stores, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await add_contacts(conn, 2)
    campaign = await sample_campaign(stores)
    with smtp_server() as (port, _sink):
        await engine_for(stores, settings_for(port)).run(until_idle=True)
    await conn.execute(
        "UPDATE archive SET render_inputs = jsonb_build_object('erased_at', now()) "
        "WHERE delivery_id = (SELECT min(delivery_id) FROM archive)"
    )
    counts = await archive.export_campaign(stores.compliance, campaign, "c", tmp_path / "e.zip")
    assert (counts.messages, counts.verified, counts.erased, counts.complete) == (2, 1, 1, True)
