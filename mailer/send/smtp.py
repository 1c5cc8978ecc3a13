"""Persistent SMTP connections to the configured relays, many messages per connection.

Each relay keeps `connections` lanes: a task owning one connection
(mailer/send/connection.py: opened by aiosmtplib, MAIL, RCPT and DATA
pipelined where the relay offers it), taking messages from the relay's queue
one after another (a dropped connection is reopened on next use). Every reply
and error is classified by mailer.core.outcome, in one place.

A lane asks for a message's start (Envelope.ask) while it still carries the
message before it, and awaits the answer right before MAIL FROM: the engine
makes the start durable meanwhile (mailer/send/recorder.py), so the wait for
it overlaps the previous SMTP transaction instead of adding to it. A lane
hands a message's outcome over (Envelope.done) before it asks for the start
of the message after next: the bound on what a crash leaves uncertain rests
on that order.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiosmtplib

from mailer.core import outcome
from mailer.core.outcome import Outcome
from mailer.core.settings import RelaySettings
from mailer.send.connection import AfterData, Connection


def _go() -> asyncio.Future[bool]:
    go: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    go.set_result(True)
    return go


def _ignore(_: Outcome | None) -> None:
    return None


@dataclass(eq=False, slots=True)
class Envelope:
    """One message to one recipient, on its way through a lane."""

    mail_from: str
    rcpt: str
    data: bytes
    result: asyncio.Future[Outcome | None]
    # Called when a lane is about to carry the message (one message ahead); the
    # future it returns is awaited right before MAIL FROM: True, the message may go.
    ask: Callable[[], asyncio.Future[bool]] = _go
    # Called with the outcome (None: not handed to SMTP) as soon as it is known.
    done: Callable[[Outcome | None], None] = _ignore
    abandoned: bool = False  # the sender stopped waiting (cancelled): never send it


@dataclass
class Relay:
    """One relay: its settings and its lanes, one connected client each."""

    settings: RelaySettings
    password: str | None
    # EHLO name (Settings.helo_name); empty: aiosmtplib's socket.getfqdn(), often "localhost".
    helo_name: str = ""
    waiting: asyncio.Queue[Envelope | None] = field(default_factory=asyncio.Queue)
    lanes: list[asyncio.Task[None]] = field(default_factory=list)
    opened: int = 0
    # Messages a lane asks to start while it carries the one before them.
    look_ahead: int = 1
    # Called when a lane needs a start not yet answered (the engine's recorder hurries).
    on_wait: Callable[[], None] = lambda: None

    def _client(self) -> aiosmtplib.SMTP:
        s = self.settings
        return aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            use_tls=s.tls == "tls",
            # False, not None: never upgrade opportunistically when TLS is "none".
            start_tls=s.tls == "starttls",
            username=s.username or None,
            password=self.password if s.username else None,
            timeout=s.timeout_s,
            local_hostname=self.helo_name or None,
        )

    async def send(self, mail_from: str, rcpt: str, data: bytes) -> Outcome:
        """Deliver one message to one recipient; never raises for SMTP or network trouble."""
        result = await self.deliver(mail_from, rcpt, data)
        assert result is not None  # nothing asked, so nothing refused
        return result

    async def deliver(
        self,
        mail_from: str,
        rcpt: str,
        data: bytes,
        *,
        ask: Callable[[], asyncio.Future[bool]] = _go,
        done: Callable[[Outcome | None], None] = _ignore,
    ) -> Outcome | None:
        """Deliver one message once `ask` allows it; None if it did not (never handed to SMTP).

        Never raises for SMTP or network trouble.
        """
        if not self.lanes:
            self.lanes = [
                asyncio.create_task(self._lane(), name=f"smtp:{self.settings.name}:{n}")
                for n in range(self.settings.connections)
            ]
        envelope = Envelope(
            mail_from, rcpt, data, asyncio.get_running_loop().create_future(), ask, done
        )
        self.waiting.put_nowait(envelope)
        try:
            return await envelope.result
        except asyncio.CancelledError:
            envelope.abandoned = True
            raise

    async def _lane(self) -> None:
        """Carry messages one after another on one connection, until the end marker."""
        lane = _Lane(self.waiting, self.look_ahead, self.on_wait)
        try:
            while True:
                if not lane.asked:  # nothing looked ahead to: wait for the next message
                    lane.add(await self.waiting.get())
                envelope, ready = lane.asked.popleft()
                if envelope is None:
                    break
                if not ready.done():
                    self.on_wait()
                await self._hand_over(lane, envelope, await ready)
                # Its outcome is handed over: if no MAIL FROM went out (a refused start,
                # no connection), the messages after it are only now asked for.
                lane.look_ahead()
            if lane.client is not None:
                client, lane.client = lane.client, None
                await self._quit(client)
        finally:
            if lane.client is not None:
                await self._discard(lane.client)

    async def _hand_over(self, lane: _Lane, envelope: Envelope, go: bool) -> None:
        """Carry one message if it may go, and say how it went (done, then result)."""
        try:
            result = await self._carry(lane, envelope) if go and not envelope.abandoned else None
            envelope.done(result)
        except Exception as exc:  # a bug: the sender logs it, the lane goes on
            if not envelope.result.done():
                envelope.result.set_exception(exc)
            return
        if not envelope.result.done():
            envelope.result.set_result(result)

    async def _carry(self, lane: _Lane, envelope: Envelope) -> Outcome:
        """One transaction on the lane's connection, opened (again) if need be."""
        if lane.client is not None and not lane.client.is_connected:
            await self._drop(lane)
        if lane.client is None:
            try:
                lane.client = await Connection.open(self._client())
            except (aiosmtplib.SMTPException, OSError) as exc:
                return outcome.from_connection_error(exc)
            self.opened += 1
        limit = lane.client.size_limit
        if limit is not None and len(envelope.data) > limit:
            return outcome.too_large(len(envelope.data), limit)
        try:
            result = await lane.client.carry(
                envelope.mail_from, envelope.rcpt, envelope.data, lane.look_ahead
            )
        except AfterData as exc:
            await self._drop(lane)
            return outcome.from_connection_error(exc.__cause__ or exc, after_data=True)
        except (aiosmtplib.SMTPException, OSError) as exc:
            await self._drop(lane)
            return outcome.from_connection_error(exc)
        except BaseException:
            # Cancelled mid-transaction, or a bug: the connection's state is
            # unknown, so it is closed rather than used for the next message.
            await self._drop(lane)
            raise
        if result.code == 421:  # the server closes the connection after a 421
            await self._drop(lane)
        return result

    async def _drop(self, lane: _Lane) -> None:
        if lane.client is not None:
            client, lane.client = lane.client, None
            await self._discard(client)

    async def _discard(self, client: Connection) -> None:
        self.opened -= 1
        with contextlib.suppress(Exception):  # a broken connection may fail to close
            client.close()

    async def _quit(self, client: Connection) -> None:
        self.opened -= 1
        await client.quit()

    async def close(self) -> None:
        """Let each lane finish what it was given, then QUIT its connection."""
        for _ in self.lanes:
            self.waiting.put_nowait(None)
        lanes, self.lanes = self.lanes, []
        await asyncio.gather(*lanes, return_exceptions=True)


