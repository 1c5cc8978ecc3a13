"""One SMTP connection to a relay: opened by aiosmtplib, then carrying transactions itself.

aiosmtplib connects, greets, upgrades (implicit TLS or STARTTLS) and
authenticates: what a library should do for us. The transactions then run on
`Replies`, a reply reader of our own set on the same transport, because
aiosmtplib reads one reply per command written and drops a reply that arrives
before its read (its `read_response` says so): it cannot pipeline. PIPELINING
(RFC 2920), which every large relay offers, sends MAIL FROM, RCPT TO and DATA
in one write and reads their three replies after it: two round trips per
message instead of four. Each round trip of a worker waits for its event loop
to come round (rendering, claiming, recording), which is what held a
connection longest (bench/README.md, "Send"). Without PIPELINING in the
relay's EHLO the commands go one at a time, as RFC 2920 s.3 requires.

Replies keep aiosmtplib's types and errors (SMTPResponse, SMTPServerDisconnected,
SMTPReadTimeoutError), so mailer.core.outcome classifies them in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import deque
from collections.abc import Callable
from typing import cast

import aiosmtplib
from aiosmtplib.response import SMTPResponse

from mailer.core import outcome
from mailer.core.outcome import Outcome

# A reply line longer than this, or replies piling up beyond it, are not SMTP (RFC 5321
# s.4.5.3.1.5 allows 512 octets a line; aiosmtplib allows 8,192).
MAX_LINE = 8192
MAX_PENDING = MAX_LINE * 4


class Replies(asyncio.Protocol):
    """The replies of a connection, parsed in order however they arrive (RFC 5321 s.4.2)."""

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout  # seconds to wait for each reply
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._replies: deque[SMTPResponse] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._error: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        try:
            while (reply := self._parse()) is not None:
                self._replies.append(reply)
            if len(self._buffer) > MAX_PENDING:
                raise aiosmtplib.SMTPResponseException(-1, "Response too long")
        except aiosmtplib.SMTPResponseException as exc:
            self._fail(exc)
            if self.transport is not None:
                self.transport.close()
            return
        self._wake()

    def eof_received(self) -> bool:
        self._fail(aiosmtplib.SMTPServerDisconnected("Unexpected EOF received"))
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(aiosmtplib.SMTPServerDisconnected(f"Connection lost: {exc or 'closed'}"))
        self.transport = None

    def _fail(self, error: Exception) -> None:
        if self._error is None:
            self._error = error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _parse(self) -> SMTPResponse | None:
        """The first complete reply in the buffer, taken out of it; None if there is none yet."""
        lines: list[bytes] = []
        offset = 0
        while (end := self._buffer.find(b"\n", offset)) != -1:
            line = bytes(self._buffer[offset : end + 1])
            if len(line) > MAX_LINE:
                raise aiosmtplib.SMTPResponseException(-1, "Response line too long")
            if not _REPLY_LINE.match(line):
                shown = line.decode("utf-8", "replace").rstrip()
                raise aiosmtplib.SMTPResponseException(-1, f"Malformed SMTP reply line: {shown}")
            offset = end + 1
            lines.append(line)
            if line[3:4] != b"-":  # the last line of a multiline reply has a space (or nothing)
                del self._buffer[:offset]
                message = b"\n".join(x[4:].strip(b" \t\r\n") for x in lines)
                return SMTPResponse(int(lines[0][:3]), message.decode("utf-8", "surrogateescape"))
        return None

    def write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        self.transport.write(data)

    async def read(self) -> SMTPResponse:
        """The next reply, waiting up to the connection's timeout for it."""
        while not self._replies:
            if self._error is not None:
                raise self._error
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(self.timeout):
                    await self._waiter
            except TimeoutError as exc:
                raise aiosmtplib.SMTPReadTimeoutError("Timed out waiting for a reply") from exc
            finally:
                self._waiter = None
        return self._replies.popleft()

    @property
    def is_connected(self) -> bool:
        transport = self.transport
        return self._error is None and transport is not None and not transport.is_closing()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


_REPLY_LINE = re.compile(rb"[2-5][0-9][0-9]([ -]|\r?\n)")


