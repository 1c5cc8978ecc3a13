"""A batch of parsed rows as the bytes of a binary COPY into the import's staging table.

Built on the reader's thread, as the file is parsed (mailer/contacts/imports.py),
not on the event loop that talks to Postgres: asyncpg's own encoding of
records cost that loop ~6 µs a row while Postgres waited for the COPY. Here most cells
are the same few values throughout a file (locale, channel, kind, source,
dates, topic lists, attribute values), so their encodings are cached and a
row is mostly a join of ready bytes. The binary format, not text: Postgres
then reads each timestamp as an integer instead of parsing its text, and the
backend is the import's bottleneck.

Format: https://www.postgresql.org/docs/15/sql-copy.html ("Binary Format"):
a signature, flags and header extension, then per row a 16-bit field count
and each field as a 32-bit length (-1 for NULL) and its bytes in the type's
binary (send/recv) form; a 16-bit -1 ends the data.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from functools import lru_cache
from struct import Struct

from mailer.contacts.csvfile import ContactRow

HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
_NULL = b"\xff\xff\xff\xff"
_TRUE = b"\x00\x00\x00\x01\x01"
_FALSE = b"\x00\x00\x00\x01\x00"
_INT4 = Struct(">hii")  # the row's field count, then the line: length 4, value
_INT8_FIELD = Struct(">iq")
_LENGTH = Struct(">i")
_ARRAY = Struct(">iiiiii")  # length, ndim, has-null flag, element type, dimension, lower bound
_ELEMENT = Struct(">iq")
_INT8_OID = 20  # bigint: array_recv refuses elements of another type
# timestamptz is sent as microseconds since 2000-01-01 00:00 UTC (integer datetimes).
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_FIELD_COUNT = 16  # the staging table's columns, in ContactRow's order
# A 32-byte SHA-256 digest as bytea: its length, then itself.
_HASH_LENGTH = _LENGTH.pack(32)


def encode(rows: Iterable[ContactRow]) -> bytes:
    """The whole COPY data of one batch: header, one tuple per row, trailer."""
    parts = [HEADER]
    add = parts.append
    start, length = _INT4.pack, _LENGTH.pack
    contact, consent = _CONTACT_PARTS, _CONSENT_PARTS
    for r in rows:
        email = r.email.encode()
        add(start(_FIELD_COUNT, 4, r.line) + length(len(email)) + email + _HASH_LENGTH)
        add(r.email_hash)
        if r.name is None:
            add(_NULL)
        else:
            name = r.name.encode()
            add(length(len(name)) + name)
        # The other cells in two groups whose combinations recur through a
        # file (locales, attributes, activity dates; kinds, sources, consent
        # dates, topics): each group's bytes are built once.
        key = r[4:8]
        part = contact.get(key)
        if part is None:
            part = _keep(contact, key, _contact_part(r))
        add(part)
        given = r[8:]
        part = consent.get(given)
        if part is None:
            part = _keep(consent, given, _consent_part(r))
        add(part)
    add(TRAILER)
    return b"".join(parts)


_CONTACT_PARTS: dict[tuple[object, ...], bytes] = {}
_CONSENT_PARTS: dict[tuple[object, ...], bytes] = {}
_KEPT = 65_536  # entries per group: memory stays bounded whatever the file


def _keep(parts: dict[tuple[object, ...], bytes], key: tuple[object, ...], data: bytes) -> bytes:
    if len(parts) >= _KEPT:
        parts.clear()
    parts[key] = data
    return data


def _contact_part(r: ContactRow) -> bytes:
    """locale, attributes, last_activity_at, tracking."""
    return b"".join(
        (
            _NULL if r.locale is None else _cached_text(r.locale),
            _cached_text(r.attributes),
            _NULL if r.last_activity_at is None else _timestamp(r.last_activity_at),
            _NULL if r.tracking is None else (_TRUE if r.tracking else _FALSE),
        )
    )


def _consent_part(r: ContactRow) -> bytes:
    """channel, kind, source, obtained_at, ends_at, topics, the two date-only flags."""
    return b"".join(
        (
            _cached_text(r.channel),
            _NULL if r.kind is None else _cached_text(r.kind),
            _NULL if r.source is None else _cached_text(r.source),
            _NULL if r.obtained_at is None else _timestamp(r.obtained_at),
            _NULL if r.ends_at is None else _timestamp(r.ends_at),
            _topics(tuple(r.topics)),
            _TRUE if r.obtained_date_only else _FALSE,
            _TRUE if r.ends_date_only else _FALSE,
        )
    )


def _text(value: str) -> bytes:
    data = value.encode()
    return _LENGTH.pack(len(data)) + data


# Values that repeat across a file's rows (attributes: a few thousand distinct).
_cached_text = lru_cache(maxsize=65_536)(_text)


@lru_cache(maxsize=16_384)
def _timestamp(value: datetime) -> bytes:
    delta = value - _PG_EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return _INT8_FIELD.pack(8, micros)


@lru_cache(maxsize=1024)
def _topics(ids: tuple[int, ...]) -> bytes:
    if not ids:  # an empty array has no dimensions
        return _LENGTH.pack(12) + _LENGTH.pack(0) + _LENGTH.pack(0) + _LENGTH.pack(_INT8_OID)
    body = b"".join(_ELEMENT.pack(8, i) for i in ids)
    return _ARRAY.pack(20 + len(body), 1, 0, _INT8_OID, len(ids), 1) + body
