"""Import flows: a contacts CSV or a suppression list, file to Postgres in one transaction."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mailer.contacts import csvfile
from mailer.contacts.csvfile import Defaults, FileError, Rejected, RejectsWriter
from mailer.contacts.store import (
    ContactStore,
    ImportRefused,
    ImportResult,
    SuppressionImportResult,
)
from mailer.core.addresses import InvalidAddress, address_hash, normalise


@dataclass(frozen=True)
class ImportOutcome:
    result: ImportResult
    rejects_file: Path | None
    rejected: list[Rejected]


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
) -> ImportOutcome:
    """Import a contacts CSV; raise FileError or ImportRefused (nothing written) on bad input.

    Rejected rows stream to the rejects CSV; the first `keep_rejects` are kept
    for display (on the outcome, or on the ImportRefused exception).
    """
    topics = frozenset(t.slug for t in await store.topics_list())
    rows = csvfile.read(path, defaults, topics, datetime.now(UTC))
    target = rejects_path or rejects_path_for(path)
    if target.exists():
        target.unlink()  # a stale rejects file from an earlier run would mislead
    shown: list[Rejected] = []
    with RejectsWriter(target) as rejects:

        def on_reject(row: Rejected) -> None:
            rejects.write(row)
            if len(shown) < keep_rejects:
                shown.append(row)

        try:
            result = await store.import_contacts(
                rows,
                file_name=path.name,
                file_sha256=csvfile.file_sha256(path),
                default_locale=default_locale,
                skip_invalid=skip_invalid,
                on_reject=on_reject,
            )
        except ImportRefused as exc:
            exc.examples = shown
            exc.rejects_file = target
            raise
    return ImportOutcome(result, target if rejects.count else None, shown)


def read_suppression_file(path: Path) -> tuple[list[tuple[int, bytes]], list[Rejected]]:
    """Addresses from a suppression list: one per line, or a CSV with an `email` column.

    Registries are small next to contact files (thousands to a few hundred
    thousand lines), so the hashes are held in memory; addresses themselves
    are not kept.
    """
    try:
        fh = path.open("r", encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise FileError(f"{path}: {exc.strerror}") from None
    valid: list[tuple[int, bytes]] = []
    rejected: list[Rejected] = []
    with fh:
        try:
            for line, address, raw in _suppression_cells(path, fh):
                try:
                    valid.append((line, address_hash(normalise(address))))
                except InvalidAddress as exc:
                    rejected.append(Rejected(line, f"email: {address!r} is not valid: {exc}", raw))
        except UnicodeDecodeError as exc:
            raise FileError(f"{path}: not UTF-8 text ({exc.reason})") from None
        except csv.Error as exc:
            raise FileError(f"{path}: malformed CSV ({exc})") from None
    return valid, rejected


def _suppression_cells(path: Path, fh: object) -> Iterator[tuple[int, str, list[str]]]:
    reader = csv.reader(fh)  # type: ignore[arg-type]
    first = next(reader, None)
    if first is None:
        raise FileError(f"{path}: empty file")
    header = [c.strip().lower() for c in first]
    if "email" in header:
        column = header.index("email")
    elif len(first) == 1 and "@" in first[0]:
        column = 0
        yield 1, first[0].strip(), first
    else:
        raise FileError(f"{path}: line 1: expected an 'email' column or one address per line")
    for raw in reader:
        if not any(cell.strip() for cell in raw):
            continue
        if len(raw) <= column:
            yield reader.line_num, "", raw
        else:
            yield reader.line_num, raw[column].strip(), raw


async def import_suppressions(
    store: ContactStore,
    path: Path,
    *,
    reason: str,
    scope: str,
    channel: str | None,
    topic_id: int | None,
    source: str,
) -> tuple[SuppressionImportResult, list[Rejected]]:
    """Import a suppression list; invalid lines are reported, valid ones suppressed."""
    valid, rejected = read_suppression_file(path)
    result = await store.import_suppressions(
        valid,
        file_name=path.name,
        file_sha256=csvfile.file_sha256(path),
        reason=reason,
        scope=scope,
        channel=channel,
        topic_id=topic_id,
        source=source,
        rejected=len(rejected),
    )
    return result, rejected