class Connection:
    """An open, greeted (and authenticated) connection; transactions go through `carry`."""

    def __init__(self, replies: Replies, extensions: dict[str, str]) -> None:
        self.replies = replies
        # What the relay's EHLO offered, read once for the connection's every message.
        self.pipelining = "pipelining" in extensions
        self.size_limit = _size_limit(extensions)

    @classmethod
    async def open(cls, client: aiosmtplib.SMTP) -> Connection:
        """Connect and greet with aiosmtplib, then take its transport over.

        Raises aiosmtplib.SMTPException or OSError when that fails (the client is closed).
        """
        try:
            await client.connect()  # TLS, STARTTLS and AUTH as the relay's settings say
            await client.ehlo()
        except BaseException:
            client.close()
            raise
        transport = client.transport
        if transport is None or transport.is_closing():
            client.close()
            raise aiosmtplib.SMTPServerDisconnected("Connection lost after EHLO")
        replies = Replies(client.timeout)
        transport.set_protocol(replies)
        replies.connection_made(transport)
        return cls(replies, dict(client.esmtp_extensions))

    @property
    def is_connected(self) -> bool:
        return self.replies.is_connected

    async def carry(
        self, mail_from: str, rcpt: str, data: bytes, on_the_wire: Callable[[], None]
    ) -> Outcome:
        """MAIL, RCPT, DATA and the message for one recipient.

        `on_the_wire` runs the moment MAIL FROM is written (the lane then asks
        for its next message's start), before any reply is awaited. Raises
        AfterData when the connection fails once the message was sent, other
        aiosmtplib errors or OSError when it fails before.
        """
        mail = b"MAIL FROM:<" + mail_from.encode("ascii") + b">\r\n"
        to = b"RCPT TO:<" + rcpt.encode("ascii") + b">\r\n"
        if self.pipelining:
            # RFC 2920 s.3.1: MAIL, RCPT and DATA may go in one group, DATA last.
            self.replies.write(mail + to + b"DATA\r\n")
            on_the_wire()  # must not yield: the replies are read from the next line on
            refused = await self._pipelined_replies()
        else:
            self.replies.write(mail)
            on_the_wire()
            refused = await self._replies_one_by_one(to)
        if refused is not None:
            return refused
        # Nothing of the message has left yet: a connection found lost here is a plain
        # connection error (retried), not "after data".
        self.replies.write(_wire(data))
        try:
            reply = await self.replies.read()
        except (aiosmtplib.SMTPException, OSError) as exc:
            # Timeout or disconnect while the server held the message: it may be queued.
            raise AfterData from exc
        return outcome.from_reply(reply.code, reply.message)

    async def _pipelined_replies(self) -> Outcome | None:
        """The replies to MAIL, RCPT and DATA: None when the message may follow."""
        got: list[SMTPResponse] = []
        try:
            while len(got) < 3:
                got.append(await self.replies.read())
        except (aiosmtplib.SMTPException, OSError):
            if not got or _envelope_accepted(got):
                raise
            # A refusal came first (a 421 closes the connection): it is the outcome.
            self.close()
        if _envelope_accepted(got):
            start = got[2]
            if start.code == 354:
                return None
            await self._reset_unless_closing(start.code)
            return outcome.from_reply(start.code, start.message)
        if len(got) == 3 and got[2].code == 354:
            # RFC 2920 s.3.1: a relay that accepted DATA after refusing the envelope gets
            # an empty message (the lone period), which it must deliver to no one.
            self.replies.write(b".\r\n")
            await self.replies.read()
        mail = got[0]
        if mail.code != 250:
            await self._reset_unless_closing(mail.code)
            return outcome.from_sender_refusal(mail.code, mail.message)
        accepted = got[1]
        await self._reset_unless_closing(accepted.code)
        return outcome.from_reply(accepted.code, accepted.message)

    async def _replies_one_by_one(self, to: bytes) -> Outcome | None:
        """MAIL's reply, then RCPT and DATA each in turn: None when the message may follow."""
        mail = await self.replies.read()
        if mail.code != 250:
            await self._reset_unless_closing(mail.code)
            return outcome.from_sender_refusal(mail.code, mail.message)
        self.replies.write(to)
        accepted = await self.replies.read()
        if accepted.code not in (250, 251):
            await self._reset_unless_closing(accepted.code)
            return outcome.from_reply(accepted.code, accepted.message)
        self.replies.write(b"DATA\r\n")
        start = await self.replies.read()
        if start.code != 354:
            await self._reset_unless_closing(start.code)
            return outcome.from_reply(start.code, start.message)
        return None

    async def _reset_unless_closing(self, code: int) -> None:
        # RFC 5321 s.3.8: after a 421 the server closes the connection.
        if code != 421 and self.is_connected:
            await self.reset()

    async def reset(self) -> None:
        """RSET after a refusal so the connection can carry the next message."""
        with contextlib.suppress(aiosmtplib.SMTPException, OSError):
            self.replies.write(b"RSET\r\n")
            await self.replies.read()

    async def quit(self) -> None:
        """QUIT, then close, whatever the relay answers."""
        with contextlib.suppress(aiosmtplib.SMTPException, OSError):
            self.replies.write(b"QUIT\r\n")
            await self.replies.read()
        self.replies.close()

    def close(self) -> None:
        self.replies.close()


def _size_limit(extensions: dict[str, str]) -> int | None:
    """The relay's EHLO SIZE (RFC 1870 s.4), or None when it states none (or 0: no limit)."""
    value = extensions.get("size", "").strip()
    return int(value) if value.isascii() and value.isdigit() and int(value) > 0 else None


def _envelope_accepted(replies: list[SMTPResponse]) -> bool:
    """Whether MAIL and RCPT, as far as their replies came, were accepted."""
    return replies[0].code == 250 and (len(replies) < 2 or replies[1].code in (250, 251))


# RFC 5321 s.4.5.2: a line that starts with a period gets one more.
_LEADING_PERIOD = re.compile(rb"(?m)^\.")


def _wire(data: bytes) -> bytes:
    """The message as DATA carries it: dot-stuffed, then the end marker.

    Not aiosmtplib's data(): it runs two regular expressions over every message
    (line endings, leading periods), measured at ~17 % of the engine's CPU.
    Skeleton.assemble already writes CRLF line endings, and a leading period
    is rare enough to check for before paying for the substitution.
    """
    if data.startswith(b".") or b"\n." in data:
        data = _LEADING_PERIOD.sub(b"..", data)
    return data + b".\r\n" if data.endswith(b"\r\n") else data + b"\r\n.\r\n"


class AfterData(Exception):
    """The connection failed after DATA: the server may have accepted the message."""
