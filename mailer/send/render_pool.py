"""Composing messages in other processes, a claimed batch at a time, under limits.

The engine's event loop also carries every SMTP exchange: a reply waits while
the loop renders, so with the loop busy a message holds its connection longer
(bench/README.md, "Send"). With `[engine] render_processes` > 0 (default 1),
a batch's messages are composed in that many processes and the loop only
sends them.

Each process builds a campaign's Composer once (from the same data as the
engine's) and keeps it. A message that shows a link not registered yet comes
back as such: the engine registers it and sends that message round again.

Limits (mailer.limits): each message is composed under the CPU-time limit, in a
process whose address space is capped (mailer.render_process). A process that
dies on a limit (killed by its hard CPU timer, or ending on a MemoryError) is
replaced: the message it had in hand is skipped with the limit's reason, and the
rest of its share goes to the new process (what it had composed but not yet
returned is composed again; nothing of it was sent). Cancelling compose() (the
worker stopping) kills the processes in hand: a stop never waits for a render.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.connection import Connection
from typing import Any

from mailer.campaigns.limits import (
    EXIT_MEMORY,
    MESSAGE_TOO_LARGE,
    RenderLimits,
    reason_for_exit,
    timed_hard,
)
from mailer.campaigns.message import (
    CampaignContent,
    Composed,
    Composer,
    Recipient,
    campaign_composer,
)
from mailer.campaigns.render import LimitError, MessageError, UnregisteredLinks
from mailer.campaigns.render_process import RenderProcess, detach
from mailer.core.settings import Settings
from mailer.core.tokens import Keyring

log = logging.getLogger("mailer.render_pool")

# One outcome per recipient: the message, or what composing it raised.
Result = Composed | MessageError | UnregisteredLinks

# A process sends its results back in chunks of about this many bytes, not one pickle per
# batch: a batch of large messages must not need twice its size in the capped process.
CHUNK_BYTES = 1 << 20


class RenderProcessError(RuntimeError):
    """A render process failed outside any message (a bug, or a campaign it cannot build)."""


@dataclass(frozen=True)
class Batch:
    """One claimed batch's messages to compose, and what composing them needs."""

    key: tuple[int, int]  # (campaign id, template version id): one Composer each
    campaign: CampaignContent
    link_ids: Mapping[str, int]  # links registered so far
    recipients: Sequence[Recipient]
    now: datetime


@dataclass(frozen=True)
class _Failed:
    """Sent instead of results when a process cannot compose a batch at all."""

    error: str


# ---------------------------------------------------------------- in a render process


def _serve(conn: Connection, lifeline: Connection, progress: Any, settings: Settings) -> None:
    """A render process: compose batches until the worker closes the pipe."""
    limits = RenderLimits.from_settings(settings.engine)
    try:
        detach(lifeline, limits)
        keyring = Keyring.from_spec(settings.require_token_keys())
        composers: dict[tuple[int, int], Composer] = {}
        while True:
            try:
                batch = conn.recv()
            except EOFError:
                return
            _compose_batch(batch, conn, progress, composers, keyring, settings, limits)
    except MemoryError:
        # RLIMIT_AS reached: the heap may be in any state. The worker skips the message in
        # hand (render_memory) and starts a fresh process.
        os._exit(EXIT_MEMORY)
    except (BrokenPipeError, ConnectionResetError):
        os._exit(0)  # the worker is gone


def _compose_batch(
    batch: Batch,
    conn: Connection,
    progress: Any,
    composers: dict[tuple[int, int], Composer],
    keyring: Keyring,
    settings: Settings,
    limits: RenderLimits,
) -> None:
    chunk: list[Result] = []
    size = 0
    composer: Composer | None = None
    for index, recipient in enumerate(batch.recipients):
        progress.value = index  # the message in hand, should this process die
        if composer is None:
            composer = composers.get(batch.key)
            if composer is None:
                try:
                    _, composer = campaign_composer(batch.campaign, keyring, settings)
                except Exception as exc:
                    conn.send(_Failed(f"{type(exc).__name__}: {exc}"))
                    return
                composers[batch.key] = composer
            composer.add_links(batch.link_ids)
        result: Result
        try:
            result = timed_hard(limits, composer.compose, recipient, batch.now)
        except LimitError as exc:
            result = exc
            if exc.reason != MESSAGE_TOO_LARGE:
                # Interrupted wherever it stood: the composer's caches may be half-written.
                composers.pop(batch.key, None)
                composer = None
        except (MessageError, UnregisteredLinks) as exc:
            result = exc
        chunk.append(result)
        size += len(result.data) if isinstance(result, Composed) else 200
        if size >= CHUNK_BYTES:
            conn.send(chunk)
            chunk, size = [], 0
    if chunk:
        conn.send(chunk)
    progress.value = -1


