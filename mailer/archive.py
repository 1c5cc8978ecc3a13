"""The message archive: reproduce any sent message byte for byte and prove it by its hash.

For every message handed to SMTP the engine stored the template version and
the render inputs, and the SHA-256 of the exact bytes. Re-rendering from
them must give the same bytes; an export bundles the messages as .eml files
with the consent that justified each (CASL s.13: the sender proves consent).
"""

from __future__ import annotations

import csv
import hashlib
import json
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailer.message import reproduce
from mailer.render import Renderer, TemplateSet
from mailer.store import Store

CSV_COLUMNS = (
    "delivery_id",
    "email",
    "sent_at",
    "message_id",
    "sha256",
    "hash_verified",
    "consent_kind",
    "consent_source",
    "consent_obtained_at",
    "consent_evidence",
    "eml",
)


@dataclass(frozen=True)
class Reproduced:
    data: bytes
    stored_sha256: str
    sha256: str

    @property
    def verified(self) -> bool:
        return self.stored_sha256 == self.sha256


def reproduce_row(row: dict[str, Any], renderers: dict[str, Renderer] | None = None) -> Reproduced:
    """Re-render one archived message and compare its hash with the one taken at send time."""
    templates = TemplateSet(row["template"], row["files"])
    key = templates.sha256()
    cache = renderers if renderers is not None else {}
    renderer = cache.get(key)
    if renderer is None:
        renderer = cache[key] = Renderer(templates)
    data = reproduce(templates, row["render_inputs"], renderer=renderer)
    return Reproduced(data, bytes(row["sha256"]).hex(), hashlib.sha256(data).hexdigest())


async def export_campaign(store: Store, campaign_id: int, slug: str, out: Path) -> tuple[int, int]:
    """Write a zip: messages/<delivery>.eml and consents.csv; return (messages, verified)."""
    renderers: dict[str, Renderer] = {}
    count = verified = 0
    # The table goes to a temporary file, not memory: a campaign may have millions of rows.
    table = tempfile.TemporaryFile("w+", encoding="utf-8", newline="")  # noqa: SIM115
    writer = csv.writer(table)
    writer.writerow(CSV_COLUMNS)
    with table, zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        async for row in store.archive_for_campaign(campaign_id):
            again = reproduce_row(row, renderers)
            name = f"messages/{row['delivery_id']}.eml"
            bundle.writestr(name, again.data)
            count += 1
            verified += again.verified
            writer.writerow(
                [
                    row["delivery_id"],
                    row["email"] or "(erased)",
                    row["sent_at"],
                    row["message_id"],
                    again.stored_sha256,
                    again.verified,
                    row["consent_kind"] or "",
                    row["consent_source"] or "",
                    row["consent_obtained_at"] or "",
                    json.dumps(row["consent_evidence"], ensure_ascii=False),
                    name,
                ]
            )
        table.seek(0)
        with bundle.open(f"{slug}-consents.csv", "w") as target:
            for line in table:
                target.write(line.encode("utf-8"))
    return count, verified