class _Lane:
    """A lane's state: its connection, and the messages it looks ahead to."""

    __slots__ = ("asked", "client", "depth", "ended", "on_wait", "waiting")

    def __init__(
        self, waiting: asyncio.Queue[Envelope | None], depth: int, on_wait: Callable[[], None]
    ) -> None:
        self.waiting = waiting
        self.depth = depth
        self.on_wait = on_wait
        self.client: Connection | None = None
        # Taken from the queue, their starts asked for, in order (None: the end marker).
        self.asked: deque[tuple[Envelope | None, asyncio.Future[bool]]] = deque()
        self.ended = False

    def add(self, envelope: Envelope | None) -> None:
        self.asked.append((envelope, _ask(envelope)))
        self.ended = envelope is None

    def look_ahead(self) -> None:
        """Take up to `depth` messages after the current one and ask for their starts.

        Called as soon as the current message's MAIL FROM is written, so their
        starts are committed while this transaction runs; or, when none was
        written, once the current message's outcome is handed over. Either way
        after the outcome of the message before the current one: what the bound
        rests on (mailer/send/recorder.py). The next message's start not being
        committed yet hurries the recorder: it is needed within one transaction.
        """
        while not self.ended and len(self.asked) < self.depth and not self.waiting.empty():
            self.add(self.waiting.get_nowait())
        if self.asked and not self.asked[0][1].done():
            self.on_wait()


def _ask(envelope: Envelope | None) -> asyncio.Future[bool]:
    """Ask for an envelope's start, unless there is none or its sender gave up on it."""
    if not isinstance(envelope, Envelope) or envelope.abandoned:
        no: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        no.set_result(False)
        return no
    return envelope.ask()


class Relays:
    """Several relays sharing the traffic by weight."""

    def __init__(self, relays: Sequence[Relay], rng: random.Random | None = None) -> None:
        if not relays:
            raise ValueError("at least one SMTP relay is needed")
        self.relays = list(relays)
        self.weights = [r.settings.weight for r in self.relays]
        self.rng = rng or random.Random()

    def pick(self) -> Relay:
        return self.rng.choices(self.relays, self.weights)[0]

    @property
    def open_connections(self) -> int:
        return sum(r.opened for r in self.relays)

    @property
    def capacity(self) -> int:
        return sum(r.settings.connections for r in self.relays)

    async def close(self) -> None:
        await asyncio.gather(*(r.close() for r in self.relays))
