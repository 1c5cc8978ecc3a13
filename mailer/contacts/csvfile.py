"""Reading and validating a contacts CSV: one `ContactRow` or one `Rejected` per line.

Columns (header names, case-insensitive; only `email` is required):

| column         | meaning                                                         |
|----------------|-----------------------------------------------------------------|
| email          | the address (validated and normalised, no DNS lookup)          |
| name           | display name                                                    |
| locale         | language for messages and pages, e.g. `fr`, `en`, `fr-CA`       |
| consent        | kind: express, implied_purchase, implied_contract,              |
|                | implied_inquiry, implied_publication (or purchase, contract,    |
|                | inquiry, publication)                                           |
| consent_source | where the consent was obtained ("Salon E-commerce Paris")       |
| consent_date   | when it was obtained: YYYY-MM-DD (a calendar date, printed as   |
|                | given) or ISO 8601 date-time (UTC if no offset; printed as its  |
|                | day in the sender's zone)                                       |
| consent_ends   | end of an ongoing contract / of a publication's relevance (same |
|                | forms)                                                          |
| channel        | email (default), sms, postal, phone                             |
| topics         | topic slugs separated by `;` the contact subscribes to          |
| last_activity  | date of the last purchase, visit or reply                       |
| tracking       | true/false: open and click tracking for this contact            |
| attr.<key>     | any number of free attributes (segments filter on them)         |

The delimiter (`,`, `;` or tab) is read from the header line and the encoding
is UTF-8 unless told otherwise (mailer/contacts/textfile.py). Command-line
defaults fill columns a file lacks or leaves empty. Reading is a stream:
memory does not grow with the file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import IO, NamedTuple

from mailer.contacts import cells
from mailer.contacts.cells import CANONICAL_KINDS, KINDS, RowError
from mailer.contacts.textfile import CsvRecords, Dialect, FileError
from mailer.core.addresses import InvalidAddress, address_hash, mailable, normalise
from mailer.core.spreadsheet import SafeWriter, csv_writer

__all__ = ["ContactFile", "ContactRow", "Defaults", "Dialect", "FileError", "Rejected"]

# In the order _RowParser unpacks their positions.
COLUMN_ORDER = (
    "email",
    "name",
    "locale",
    "consent",
    "consent_source",
    "consent_date",
    "consent_ends",
    "channel",
    "topics",
    "last_activity",
    "tracking",
)
COLUMNS = frozenset(COLUMN_ORDER)
ATTR_PREFIX = "attr."
# Longest cell accepted, in characters: a name, a source, an attribute value.
MAX_FIELD = 1000


@dataclass(frozen=True)
class Defaults:
    """Values from the command line for columns the file lacks or leaves empty."""

    consent: str | None = None
    source: str | None = None
    consent_date: str | None = None
    channel: str = "email"
    locale: str | None = None
    topics: str | None = None


class ContactRow(NamedTuple):
    """One valid line, fields in the staging table's column order (it is COPY'd as is).

    A NamedTuple rather than a frozen dataclass: building one costs 0.3 µs
    instead of 3 µs, a tenth of the whole per-row budget.
    """

    line: int
    email: str
    email_hash: bytes
    name: str | None
    locale: str | None
    # The attr.<key> columns as a JSON object (text, COPY'd into jsonb).
    attributes: str
    last_activity_at: datetime | None
    tracking: bool | None
    channel: str
    kind: str | None
    source: str | None
    obtained_at: datetime | None
    ends_at: datetime | None
    # Ids of the topics listed (the slugs checked against the topics table).
    topics: tuple[int, ...]
    # consent_date / consent_ends were calendar dates, without a time (mailer.core.consent_dates).
    obtained_date_only: bool
    ends_date_only: bool


@dataclass(frozen=True, slots=True)
class Rejected:
    line: int
    reason: str
    raw: list[str]


class ContactFile:
    """An open contacts CSV: dialect and header settled on entry (FileError if unusable),
    then its rows streamed, each a ContactRow or a Rejected with its line."""

    def __init__(
        self,
        path: Path,
        defaults: Defaults,
        known_topics: Mapping[str, int],
        now: datetime,
        *,
        encoding: str | None = None,
        delimiter: str | None = None,
    ) -> None:
        self.path = path
        self._records = CsvRecords(path, encoding=encoding, delimiter=delimiter)
        self._defaults, self._topics, self._now = defaults, known_topics, now

    def __enter__(self) -> ContactFile:
        records = self._records.__enter__()
        try:
            self._iter = iter(records)
            header = next(self._iter, None)
            columns = _check_header(self.path, header[1] if header else None)
            self._parse = _RowParser(columns, self._defaults, self._topics, self._now)
        except BaseException:
            records.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._records.__exit__(exc_type, exc, tb)

    @property
    def dialect(self) -> Dialect:
        return self._records.dialect

    @property
    def sha256(self) -> bytes:
        """The file's SHA-256, once every row has been read."""
        return self._records.sha256

    def rows(self) -> Iterator[ContactRow | Rejected]:
        parse = self._parse
        for line, raw in self._iter:
            if not raw or (len(raw) == 1 and not raw[0].strip()):
                continue  # a blank line
            try:
                yield parse(line, raw)
            except RowError as exc:
                if not any(cell.strip() for cell in raw):
                    continue  # a line of empty cells (";;;;" from a spreadsheet)
                yield Rejected(line, str(exc), raw)


