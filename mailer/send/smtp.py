"""Persistent SMTP connections to the configured relays, many messages per connection.

Each relay keeps `connections` lanes: a task owning one aiosmtplib client,
taking messages from the relay's queue one after another (a dropped
connection is reopened on next use). Every reply and error is classified by
mailer.core.outcome, in one place.

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
import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiosmtplib

from mailer.core import outcome
from mailer.core.outcome import Outcome
from mailer.core.settings import RelaySettings


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
            client = self._client()
            try:
                await client.connect()
                await client.ehlo()  # execute_command does not greet on its own
            except (aiosmtplib.SMTPException, OSError) as exc:
                client.close()
                return outcome.from_connection_error(exc)
            self.opened += 1
            lane.client = client
        limit = advertised_size(lane.client)
        if limit is not None and len(envelope.data) > limit:
            return outcome.too_large(len(envelope.data), limit)
        try:
            result = await _transaction(
                lane.client, envelope.mail_from, envelope.rcpt, envelope.data, lane.look_ahead
            )
        except _AfterData as exc:
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

    async def _discard(self, client: aiosmtplib.SMTP) -> None:
        self.opened -= 1
        with contextlib.suppress(Exception):  # a broken connection may fail to close
            client.close()

    async def _quit(self, client: aiosmtplib.SMTP) -> None:
        self.opened -= 1
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError):
            client.close()

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
        self.client: aiosmtplib.SMTP | None = None
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


def advertised_size(client: aiosmtplib.SMTP) -> int | None:
    """The relay's EHLO SIZE (RFC 1870 s.4), or None when it states none (or 0: no limit)."""
    value = client.esmtp_extensions.get("size", "").strip()
    return int(value) if value.isascii() and value.isdigit() and int(value) > 0 else None


async def _transaction(
    client: aiosmtplib.SMTP,
    mail_from: str,
    rcpt: str,
    data: bytes,
    on_the_wire: Callable[[], None] = lambda: None,
) -> Outcome:
    """MAIL, RCPT, DATA for one recipient, on aiosmtplib's protocol and public execute_command.

    Not `sendmail()`: it re-parses both addresses with the stdlib's email
    address parser on every message, which measured ~30 % of the client's CPU
    (../shared/DESIGN.md). Our addresses are already validated and
    normalised at import, and the envelope sender is our own token address.
    MAIL FROM is written on the protocol itself, as the payload is: so that
    `on_the_wire` runs the moment it is written (the lane then asks for its
    next message's start), before its reply is awaited.
    """
    protocol = client.protocol
    if protocol is None:
        raise aiosmtplib.SMTPServerDisconnected("Connection lost before MAIL FROM")
    protocol.write(b"MAIL FROM:<" + mail_from.encode("ascii") + b">\r\n")
    on_the_wire()  # must not yield: the reply is read from the next line on
    mail = await protocol.read_response(timeout=client.timeout)
    if mail.code != 250:
        await _reset(client)
        return outcome.from_sender_refusal(mail.code, mail.message)
    accepted = await client.execute_command(b"RCPT", b"TO:<" + rcpt.encode("ascii") + b">")
    if accepted.code not in (250, 251):
        await _reset(client)
        return outcome.from_reply(accepted.code, accepted.message)
    start = await client.execute_command(b"DATA")
    if start.code != 354:
        if start.code != 421:
            await _reset(client)
        return outcome.from_reply(start.code, start.message)
    # Nothing of the message has left yet: a connection found lost here is a plain
    # connection error (retried), not "after data".
    protocol = client.protocol
    if protocol is None:
        raise aiosmtplib.SMTPServerDisconnected("Connection lost before the message")
    protocol.write(_wire(data))
    try:
        reply = await protocol.read_response(timeout=client.timeout)
    except (aiosmtplib.SMTPException, OSError) as exc:
        # Timeout or disconnect while the server held the message: it may be queued.
        raise _AfterData from exc
    return outcome.from_reply(reply.code, reply.message)


# RFC 5321 s.4.5.2: a line that starts with a period gets one more.
_LEADING_PERIOD = re.compile(rb"(?m)^\.")


def _wire(data: bytes) -> bytes:
    """The message as DATA carries it: dot-stuffed, then the end marker.

    Not `client.data()`: it runs two regular expressions over every message
    (line endings, leading periods), measured at ~17 % of the engine's CPU.
    Skeleton.assemble already writes CRLF line endings, and a leading period
    is rare enough to check for before paying for the substitution. Written on
    aiosmtplib's protocol (write, read_response), as its own data() does; the
    connection is ours alone while borrowed, so its command lock is not needed.
    """
    if data.startswith(b".") or b"\n." in data:
        data = _LEADING_PERIOD.sub(b"..", data)
    return data + b".\r\n" if data.endswith(b"\r\n") else data + b"\r\n.\r\n"


class _AfterData(Exception):
    """The connection failed after DATA: the server may have accepted the message."""


async def _reset(client: aiosmtplib.SMTP) -> None:
    """RSET after a refusal so the connection can carry the next message."""
    with contextlib.suppress(aiosmtplib.SMTPException, OSError):
        await client.rset()


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
