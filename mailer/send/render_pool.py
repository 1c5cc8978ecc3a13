"""Composing messages in other processes, a claimed batch at a time.

The engine's event loop also carries every SMTP exchange: a reply waits while
the loop renders, so with the loop busy a message holds its connection longer
(bench/README.md, "Send"). With `[engine] render_processes` > 0 (default 1),
a batch's messages are composed in a pool of processes and the loop only
sends them.

Each process builds a campaign's Composer once (from the same data as the
engine's) and keeps it. A message that shows a link not registered yet comes
back as such: the engine registers it and composes that message itself.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mailer.campaigns.message import (
    CampaignContent,
    Composed,
    Composer,
    Recipient,
    campaign_composer,
)
from mailer.campaigns.render import MessageError, UnregisteredLinks
from mailer.core.settings import Settings
from mailer.core.tokens import Keyring

# One outcome per recipient: the message, or what composing it raised.
Result = Composed | MessageError | UnregisteredLinks

# Per worker process: its settings, keyring and the composers built so far.
_state: dict[str, Any] = {}


def _start(settings: Settings, worker: int) -> None:
    # The worker decides when to stop: a terminal's Ctrl-C or systemd's SIGTERM reach the
    # whole process group, and a render process dying first would fail the batch in hand.
    # The worker shuts the pool down on its way out.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(worker,), daemon=True).start()
    _state["settings"] = settings
    _state["keyring"] = Keyring.from_spec(settings.require_token_keys())
    _state["composers"] = {}


def _exit_with_parent(parent: int) -> None:
    # A worker killed outright (kill -9) leaves its render processes waiting on the pool's
    # pipe forever (measured): they follow it within a second instead. The worker's pid
    # comes from the worker itself: killed before this process started, our parent is
    # already someone else.
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


@dataclass(frozen=True)
class Batch:
    """One claimed batch's messages to compose, and what composing them needs."""

    key: tuple[int, int]  # (campaign id, template version id): one Composer each
    campaign: CampaignContent
    link_ids: Mapping[str, int]  # links registered so far
    recipients: Sequence[Recipient]
    now: datetime


def _compose_batch(batch: Batch) -> list[Result]:
    composers: dict[tuple[int, int], Composer] = _state["composers"]
    composer = composers.get(batch.key)
    if composer is None:
        _, composer = campaign_composer(batch.campaign, _state["keyring"], _state["settings"])
        composers[batch.key] = composer
    composer.add_links(batch.link_ids)
    results: list[Result] = []
    for recipient in batch.recipients:
        try:
            results.append(composer.compose(recipient, batch.now))
        except (MessageError, UnregisteredLinks) as exc:
            results.append(exc)
    return results


class RenderPool:
    """A process pool composing batches of messages for the engine."""

    def __init__(self, settings: Settings, processes: int) -> None:
        # spawn, not fork: the engine process holds an event loop, sockets and threads.
        self._pool = ProcessPoolExecutor(
            max_workers=processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start,
            initargs=(settings, os.getpid()),
        )

    async def compose(self, batch: Batch) -> list[Result]:
        """One outcome per recipient, in order."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, _compose_batch, batch)

    async def close(self) -> None:
        await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)
