"""Reads too slow for a page, computed in the background and shown with their age.

A page asks for a key's last result: if it is older than `max_age` (or missing) one refresh
starts (never two at once for a key). A page with no result yet waits for it at most `wait`
seconds, so it answers within its budget whatever the database's size; a page with an older
result shows it at once, with when it was computed, while the newer one is computed. A
failed refresh is logged and kept as the key's error (the page says so and the next visit
retries): one bad audience must not stop the console, so the tasks are watched by their
callback, not allowed to end the process. The app's cleanup cancels what is still running.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Snapshot(Generic[T]):
    """What a page shows: the last result (None: not yet), when it was computed, and whether
    a newer one is being computed; `error` when the last refresh failed."""

    value: T | None
    at: datetime | None
    refreshing: bool
    error: str | None = None

    @property
    def age_s(self) -> float | None:
        return None if self.at is None else (datetime.now(UTC) - self.at).total_seconds()


@dataclass(slots=True)
class _Entry(Generic[T]):
    value: T | None = None
    at: datetime | None = None
    fresh_until: float = 0.0  # monotonic
    error: str | None = None
    task: asyncio.Task[None] | None = None


class Background(Generic[T]):
    """Last results by key, refreshed by one background task per key."""

    def __init__(self, max_age_s: float, wait_s: float, keep: int = 64) -> None:
        self.max_age_s = max_age_s
        self.wait_s = wait_s
        self.keep = keep  # keys remembered (campaigns looked at), oldest dropped first
        self._entries: dict[Hashable, _Entry[T]] = {}
        # Refreshes of keys dropped from `_entries`, cancelled but maybe not yet finished:
        # held until they end, so close() awaits them too (a task the loop still runs when
        # it closes is "destroyed but pending", its connection never handed back).
        self._evicted: set[asyncio.Task[None]] = set()

    async def get(
        self, key: Hashable, compute: Callable[[], Awaitable[T]], *, fresh: bool = False
    ) -> Snapshot[T]:
        """The key's result, refreshed first when stale (or `fresh`), within `wait_s`."""
        entry = self._entries.pop(key, None) or _Entry()
        self._entries[key] = entry  # most recently used last
        while len(self._entries) > self.keep:
            old = self._entries.pop(next(iter(self._entries)))
            if old.task is not None and not old.task.done():
                self._evicted.add(old.task)
                old.task.add_done_callback(self._evicted.discard)
                old.task.cancel()
        stale = fresh or time.monotonic() >= entry.fresh_until
        if stale and entry.task is None:
            entry.task = asyncio.get_running_loop().create_task(self._refresh(entry, compute))
            entry.task.add_done_callback(lambda task: self._watch(entry, task))
        if entry.task is not None and (fresh or entry.at is None):
            # Only a page with nothing to show (or asked for a fresh result) waits: one with
            # a stale result shows it at once (bench/README.md "Console": waiting cost every
            # visit the whole wait at 200,000 contacts). asyncio.wait never cancels what it
            # waits for: a page that stops waiting (or whose browser leaves) does not cancel
            # the refresh.
            await asyncio.wait({entry.task}, timeout=self.wait_s)
        return Snapshot(entry.value, entry.at, entry.task is not None, entry.error)

    async def _refresh(self, entry: _Entry[T], compute: Callable[[], Awaitable[T]]) -> None:
        started = datetime.now(UTC)
        value = await compute()
        entry.value, entry.at, entry.error = value, started, None
        entry.fresh_until = time.monotonic() + self.max_age_s

    def _watch(self, entry: _Entry[T], task: asyncio.Task[None]) -> None:
        entry.task = None
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("background refresh failed", exc_info=exc)
            entry.error = f"{type(exc).__name__}: {exc}"

    async def close(self) -> None:
        """Cancel the refreshes still running (the app is shutting down)."""
        tasks = [e.task for e in self._entries.values() if e.task is not None]
        for task in tasks:
            task.cancel()
        # The evicted ones were cancelled already: cancelling again would interrupt their
        # unwinding (a connection on its way back to the pool).
        await asyncio.gather(*tasks, *self._evicted, return_exceptions=True)
