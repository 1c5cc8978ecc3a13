"""Import flows: a contacts CSV or a suppression list, file to Postgres in one transaction."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mailer.contacts import copydata
from mailer.contacts.batches import ReadAhead, Tally, chunks
from mailer.contacts.csvfile import ContactFile, Defaults, FileError, Rejected, RejectsWriter
from mailer.contacts.store import (
    Conn,
    ContactImport,
    ContactStore,
    ImportRefused,
    ImportResult,
    SuppressionImportResult,
)
from mailer.contacts.textfile import CsvRecords, Dialect
from mailer.core.addresses import InvalidAddress, address_hash, normalise


@dataclass(frozen=True)
class ImportOutcome:
    result: ImportResult
    rejects_file: Path | None
    rejected: list[Rejected]
    dialect: Dialect


def rejects_path_for(path: Path) -> Path:
    """Where the rejected rows of an import go by default: beside the file."""
    return path.with_name(path.stem + ".rejects.csv")


async def import_contacts(
    store: ContactStore,
    path: Path,
    defaults: Defaults,
    *,
    default_locale: str,
    skip_invalid: bool,
    rejects_path: Path | None = None,
    keep_rejects: int = 20,
    encoding: str | None = None,
    delimiter: str | None = None,
    tally: Tally | None = None,
) -> ImportOutcome:
    """Import a contacts CSV; raise FileError or ImportRefused (nothing written) on bad input.

    The file is parsed, and each batch encoded as binary COPY data
    (mailer/contacts/copydata.py), on a thread a chunk ahead of Postgres,
    which merges each batch as it comes (mailer/contacts/batches.py), all in one
    transaction. Rejected rows stream to the rejects CSV; the first
    `keep_rejects` are kept for display (on the outcome, or on the
    ImportRefused exception). Without `skip_invalid`, the first rejected row
    stops the database work, and the rest of the file is still read so that
    the rejects file lists every row to fix. `tally`, if given, counts the
    rows read as they are (the console shows it as the import's progress).
    """
    topics = {t.slug: t.id for t in await store.topics_list()}
    target = rejects_path or rejects_path_for(path)
    if target.exists():
        target.unlink()  # a stale rejects file from an earlier run would mislead
    shown: list[Rejected] = []
    tally = tally if tally is not None else Tally()
    opened = ContactFile(
        path, defaults, topics, datetime.now(UTC), encoding=encoding, delimiter=delimiter
    )
    with RejectsWriter(target) as rejects, opened:

        def on_reject(row: Rejected) -> None:  # on the reader's thread
            rejects.write(row)
            if len(shown) < keep_rejects:
                shown.append(row)

        async with store.contact_import(
            file_name=path.name, default_locale=default_locale
        ) as session:
            # Encoded on the reader's thread: the event loop only streams the bytes.
            reader = ReadAhead(
                [copydata.encode(batch) for batch in chunk.batches]
                for chunk in chunks(opened.rows(), tally, on_reject)
            )
            try:
                await _write(session, reader, refuse=lambda: tally.rejected and not skip_invalid)
            finally:
                await reader.aclose()
            if tally.rejected and not skip_invalid:
                raise ImportRefused(tally.rejected, tally.valid, examples=shown, where=target)
            result = await session.finish(
                valid=tally.valid,
                rejected=tally.rejected,
                file_sha256=opened.sha256,
                encoding=opened.dialect.encoding,
                delimiter=opened.dialect.delimiter,
            )
    return ImportOutcome(result, target if rejects.count else None, shown, opened.dialect)


async def _write(
    session: ContactImport, reader: ReadAhead[list[bytes]], refuse: Callable[[], object]
) -> None:
    """Each chunk's batches into Postgres, the next chunk parsed meanwhile."""
    clock = time.perf_counter()
    waited = 0.0
    while (chunk := await reader.next()) is not None:
        waited += time.perf_counter() - clock
        for data in [] if refuse() else chunk:  # refused: read on, for the rejects
            await session.load_copy(data)
            reader.prefetch()  # parsing while Postgres merges, not while the COPY streams
            await session.merge()
        clock = time.perf_counter()
    # How long the database waited for the parser: ~0 when parsing keeps ahead.
    session.seconds["waiting_for_reader"] = waited


def read_suppression_file(
    path: Path, *, encoding: str | None = None, delimiter: str | None = None
) -> tuple[list[tuple[int, bytes]], list[Rejected], bytes]:
    """Addresses from a suppression list: one per line, or a CSV with an `email` column.

    Read as contact files are (mailer/contacts/textfile.py: UTF-8 unless it
    does not decode, the delimiter from the first line). Registries are small
    next to contact files (thousands to a few hundred thousand lines), so the
    hashes are held in memory; addresses themselves are not kept. Returns the
    valid (line, hash) pairs, the rejected lines and the file's SHA-256.
    """
    valid: list[tuple[int, bytes]] = []
    rejected: list[Rejected] = []
    with CsvRecords(path, encoding=encoding, delimiter=delimiter) as records:
        for line, address, raw in _suppression_cells(path, iter(records)):
            try:
                valid.append((line, address_hash(normalise(address))))
            except InvalidAddress as exc:
                rejected.append(Rejected(line, f"email: {address!r} is not valid: {exc}", raw))
    return valid, rejected, records.sha256


def _suppression_cells(
    path: Path, records: Iterator[tuple[int, list[str]]]
) -> Iterator[tuple[int, str, list[str]]]:
    first = next(records, None)
    if first is None:
        raise FileError(f"{path}: empty file")
    header = [c.strip().lower() for c in first[1]]
    if "email" in header:
        column = header.index("email")
    elif len(header) == 1 and "@" in header[0]:
        column = 0
        yield 1, first[1][0].strip(), first[1]
    else:
        raise FileError(f"{path}: line 1: expected an 'email' column or one address per line")
    for line, raw in records:
        if not any(cell.strip() for cell in raw):
            continue
        if len(raw) <= column:
            yield line, "", raw
        else:
            yield line, raw[column].strip(), raw


SUPPRESSION_REASONS = ("registry", "manual", "complaint", "hard_bounce", "unsubscribe")
SUPPRESSION_SCOPES = ("global", "channel", "topic")
CHANNELS = ("email", "sms", "postal", "phone")


class SuppressionTargetError(ValueError):
    """A suppression list's scope, channel or topic do not fit together; `option` names one."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option


async def suppression_target(
    store: ContactStore, *, reason: str, scope: str, channel: str | None, topic: str | None
) -> int | None:
    """Check what a suppression list suppresses; the topic's id for a topic scope.

    The CLI's options and the console's form fields carry the same names, so the
    errors name them both ways (--channel / channel).
    """
    if reason not in SUPPRESSION_REASONS:
        raise SuppressionTargetError(
            "reason", f"--reason: {reason!r} is not one of {SUPPRESSION_REASONS}"
        )
    if scope not in SUPPRESSION_SCOPES:
        raise SuppressionTargetError(
            "scope", f"--scope: {scope!r} is not one of {SUPPRESSION_SCOPES}"
        )
    if channel is not None and channel not in CHANNELS:
        raise SuppressionTargetError("channel", f"--channel: {channel!r} is not one of {CHANNELS}")
    if (scope == "channel") != (channel is not None):
        raise SuppressionTargetError(
            "channel", "--channel is required with --scope channel, and only then"
        )
    if (scope == "topic") != (topic is not None):
        raise SuppressionTargetError(
            "topic", "--topic is required with --scope topic, and only then"
        )
    if topic is None:
        return None
    ids = {t.slug: t.id for t in await store.topics_list()}
    if topic not in ids:
        raise SuppressionTargetError("topic", f"--topic: unknown topic {topic!r}")
    return ids[topic]


class SuppressionsRejected(ValueError):
    """An all-or-nothing import (the API's upload) with invalid lines: nothing written."""

    def __init__(self, rejected: list[Rejected]) -> None:
        super().__init__(f"{len(rejected)} invalid line(s): nothing was written")
        self.rejected = rejected


async def import_suppressions(
    store: ContactStore,
    path: Path,
    *,
    reason: str,
    scope: str,
    channel: str | None,
    topic_id: int | None,
    source: str,
    encoding: str | None = None,
    delimiter: str | None = None,
    file_name: str | None = None,
    all_or_nothing: bool = False,
    conn: Conn | None = None,
) -> tuple[SuppressionImportResult, list[Rejected]]:
    """Import a suppression list; invalid lines are reported, valid ones suppressed.

    `all_or_nothing` (the API's upload): any invalid line raises SuppressionsRejected and
    nothing is written. With `conn`, in the caller's transaction.
    """
    # Registries run to a few hundred thousand lines: read off the event loop.
    valid, rejected, sha256 = await asyncio.to_thread(
        read_suppression_file, path, encoding=encoding, delimiter=delimiter
    )
    if rejected and all_or_nothing:
        raise SuppressionsRejected(rejected)
    result = await store.import_suppressions(
        valid,
        file_name=file_name or path.name,
        file_sha256=sha256,
        reason=reason,
        scope=scope,
        channel=channel,
        topic_id=topic_id,
        source=source,
        rejected=len(rejected),
        conn=conn,
    )
    return result, rejected
