"""The import's rows in batches for Postgres, read ahead on a thread.

Postgres merges one batch while the next is parsed: on two cores the Python
parsing (a few µs a row) and the database work then overlap instead of
adding up. A thread, not a process: the parsing holds the GIL, but the event
loop only waits on Postgres meanwhile, and rows reach asyncpg's binary COPY
without being pickled across processes (measured in bench/README.md, "Import").

Within a batch every address appears once, so the merge needs no grouping: an
address repeated within a chunk of the file goes to a later batch of that
chunk (its second line to the second batch, and so on), which then meets it
as an existing contact, in line order. Memory holds one chunk being parsed
and one being written, whatever the file's size.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar, cast

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
            yield Chunk(batches)
            batches, seen, count = [[]], {}, 0
    if count:
        yield Chunk(batches)


async def read_ahead(produce: Iterator[T]) -> AsyncGenerator[T, None]:
    """The items of `produce`, each computed on a thread while the caller works on the last."""
    end = object()
    pending = asyncio.ensure_future(asyncio.to_thread(next, produce, end))
    try:
        while True:
            # Shielded: cancelling the caller must not orphan the thread mid-item.
            item = await asyncio.shield(pending)
            if item is end:
                return
            pending = asyncio.ensure_future(asyncio.to_thread(next, produce, end))
            yield cast(T, item)
    finally:
        # The thread may be in the middle of the next item: let it finish before
        # the generator is closed (a running generator cannot be).
        with contextlib.suppress(BaseException):
            await asyncio.shield(pending)
        close = getattr(produce, "close", None)
        if close is not None:
            close()
