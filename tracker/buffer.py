"""The bounded in-memory event buffer and its background flusher.

A pixel must answer in microseconds whatever Postgres is doing, so a hit only appends to a
deque; one task writes the deque out in batches (COPY) at least every flush interval, as soon
as a batch is full, and once more on shutdown. When the buffer is full the new hit is
dropped and counted: losing an open is better than stalling every pixel behind it.
The buffer does not look inside what it holds (the tracker keeps `events.Hit`s in it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

# COPY batches of 5,000 rows measured ~140,000 rows/s (DESIGN.md); larger batches gain little
# and hold a transaction longer.
BATCH_ROWS = 5_000
_MAX_BACKOFF_S = 5.0


T = TypeVar("T")

# Writes a batch and returns how many of its items landed (unknown deliveries do not).
Writer = Callable[[Sequence[T]], Awaitable[int]]


class BufferObserver:
    """Hooks for metrics; the default does nothing so the buffer stands alone in tests."""

    def dropped(self, reason: str, count: int) -> None:
        """Events lost: "overflow" (buffer full), "orphan" (no such delivery), "shutdown"."""

    def flushed(self, count: int, seconds: float) -> None:
        """A batch was written in `seconds`, `count` of its events landing."""

    def flush_failed(self) -> None:
        """A batch could not be written; it was kept for the next attempt."""


class EventBuffer(Generic[T]):
    """A bounded deque of events and the task that writes it out."""

    def __init__(
        self,
        write: Writer[T],
        *,
        capacity: int,
        interval_s: float,
        observer: BufferObserver | None = None,
    ) -> None:
        if capacity <= 0 or interval_s <= 0:
            raise ValueError("capacity and interval must be positive")
        self._write = write
        self._capacity = capacity
        self._interval = interval_s
        self._observer = observer or BufferObserver()
        self._events: deque[T] = deque()
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._batch = min(BATCH_ROWS, capacity)

    def __len__(self) -> int:
        return len(self._events)

    def add(self, event: T) -> bool:
        """Queue an event without waiting; False (and counted) when the buffer is full."""
        if len(self._events) >= self._capacity:
            self._observer.dropped("overflow", 1)
            return False
        self._events.append(event)
        if len(self._events) >= self._batch:
            self._wake.set()
        return True

    def start(self) -> None:
        """Start the background flusher."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="tracker-event-flusher")

    async def close(self, timeout_s: float = 10.0) -> None:
        """Stop the flusher and write out everything still buffered (graceful shutdown)."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        deadline = time.monotonic() + timeout_s
        while self._events and time.monotonic() < deadline:
            if not await self.flush():
                await asyncio.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        if self._events:
            self._observer.dropped("shutdown", len(self._events))
            log.error("shutdown: %d buffered events could not be written", len(self._events))
            self._events.clear()

    async def flush(self) -> bool:
        """Write one batch now; False if the write failed (the batch is kept)."""
        if not self._events:
            return True
        batch = [self._events.popleft() for _ in range(min(self._batch, len(self._events)))]
        started = time.perf_counter()
        try:
            # Shielded: a cancelled flusher must not abandon a COPY half-way and lose rows
            # that were already taken off the deque.
            written = await asyncio.shield(self._write(batch))
        except Exception:
            log.warning("writing %d events failed; will retry", len(batch), exc_info=True)
            self._observer.flush_failed()
            self._requeue(batch)
            return False
        self._observer.flushed(written, time.perf_counter() - started)
        if written < len(batch):
            self._observer.dropped("orphan", len(batch) - written)
        return True

    def _requeue(self, batch: list[T]) -> None:
        """Put a failed batch back in front, oldest first, as far as capacity allows."""
        room = self._capacity - len(self._events)
        kept = batch[:room] if room < len(batch) else batch
        if len(kept) < len(batch):
            self._observer.dropped("overflow", len(batch) - len(kept))
        self._events.extendleft(reversed(kept))

    async def _run(self) -> None:
        backoff = self._interval
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=backoff)
            self._wake.clear()
            ok = True
            # Drain in full batches while we are behind, then go back to waiting.
            while ok and self._events and not self._stopping:
                ok = await self.flush()
                if len(self._events) < self._batch:
                    break
            backoff = self._interval if ok else min(backoff * 2, _MAX_BACKOFF_S)
