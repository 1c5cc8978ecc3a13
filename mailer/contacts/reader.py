"""A contacts file read, validated and encoded for COPY beside the database work.

What the import's process did per row was the parse (~13 µs) on a reader
thread and asyncpg's encoding of the COPY records (~6 µs) on the event loop,
while Postgres waited for the COPY. Here the reader thread does all of it,
parse, batches (mailer/contacts/batches.py) and the binary COPY data
(mailer/contacts/copydata.py), and hands over bytes: the event loop only
streams them to Postgres. The reader is at most one chunk ahead (the one it
parses while Postgres merges the last), so memory stays flat.

A child process for the reader was built and measured (bench/README.md,
"Import", session 8): on this 2-core machine it read no faster than the
thread (1 M rows: 20,312 and 20,571 rows/s against 20,317 and 19,863), and a
100 k-row file paid its start-up; Postgres is the bottleneck, so it went.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from mailer.contacts import copydata
from mailer.contacts.batches import ReadAhead, Tally, chunks
from mailer.contacts.csvfile import ContactFile, Defaults, Dialect, Rejected


@dataclass(frozen=True)
class FileSpec:
    """What the producer needs to read a file."""

    path: Path
    defaults: Defaults
    topics: Mapping[str, int]
    now: datetime
    encoding: str | None
    delimiter: str | None
    chunk_rows: int


@dataclass(frozen=True)
class Opened:
    """The header was read: how the file is read."""

    dialect: Dialect


@dataclass(frozen=True)
class Parsed:
    """One chunk: its batches as COPY data, and the lines rejected since the last chunk."""

    batches: list[bytes]
    valid: int
    rejected: list[Rejected] = field(default_factory=list)


@dataclass(frozen=True)
class Finished:
    """Every line read: the file's SHA-256."""

    sha256: bytes


Message = Opened | Parsed | Finished


def produce(spec: FileSpec) -> Iterator[Message]:
    """The file's messages in order: Opened, Parsed per chunk, Finished; FileError if unusable."""
    opened = ContactFile(
        spec.path,
        spec.defaults,
        spec.topics,
        spec.now,
        encoding=spec.encoding,
        delimiter=spec.delimiter,
    )
    with opened:
        yield Opened(opened.dialect)
        tally = Tally()
        rejected: list[Rejected] = []
        valid = 0
        for chunk in chunks(opened.rows(), tally, rejected.append, spec.chunk_rows):
            batches = [copydata.encode(batch) for batch in chunk.batches]
            # With the lines rejected among the chunk's: the rejects stay in line order.
            yield Parsed(batches, tally.valid - valid, rejected.copy())
            valid = tally.valid
            rejected.clear()  # the list chunks() appends to
        if rejected:  # after the last valid line
            yield Parsed([], 0, rejected)
        yield Finished(opened.sha256)


class Source(Protocol):
    async def next(self) -> Message: ...

    def prefetch(self) -> None: ...

    async def aclose(self) -> None: ...


def open_source(spec: FileSpec) -> Source:
    """The file's producer, on a thread."""
    return ThreadSource(spec)


class ThreadSource:
    """The producer on a thread, one message ahead when prefetched."""

    def __init__(self, spec: FileSpec) -> None:
        self._ahead: ReadAhead[Message] = ReadAhead(produce(spec))

    async def next(self) -> Message:
        message = await self._ahead.next()
        if message is None:
            raise RuntimeError("the contacts reader stopped before the end of the file")
        return message

    def prefetch(self) -> None:
        self._ahead.prefetch()

    async def aclose(self) -> None:
        await self._ahead.aclose()