def read(
    path: Path,
    defaults: Defaults,
    known_topics: Mapping[str, int],
    now: datetime,
    *,
    encoding: str | None = None,
    delimiter: str | None = None,
) -> Iterator[ContactRow | Rejected]:
    """Stream the file's rows, validated; raise FileError when the file itself is unusable."""
    with ContactFile(
        path, defaults, known_topics, now, encoding=encoding, delimiter=delimiter
    ) as opened:
        yield from opened.rows()


def _check_header(path: Path, header: list[str] | None) -> list[str]:
    if not header or not any(name.strip() for name in header):
        raise FileError(f"{path}: empty file, expected a header line with an 'email' column")
    columns = [name.strip().lower() for name in header]
    if "email" not in columns:
        shown = ", ".join(repr(c[:40]) for c in columns[:8])
        raise FileError(f"{path}: line 1: no 'email' column (found {shown})")
    for i, name in enumerate(columns, start=1):
        if name not in COLUMNS and not (name.startswith(ATTR_PREFIX) and len(name) > 5):
            raise FileError(
                f"{path}: line 1, column {i}: unknown column {name[:60]!r} "
                f"(known: {', '.join(sorted(COLUMNS))}, or attr.<key>)"
            )
        if columns.count(name) > 1:
            raise FileError(f"{path}: line 1: column {name[:60]!r} appears twice")
    return columns


