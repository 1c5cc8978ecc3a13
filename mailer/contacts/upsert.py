"""Contacts as JSON items (the API's upsert) through the import's own rules and merge.

One implementation: each item becomes the cells of a CSV line and goes through the same
parser (mailer/contacts/csvfile.py) and the same set-based merge (ContactImport) as
`mailer contacts import`, so an API push and a file import of the same people write the
same contacts, ledger rows and topics. All or nothing: any invalid item refuses the whole
request, each rejection named by its index and field.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mailer.contacts.batches import Tally, chunks
from mailer.contacts.cells import RowError
from mailer.contacts.csvfile import COLUMN_ORDER, ContactRow, Defaults, Rejected
from mailer.contacts.csvfile import _RowParser as RowParser  # the CSV's own row rules
from mailer.contacts.store import Conn, ContactStore, ImportResult

_NONE: Mapping[str, Any] = {}
assert COLUMN_ORDER == (
    "email", "name", "locale", "consent", "consent_source", "consent_date", "consent_ends",
    "channel", "topics", "last_activity", "tracking",
)  # fmt: skip  # _cells lists them in this order

# Where a parser complaint ("consent_date: …") points in a JSON item.
_FIELD = {
    "email": "/email",
    "name": "/name",
    "locale": "/locale",
    "consent": "/consent/kind",
    "consent_source": "/consent/source",
    "consent_date": "/consent/obtained_at",
    "consent_ends": "/consent/ends_at",
    "channel": "/consent/channel",
    "topics": "/topics",
    "last_activity": "/last_activity",
    "tracking": "/tracking",
}


@dataclass(frozen=True, slots=True)
class ItemError:
    """One rejected item: its index in the request, the field (JSON pointer), why."""

    index: int
    pointer: str
    reason: str


class ItemsRejected(ValueError):
    """Some items are invalid; nothing was written."""

    def __init__(self, errors: Sequence[ItemError]) -> None:
        super().__init__(f"{len(errors)} invalid item(s): nothing was written")
        self.errors = list(errors)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ";".join(str(v) for v in value)
    return str(value)


def _cells(item: Mapping[str, Any], attr_keys: Sequence[str]) -> list[str]:
    """The item as a CSV line's cells, in COLUMN_ORDER (strings pass as they are)."""
    get = item.get
    consent = get("consent") or _NONE
    attributes = get("attributes") or _NONE
    values = [
        get("email"),
        get("name"),
        get("locale"),
        consent.get("kind"),
        consent.get("source"),
        consent.get("obtained_at"),
        consent.get("ends_at"),
        consent.get("channel"),
        get("topics"),
        get("last_activity"),
        get("tracking"),
        *(attributes.get(k) for k in attr_keys),
    ]
    return [v if type(v) is str else _cell(v) for v in values]


def _pointer(message: str) -> tuple[str, str]:
    field, _, reason = message.partition(": ")
    if field.startswith("column ") and "attr." in field:
        return "/attributes", message
    return _FIELD.get(field, ""), reason or message


def parse_items(
    items: Sequence[Mapping[str, Any]], topics: Mapping[str, int], now: datetime
) -> list[ContactRow]:
    """Each item as the import's row, or ItemsRejected naming every bad item."""
    attr_keys = sorted({k for item in items for k in (item.get("attributes") or {})})
    columns = [*COLUMN_ORDER, *(f"attr.{k}" for k in attr_keys)]
    parse = RowParser(columns, Defaults(channel="email"), topics, now)
    rows: list[ContactRow] = []
    errors: list[ItemError] = []
    for index, item in enumerate(items):
        try:
            rows.append(parse(index + 1, _cells(item, attr_keys)))
        except RowError as exc:
            pointer, reason = _pointer(str(exc))
            errors.append(ItemError(index, pointer, reason))
    if errors:
        raise ItemsRejected(errors)
    return rows


async def upsert_contacts(
    store: ContactStore,
    items: Sequence[Mapping[str, Any]],
    *,
    origin: str,
    default_locale: str,
    conn: Conn | None = None,
    body_sha256: bytes | None = None,
) -> ImportResult:
    """Create or update contacts with their consents and topics, all or nothing.

    `origin` is what the ledger's evidence names as the file ("api:<key prefix>"); each
    grant's evidence names the item by `line` (its index + 1). An item repeated in the
    request is applied in order, as a repeated CSV line is.
    """
    topics = {t.slug: t.id for t in await store.topics_list()}
    rows = parse_items(items, topics, datetime.now(UTC))
    tally = Tally(valid=0)

    def refused(row: Rejected) -> None:  # pragma: no cover - every row parsed above
        raise AssertionError(row)

    # What the import record keeps as the "file's" hash: the request body's, if given.
    digest = (
        body_sha256
        or hashlib.sha256(json.dumps(list(items), sort_keys=True, default=str).encode()).digest()
    )
    async with store.contact_import(
        file_name=origin, default_locale=default_locale, conn=conn
    ) as session:
        for chunk in chunks(rows, tally, refused, size=len(rows) or 1):
            for batch in chunk.batches:
                await session.load(batch)
                await session.merge()
        return await session.finish(
            valid=len(rows),
            rejected=0,
            file_sha256=digest,
            encoding="json",
            delimiter="",
        )
