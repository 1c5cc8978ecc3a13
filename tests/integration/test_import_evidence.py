"""The ledger evidence an import writes (CASL s.13: proof of consent), as built per batch.

The import builds each grant's evidence from the part common to the file ({import_id,
file}) and the line: whatever the file is called, the evidence is that object, exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg

from mailer.contacts import imports
from mailer.contacts.csvfile import Defaults
from mailer.demo.stores import Stores

HEADER = "email,name,consent,consent_source,consent_date\n"


async def test_each_grant_evidence_names_the_import_the_file_and_the_line(
    stores: Stores, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    path = tmp_path / 'clients "Côté" 2025.csv'  # a name JSON must escape
    path.write_text(
        HEADER
        + "a@example.org,A,express,salon,2025-01-02\n"
        + "b@example.org,B,,,\n"  # no consent stated: no grant, no evidence
        + "c@example.org,C,implied_purchase,facture,2024-03-04\n",
        encoding="utf-8",
    )
    outcome = await imports.import_contacts(
        stores.contacts, path, Defaults(), default_locale="en", skip_invalid=False
    )
    rows = await conn.fetch(
        "SELECT c.email, l.evidence FROM consents l JOIN contacts c ON c.id = l.contact_id "
        "ORDER BY c.email"
    )
    import_id = outcome.result.import_id
    assert [(r["email"], json.loads(r["evidence"])) for r in rows] == [
        ("a@example.org", {"import_id": import_id, "file": path.name, "line": 2}),
        ("c@example.org", {"import_id": import_id, "file": path.name, "line": 4}),
    ]
    # Stored as one JSON object, not as text that looks like one.
    kinds = await conn.fetch("SELECT DISTINCT jsonb_typeof(evidence) AS t FROM consents")
    assert [k["t"] for k in kinds] == ["object"]
