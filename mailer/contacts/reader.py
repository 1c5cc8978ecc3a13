"""A contacts file read, validated and encoded for COPY beside the database work.

What the import's process does per row was the parse (~13 µs) on a reader
thread and asyncpg's encoding of the COPY records (~6 µs) on the event loop,
the two serialised by the GIL, while Postgres waited for the COPY. Here one
producer does all of it, parse, batches (mailer/contacts/batches.py) and the
binary COPY data (mailer/contacts/copydata.py), and hands over bytes: the
event loop only streams them to Postgres. A large file is produced in a child
process, which parses the next chunk while Postgres merges this one and even
while its COPY streams, on the other core; a small one on a thread (starting
an interpreter costs ~0.2 s, more than a few thousand rows take to parse).
Either way the producer is at most two chunks ahead (a child's, received at
once, and the one it parses; a thread's, the one it parses): it blocks handing
over the next chunk until it is taken, so memory stays flat.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import time
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Protocol

from mailer.contacts import copydata
from mailer.contacts.batches import ReadAhead, Tally, chunks
from mailer.contacts.csvfile import ContactFile, Defaults, Dialect, FileError, Rejected

# A file at least this large is parsed in a child process (~60,000 rows of a
# typical export): below it, the child's start-up would cost more than it saves.
PROCESS_FROM_BYTES = 8 << 20


@dataclass(frozen=True)
class FileSpec:
    """What the producer needs to read a file, picklable for a child process."""

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
    """Every line read: the file's SHA-256, and the producer's CPU seconds in a child."""

    sha256: bytes
    cpu_seconds: float = 0.0


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
    """A producer for the file: in a child process when it is large, else on a thread."""
    if spec.path.stat().st_size >= PROCESS_FROM_BYTES:
        return ProcessSource(spec)
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


class ProcessSource:
    """The producer in a child process, its messages received through a pipe.

    Spawned, not forked: the parent runs an event loop and threads, whose locks a
    fork would copy in whatever state they were. The child sends a FileError's
    message, or any other failure's traceback, and stops.
    """

    def __init__(self, spec: FileSpec) -> None:
        context = multiprocessing.get_context("spawn")
        receive, send = context.Pipe(duplex=False)
        self._receive = receive
        self._process = context.Process(
            target=_child, args=(spec, send), name="mailer-contacts-reader", daemon=True
        )
        self._process.start()
        send.close()  # the child's end: EOF here when the child is gone
        self._pending: asyncio.Future[object] | None = None

    async def next(self) -> Message:
        pending = self._pending or self._receive_next()
        self._pending = None
        try:
            message = await asyncio.shield(pending)
        except EOFError:
            raise RuntimeError(
                f"the contacts reader process ended unexpectedly (exit code {self._exitcode()})"
            ) from None
        if isinstance(message, _Failed):
            if message.file_error:
                raise FileError(message.text)
            raise RuntimeError(f"the contacts reader process failed:\n{message.text}")
        assert isinstance(message, Opened | Parsed | Finished)
        if not isinstance(message, Finished):
            # Taken at once: the child parses the chunk after next while Postgres
            # merges this one, two chunks ahead rather than one, so that a slow
            # moment of the child's (a busy machine) does not stop Postgres.
            self._pending = self._receive_next()
        return message

    def _receive_next(self) -> asyncio.Future[object]:
        return asyncio.ensure_future(asyncio.to_thread(self._receive.recv))

    def prefetch(self) -> None:
        """Nothing to start: the child parses ahead on its own."""

    async def aclose(self) -> None:
        if self._process.is_alive():
            self._process.terminate()  # a refused or failed import: the rest is not wanted
        if self._pending is not None:  # ends with EOFError once the child is gone
            with contextlib.suppress(BaseException):
                await asyncio.shield(self._pending)
            self._pending = None
        await asyncio.to_thread(self._process.join)
        self._process.close()
        self._receive.close()

    def _exitcode(self) -> int | None:
        self._process.join(timeout=5)
        return self._process.exitcode


@dataclass(frozen=True)
class _Failed:
    file_error: bool
    text: str


def _child(spec: FileSpec, send: Connection) -> None:
    try:
        for message in produce(spec):
            if isinstance(message, Finished):
                message = Finished(message.sha256, time.process_time())
            send.send(message)
    except FileError as exc:
        send.send(_Failed(True, str(exc)))
    except BaseException:
        send.send(_Failed(False, traceback.format_exc()))
    finally:
        send.close()
