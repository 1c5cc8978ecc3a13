"""Classifying stored messages in other processes, a batch at a time.

`inbound serve`'s event loop also carries every SMTP session; parsing MIME (the stdlib
email package, pure Python) costs milliseconds a message, which the loop would otherwise
spend instead of answering. With `[inbound] classify_processes` > 0 (default 1), a batch is
classified in a pool of processes, each holding its own Classifier (the keyring's HMAC
state does not cross processes), and only the verdicts come back.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import NamedTuple

from mailer.core.tokens import Keyring
from mailer.inbound.classify import Classification, Classifier, Envelope, Kind
from mailer.inbound.esp import PROVIDERS, classify_esp

log = logging.getLogger(__name__)

_state: dict[str, Classifier] = {}


class Item(NamedTuple):
    """One stored message as the classifier needs it."""

    id: int
    source: str
    raw: bytes
    mail_from: str | None
    rcpt_to: Sequence[str]


def classify_one(classifier: Classifier, item: Item, now: int) -> Classification:
    """One message's classification; a classifier bug marks it unmatched, not the batch."""
    try:
        if item.source in PROVIDERS:
            return classify_esp(item.source, item.raw, classifier, now)
        return classifier.classify(item.raw, Envelope(item.mail_from, item.rcpt_to), now)
    except Exception as exc:  # a bug: its traceback, and the message kept for a look
        log.exception("inbound message %d could not be classified", item.id)
        return Classification(Kind.UNMATCHED, detail={"reason": f"classifier error: {exc}"})


def _start(keys: str, bounce: str, unsubscribe: str, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    _state["classifier"] = Classifier(
        Keyring.from_spec(keys), bounce_local_part=bounce, unsubscribe_mailbox=unsubscribe
    )


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _classify_batch(items: Sequence[Item], now: int) -> list[Classification]:
    classifier = _state["classifier"]
    return [classify_one(classifier, item, now) for item in items]


class ClassifyPool:
    """A process pool classifying batches of stored messages."""

    def __init__(self, keys: str, bounce: str, unsubscribe: str, processes: int) -> None:
        # spawn, not fork: the server process holds an event loop, sockets and threads.
        self._pool = ProcessPoolExecutor(
            max_workers=processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start,
            initargs=(keys, bounce, unsubscribe, os.getpid()),
        )

    async def classify(self, items: Sequence[Item], now: int) -> list[Classification]:
        """One verdict per item, in order."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, _classify_batch, list(items), now)

    async def close(self) -> None:
        await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)
