"""The message archive: reproduce any sent message byte for byte and prove it by its hash.

For every message handed to SMTP the engine stored the template version and
the render inputs, and the SHA-256 of the exact bytes. Re-rendering from
them must give the same bytes; an export bundles the messages as .eml files
with the consent that justified each (CASL s.13: the sender proves consent).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailer.campaigns.message import reproduce
from mailer.campaigns.render import Renderer
from mailer.campaigns.template_set import TemplateSet
from mailer.compliance.store import ComplianceStore
from mailer.core.spreadsheet import csv_writer

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


def erased(row: dict[str, Any]) -> bool:
    """True when the recipient was erased: the render inputs are gone, the hash is kept."""
    return "erased_at" in row["render_inputs"]


def reproduce_row(row: dict[str, Any], renderers: dict[str, Renderer] | None = None) -> Reproduced:
    """Re-render one archived message and compare its hash with the one taken at send time."""
    if erased(row):
        raise ValueError(f"delivery {row['delivery_id']}: recipient erased, message not kept")
    templates = TemplateSet(row["template"], row["files"])
    key = templates.sha256()
    cache = renderers if renderers is not None else {}
    renderer = cache.get(key)
    if renderer is None:
        renderer = cache[key] = Renderer(templates)
    data = reproduce(templates, row["render_inputs"], renderer=renderer)
    return Reproduced(data, bytes(row["sha256"]).hex(), hashlib.sha256(data).hexdigest())


@dataclass(frozen=True)
class ExportCounts:
    messages: int
    verified: int  # re-rendered to the exact bytes sent
    erased: int  # recipient erased: hash and consent kept, message not

    @property
    def complete(self) -> bool:
        return self.verified + self.erased == self.messages


async def export_campaign(
    store: ComplianceStore, campaign_id: int, slug: str, out: Path
) -> ExportCounts:
    """Write a zip: messages/<delivery>.eml and a consents CSV."""
    renderers: dict[str, Renderer] = {}
    count = verified = gone = 0
    # The table goes to a temporary file, not memory: a campaign may have millions of rows.
    table = tempfile.TemporaryFile("w+", encoding="utf-8", newline="")  # noqa: SIM115
    writer = csv_writer(table)
    writer.writerow(CSV_COLUMNS)
    with table, zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        async for row in store.archive_for_campaign(campaign_id):
            count += 1
            if erased(row):
                # GDPR art. 17: the message cannot be rebuilt; its hash and the
                # consent it relied on stay on record.
                gone += 1
                writer.writerow(_csv_row(row, bytes(row["sha256"]).hex(), "erased", ""))
                continue
            again = reproduce_row(row, renderers)
            name = f"messages/{row['delivery_id']}.eml"
            bundle.writestr(name, again.data)
            verified += again.verified
            writer.writerow(_csv_row(row, again.stored_sha256, str(again.verified), name))
        table.seek(0)
        with bundle.open(f"{slug}-consents.csv", "w") as target:
            for line in table:
                target.write(line.encode("utf-8"))
    return ExportCounts(count, verified, gone)


def _csv_row(row: dict[str, Any], sha256: str, verified: str, eml: str) -> list[Any]:
    return [
        row["delivery_id"],
        row["email"] or "(erased)",
        row["sent_at"],
        row["message_id"],
        sha256,
        verified,
        row["consent_kind"] or "",
        row["consent_source"] or "",
        row["consent_obtained_at"] or "",
        json.dumps(row["consent_evidence"], ensure_ascii=False),
        eml,
    ]
