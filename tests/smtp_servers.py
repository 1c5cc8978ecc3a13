"""Real in-process SMTP servers (aiosmtpd) for behaviour tests: a recorder and a fault injector."""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import DATA_SIZE_DEFAULT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Faults:
    """What the server answers, per recipient (exact address) or at random."""

    rcpt: dict[str, str] = field(default_factory=dict)  # address -> reply, e.g. "450 4.2.1 busy"
    mail_reply: str | None = None  # answer to every MAIL FROM, e.g. "553 5.1.8 sender refused"
    # Answer the first N attempts of these addresses with this reply, then accept.
    transient: dict[str, tuple[int, str]] = field(default_factory=dict)
    # Answer the first N MAIL FROM commands (of any connection) with this reply, e.g. a 421.
    mail_transient: tuple[int, str] | None = None
    random_4xx: float = 0.0  # share of RCPTs answered random_4xx_reply
    random_4xx_reply: str = "451 4.3.0 try again later"
    drop_rate: float = 0.0  # close the connection instead of answering DATA
    delay_s: float = 0.0
    # Hold every DATA once this many messages were accepted, until set back to None (a test
    # flips it from its own thread): a campaign that cannot finish before the test is ready.
    hold_after: int | None = None


@dataclass
class Received:
    mail_from: str
    rcpt: str
    data: bytes
    at: float
    helo: str | None = None  # the name the client gave in EHLO/HELO


class RecordingHandler:
    def __init__(
        self, faults: Faults | None = None, seed: int = 1, pipelining: bool = True
    ) -> None:
        self.faults = faults or Faults()
        self.pipelining = pipelining
        self.messages: list[Received] = []
        self.attempts: dict[str, int] = {}
        self.mails = 0
        self.refused_at: list[float] = []  # when MAIL FROM was refused (monotonic)
        # Every MAIL FROM received, and when (monotonic): what was handed to SMTP.
        self.mail_froms: list[tuple[str, float]] = []
        self.lock = threading.Lock()
        self.rng = random.Random(seed)

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        """Offer PIPELINING (RFC 2920) as large relays do; aiosmtpd itself does not advertise it,
        though it answers grouped commands in order as the RFC asks."""
        session.host_name = hostname
        if self.pipelining:
            responses.insert(len(responses) - 1, "250-PIPELINING")
        return responses

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        with self.lock:
            self.mail_froms.append((address, time.monotonic()))
        if self.faults.mail_reply:
            return self.faults.mail_reply
        with self.lock:
            self.mails += 1
            mails = self.mails
        if self.faults.mail_transient and mails <= self.faults.mail_transient[0]:
            with self.lock:
                self.refused_at.append(time.monotonic())
            return self.faults.mail_transient[1]
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        with self.lock:
            self.attempts[address] = self.attempts.get(address, 0) + 1
            tries = self.attempts[address]
        if address in self.faults.rcpt:
            return self.faults.rcpt[address]
        if address in self.faults.transient:
            times, reply = self.faults.transient[address]
            if tries <= times:
                return reply
        if self.faults.random_4xx and self.rng.random() < self.faults.random_4xx:
            return self.faults.random_4xx_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.faults.delay_s:
            await asyncio.sleep(self.faults.delay_s)
        # Polled: the test flips hold_after from its own thread and loop.
        while (held := self.faults.hold_after) is not None and len(self.recipients) >= held:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        if self.faults.drop_rate and self.rng.random() < self.faults.drop_rate:
            server.transport.close()
            return "421 4.4.2 closing"
        now = time.monotonic()
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.messages.append(
                    Received(envelope.mail_from, rcpt, envelope.content, now, session.host_name)
                )
        return "250 2.0.0 queued as test"

    @property
    def recipients(self) -> list[str]:
        with self.lock:
            return [m.rcpt for m in self.messages]


@contextmanager
def smtp_server(
    faults: Faults | None = None, *, data_size_limit: int | None = None, pipelining: bool = True
) -> Iterator[tuple[int, RecordingHandler]]:
    """An aiosmtpd server on 127.0.0.1 in its own thread, recording what it accepts.

    With data_size_limit, it advertises EHLO SIZE and refuses larger messages (552).
    It offers PIPELINING unless told not to.
    """
    handler = RecordingHandler(faults, pipelining=pipelining)
    port = free_port()
    size = DATA_SIZE_DEFAULT if data_size_limit is None else data_size_limit
    controller = Controller(handler, hostname="127.0.0.1", port=port, data_size_limit=size)
    controller.start()
    try:
        yield port, handler
    finally:
        controller.stop()


async def wait_until(predicate: Callable[[], bool], within_s: float = 30.0) -> None:
    """Poll a condition set by the server thread (an asyncio.Event cannot cross threads)."""
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.01)