class _RowParser:
    """Turns one CSV record into a ContactRow; a few µs a row, so it avoids per-cell lookups."""

    def __init__(
        self, columns: list[str], defaults: Defaults, topics: Mapping[str, int], now: datetime
    ) -> None:
        self.columns = columns
        self.width = len(columns)
        # A column the file lacks reads the empty cell appended after the row's own.
        index = {name: i for i, name in enumerate(columns)}
        self.pos = tuple(index.get(name, self.width) for name in COLUMN_ORDER)
        self.attr_columns = [
            (i, json.dumps(c[len(ATTR_PREFIX) :], ensure_ascii=False))
            for i, c in enumerate(columns)
            if c.startswith(ATTR_PREFIX)
        ]
        self.defaults = defaults
        self.topic_ids = dict(topics)
        self.topic_slugs = frozenset(topics)
        self.listed: dict[str | None, tuple[int, ...]] = {}  # a topics cell's ids, by its text
        self.now = now

    def __call__(self, line: int, raw: list[str]) -> ContactRow:
        if len(raw) != self.width:
            raise RowError(
                f"expected {self.width} fields, found {len(raw)}"
                + (" (is the delimiter right? see --delimiter)" if len(raw) == 1 else "")
            )
        texts = [cell.strip() for cell in raw]
        if max(map(len, texts)) > MAX_FIELD:
            raise self._too_long(texts)
        texts.append("")
        (email_i, name_i, locale_i, consent_i, source_i, date_i, ends_i, channel_i, topics_i,
         activity_i, tracking_i) = self.pos  # fmt: skip
        d = self.defaults
        address = texts[email_i]
        if not address:
            raise RowError("email: empty")
        try:
            email = normalise(address)
        except InvalidAddress as exc:
            raise RowError(f"email: {address!r} is not valid: {exc}") from None
        if not mailable(email):
            # Stored, it would be skipped at every send ("not an ASCII address"): said here,
            # on its line, where the operator can still fix the file.
            raise RowError(
                f"email: {address!r} has a non-ASCII local part, which needs SMTPUTF8 "
                "(RFC 6531): this mailer cannot send to it"
            )
        kind_text = texts[consent_i] or d.consent
        kind = KINDS.get(kind_text.lower()) if kind_text else None
        if kind_text and kind is None:
            raise RowError(
                f"consent: unknown kind {kind_text!r} "
                f"(expected {', '.join(sorted(CANONICAL_KINDS))})"
            )
        source = obtained = ends = None
        obtained_date_only = ends_date_only = False
        if kind is not None:
            source = texts[source_i] or d.source
            obtained, obtained_date_only = cells.consent_when(
                texts[date_i] or d.consent_date, "consent_date"
            )
            ends, ends_date_only = cells.consent_when(texts[ends_i] or None, "consent_ends")
            if source is None:
                raise RowError("consent_source: required with a consent (or give --source)")
            if obtained is None:
                raise RowError("consent_date: required with a consent (or give --consent-date)")
            if obtained > self.now:
                raise RowError(f"consent_date: {obtained.date()} is in the future")
            if ends is not None and kind not in ("implied_contract", "implied_publication"):
                raise RowError("consent_ends: only for implied_contract or implied_publication")
            if ends is not None and ends < obtained:
                raise RowError("consent_ends: before consent_date")
        tracking_text = texts[tracking_i]
        return ContactRow(
            line,
            email,
            address_hash(email),
            texts[name_i] or None,
            cells.locale(texts[locale_i] or d.locale),
            self._attributes(texts) if self.attr_columns else "{}",
            cells.when(texts[activity_i] or None, "last_activity"),
            cells.flag(tracking_text) if tracking_text else None,
            cells.channel(texts[channel_i] or d.channel or "email"),
            kind,
            source,
            obtained,
            ends,
            self._topics(texts[topics_i] or d.topics),
            obtained_date_only,
            ends_date_only,
        )

    def _topics(self, text: str | None) -> tuple[int, ...]:
        ids = self.listed.get(text)
        if ids is None:
            slugs = cells.topics(text, self.topic_slugs)
            ids = self.listed[text] = tuple(self.topic_ids[slug] for slug in slugs)
        return ids

    def _too_long(self, texts: list[str]) -> RowError:
        i = next(i for i, cell in enumerate(texts) if len(cell) > MAX_FIELD)
        return RowError(
            f"column {i + 1} ({self.columns[i][:40]}): {len(texts[i]):,} characters, "
            f"longer than the limit of {MAX_FIELD:,}"
        )

    def _attributes(self, texts: list[str]) -> str:
        # Built as text from cached fragments: json.dumps of a dict per row
        # cost a fifth of the row budget.
        value = cells.attribute_json
        if len(self.attr_columns) == 1:
            i, key = self.attr_columns[0]
            return "{" + key + ":" + value(texts[i]) + "}" if texts[i] else "{}"
        pairs = [f"{key}:{value(texts[i])}" for i, key in self.attr_columns if texts[i]]
        return "{" + ",".join(pairs) + "}"


class RejectsWriter:
    """Streams rejected rows, with their line number and reason, to a CSV the operator can fix.

    Written through mailer.core.spreadsheet: a rejected cell is whatever the
    file held, formulas included.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._fh: IO[str] | None = None
        self._plain: SafeWriter | None = None

    def __enter__(self) -> RejectsWriter:
        return self

    def write(self, rejected: Rejected) -> None:
        if self._plain is None:
            self._fh = self.path.open("w", encoding="utf-8", newline="")
            self._plain = csv_writer(self._fh)
            self._plain.writerow(["line", "reason", "fields"])
        self._plain.writerow([rejected.line, rejected.reason, *rejected.raw])
        self.count += 1

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fh is not None:
            self._fh.close()
