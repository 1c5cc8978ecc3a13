"""The import's rows in batches for Postgres, and reading ahead on a thread.

Postgres merges one batch while the next is parsed: on two cores the Python
parsing and the database work then overlap instead of adding up. A thread,
not a process: a reader process measured no faster on this machine, whose
bottleneck is Postgres, and slower for a small file (bench/README.md,
"Import", session 8).

Within a batch every address appears once, so the merge needs no grouping: an
address repeated within a chunk of the file goes to a later batch of that
chunk (its second line to the second batch, and so on), which then meets it
as an existing contact, in line order. Memory holds one chunk being parsed
and one being written, whatever the file's size.

Each batch goes to Postgres in address order (sorted here, by the reader,
where there is CPU to spare): new contacts take their ids in that
order and are inserted in it, so the contacts' primary key fills at its
right edge (ids given in file order to rows inserted in address order split
its pages inside the batch's range), and the address index is probed and
filled from left to right.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar, cast

from mailer.contacts.csvfile import ContactRow, Rejected

T = TypeVar("T")

# Rows parsed per chunk: ~0.3 s of parsing, small enough that the first batch
# reaches Postgres at once and the last one leaves little to wait for alone.
CHUNK_ROWS = 25_000


@dataclass
class Tally:
    """Rows read so far, counted on the reader's thread."""

    valid: int = 0
    rejected: int = 0


@dataclass
class Chunk:
    """Consecutive valid rows of the file, as batches of distinct addresses, in order."""

    batches: list[list[ContactRow]] = field(default_factory=list)


def chunks(
    rows: Iterable[ContactRow | Rejected],
    tally: Tally,
    on_reject: Callable[[Rejected], None],
    size: int | None = None,
) -> Iterator[Chunk]:
    """Group rows into chunks of batches; rejected rows go to `on_reject` as they come."""
    size = size or CHUNK_ROWS
    batches: list[list[ContactRow]] = [[]]
    seen: dict[str, int] = {}
    count = 0
    for row in rows:
        if isinstance(row, Rejected):
            tally.rejected += 1
            on_reject(row)
            continue
        tally.valid += 1
        # The n-th line of an address in this chunk goes to batch n.
        n = seen.get(row.email, 0)
        seen[row.email] = n + 1
        if n == len(batches):
            batches.append([])
        batches[n].append(row)
        count += 1
        if count == size:
            yield _sorted(batches)
            batches, seen, count = [[]], {}, 0
    if count:
        yield _sorted(batches)


def _sorted(batches: list[list[ContactRow]]) -> Chunk:
    # By code point, as the C collation orders UTF-8 bytes; the merge orders by
    # address again (ids follow the database's collation), cheaply when presorted.
    return Chunk([sorted(batch, key=_by_email) for batch in batches])


def _by_email(row: ContactRow) -> str:
    return row.email


class ReadAhead(Generic[T]):
    """The items of `produce`, each computed on a thread when asked for ahead of time.

    The caller starts the next item (`prefetch`) once it has put the current
    one into Postgres: the thread then parses while Postgres merges, and does
    not compete for the GIL with the event loop while the COPY streams.
    """

    def __init__(self, produce: Iterator[T]) -> None:
        self._produce = produce
        self._pending: asyncio.Future[object] | None = None

    def prefetch(self) -> None:
        """Start computing the next item on a thread (no-op if already started)."""
        self._start()

    async def next(self) -> T | None:
        """The next item (None at the end), waiting for the thread if it is still at it."""
        pending = self._start()
        # Shielded: cancelling the caller must not orphan the thread mid-item.
        item = await asyncio.shield(pending)
        self._pending = None
        return None if item is _END else cast(T, item)

    def _start(self) -> asyncio.Future[object]:
        if self._pending is None:
            self._pending = asyncio.ensure_future(asyncio.to_thread(next, self._produce, _END))
        return self._pending

    async def aclose(self) -> None:
        """Wait for the thread's item in progress, then close the producer."""
        if self._pending is not None:
            with contextlib.suppress(BaseException):
                await asyncio.shield(self._pending)
            self._pending = None
        close = getattr(self._produce, "close", None)
        if close is not None:
            close()


_END = object()