# ---------------------------------------------------------------- in the worker


class RenderPool:
    """Render processes composing batches of messages for the engine, under limits."""

    def __init__(self, settings: Settings, processes: int) -> None:
        self._settings = settings
        self._processes = processes
        self._limits = RenderLimits.from_settings(settings.engine)
        self._idle: list[RenderProcess] = []
        self._busy: set[RenderProcess] = set()
        self.replaced = 0  # processes replaced after dying on a limit

    async def start(self) -> None:
        """Start the processes now rather than with the first batch."""
        while len(self._idle) + len(self._busy) < self._processes:
            self._idle.append(await self._new())

    def pids(self) -> list[int]:
        return [p.pid for p in (*self._idle, *self._busy) if p.pid is not None]

    def in_hand(self) -> list[int]:
        """The index, in its batch, of the message each busy process is composing."""
        return [p.progress.value for p in self._busy if p.progress.value >= 0]

    async def compose(self, batch: Batch) -> list[Result]:
        """One outcome per recipient, in order; cancelling it kills the processes in hand."""
        count = len(batch.recipients)
        results: list[Result | None] = [None] * count
        parts = max(1, min(self._processes, count))
        async with asyncio.TaskGroup() as group:
            for part in range(parts):
                todo = list(range(part * count // parts, (part + 1) * count // parts))
                group.create_task(self._compose_part(batch, todo, results))
        assert all(r is not None for r in results)
        return [r for r in results if r is not None]

    async def compose_unless_stopped(
        self, batch: Batch, stop: asyncio.Event
    ) -> list[Result] | None:
        """compose(), abandoned (None) as soon as `stop` is set: a stop waits for no render."""
        composing = asyncio.ensure_future(self.compose(batch))
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({composing, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not composing.done():
                composing.cancel()  # kills the processes in hand
                with contextlib.suppress(asyncio.CancelledError):
                    await composing
        return None if composing.cancelled() else composing.result()

    async def _compose_part(
        self, batch: Batch, todo: list[int], results: list[Result | None]
    ) -> None:
        idle_deaths = 0
        while todo:
            process = self._idle.pop() if self._idle else await self._new()
            part = dataclasses.replace(batch, recipients=[batch.recipients[i] for i in todo])
            self._busy.add(process)
            try:
                got, died = await asyncio.to_thread(process.exchange, part, len(todo))
            except BaseException:
                # Cancelled (the worker stops): the process is busy with work nobody waits
                # for any more, maybe a runaway render. It goes now.
                process.kill()
                raise
            finally:
                self._busy.discard(process)
            if got and isinstance(got[0], _Failed):
                self._idle.append(process)
                raise RenderProcessError(f"render process cannot compose the batch: {got[0].error}")
            for index, result in zip(todo, got, strict=False):
                assert not isinstance(result, _Failed)
                results[index] = result
            if not died:
                self._idle.append(process)
                return
            at = process.progress.value
            exitcode = await asyncio.to_thread(process.close, 5.0)
            if not len(got) <= at < len(todo):
                # Dead before it took a message (killed while idle?): a new one, once.
                idle_deaths += 1
                if idle_deaths > 1:
                    raise RenderProcessError(f"render processes die at start (exit {exitcode})")
                todo = todo[len(got) :]
                continue
            todo = self._skip(todo, at, len(got), exitcode, results)

    def _skip(
        self,
        todo: list[int],
        at: int,
        received: int,
        exitcode: int | None,
        results: list[Result | None],
    ) -> list[int]:
        """A process died on the message it had in hand: skip that one; what is left to do."""
        reason = reason_for_exit(exitcode)
        detail = self._limits.killed_detail(reason)
        culprit = todo[at]
        log.warning(
            "recipient %d of a batch: %s (exit %s); starting a new render process",
            culprit,
            detail,
            exitcode,
        )
        results[culprit] = LimitError(reason, detail)
        self.replaced += 1
        return [i for i in todo[received:] if i != culprit]

    async def _new(self) -> RenderProcess:
        return await asyncio.to_thread(RenderProcess, _serve, self._settings)

    async def close(self) -> None:
        """Stop every process: idle ones exit on EOF, busy ones are killed."""
        for process in self._busy:
            process.kill()
        processes, self._idle = [*self._idle, *self._busy], []
        await asyncio.gather(*(asyncio.to_thread(p.close, 2.0) for p in processes))
