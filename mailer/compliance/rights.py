"""A person's data rights, as one operation under `mailer contacts export|erase` and the
console's contact page: the access export (GDPR art. 15, PIPEDA principle 4.9) and the
erasure (GDPR art. 17) that keeps only a hashed suppression."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from mailer.compliance.privacy import (
    ERASE_RULE,
    EVIDENCE_KEPT,
    Erasure,
    erasure_of,
    export_document,
)
from mailer.compliance.store import ComplianceStore, Conn
from mailer.core.addresses import address_hash


async def export_contact(store: ComplianceStore, email: str, now: datetime) -> dict[str, Any]:
    """Everything held about `email` (normalised), as the export document."""
    tables = await store.contact_export(email, address_hash(email))
    return export_document(email, tables, now)


async def erase_contact(
    store: ComplianceStore, email: str, requested_by: str | None, conn: Conn | None = None
) -> Erasure:
    """Erase `email`'s personal data everywhere; ErasureBusy while a message to it is in
    flight. With `conn`, in the caller's transaction (the API logs the erasure in it)."""
    return erasure_of(
        await store.contact_erase(
            email,
            address_hash(email),
            rule=ERASE_RULE,
            os_user=requested_by,
            evidence_kept=EVIDENCE_KEPT,
            conn=conn,
        )
    )
