"""Persistent SMTP connections to the configured relays, many messages per connection.

Each relay keeps up to `connections` open aiosmtplib clients; a message
borrows one, and a dropped connection is reopened on next use. Every reply
and error is classified by mailer.core.outcome, in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiosmtplib

from mailer.core import outcome
from mailer.core.outcome import Outcome
from mailer.core.settings import RelaySettings


@dataclass
class Relay:
    """One relay: its settings and a pool of connected clients."""

    settings: RelaySettings
    password: str | None
    # EHLO name (Settings.helo_name); empty: aiosmtplib's socket.getfqdn(), often "localhost".
    helo_name: str = ""
    idle: asyncio.Queue[aiosmtplib.SMTP] = field(default_factory=asyncio.Queue)
    opened: int = 0
    slots: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        self.slots = asyncio.Semaphore(self.settings.connections)

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

    async def _borrow(self) -> aiosmtplib.SMTP:
        while not self.idle.empty():
            client = self.idle.get_nowait()
            if client.is_connected:
                return client
            self.opened -= 1
        client = self._client()
        await client.connect()
        await client.ehlo()  # execute_command does not greet on its own
        self.opened += 1
        return client

    async def send(self, mail_from: str, rcpt: str, data: bytes) -> Outcome:
        """Deliver one message to one recipient; never raises for SMTP or network trouble."""
        async with self.slots:
            try:
                client = await self._borrow()
            except (aiosmtplib.SMTPException, OSError) as exc:
                return outcome.from_connection_error(exc)
            limit = advertised_size(client)
            if limit is not None and len(data) > limit:
                self.idle.put_nowait(client)
                return outcome.too_large(len(data), limit)
            try:
                result = await _transaction(client, mail_from, rcpt, data)
            except _AfterData as exc:
                await self._discard(client)
                return outcome.from_connection_error(exc.__cause__ or exc, after_data=True)
            except (aiosmtplib.SMTPException, OSError) as exc:
                await self._discard(client)
                return outcome.from_connection_error(exc)
            except BaseException:
                # Cancelled mid-transaction, or a bug: the connection's state is
                # unknown, so it is closed rather than handed to the next message.
                await self._discard(client)
                raise
            if result.code == 421:  # the server closes the connection after a 421
                await self._discard(client)
                return result
            self.idle.put_nowait(client)
            return result

    async def _discard(self, client: aiosmtplib.SMTP) -> None:
        self.opened -= 1
        with contextlib.suppress(Exception):  # a broken connection may fail to close
            client.close()

    async def close(self) -> None:
        """QUIT every idle connection."""
        while not self.idle.empty():
            client = self.idle.get_nowait()
            self.opened -= 1
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError):
                client.close()


def advertised_size(client: aiosmtplib.SMTP) -> int | None:
    """The relay's EHLO SIZE (RFC 1870 s.4), or None when it states none (or 0: no limit)."""
    value = client.esmtp_extensions.get("size", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


async def _transaction(client: aiosmtplib.SMTP, mail_from: str, rcpt: str, data: bytes) -> Outcome:
    """MAIL, RCPT, DATA for one recipient, through aiosmtplib's public execute_command.

    Not `sendmail()`: it re-parses both addresses with the stdlib's email
    address parser on every message, which measured ~30 % of the client's CPU
    (../shared/DESIGN.md). Our addresses are already validated and
    normalised at import, and the envelope sender is our own token address.
    """
    mail = await client.execute_command(b"MAIL", b"FROM:<" + mail_from.encode("ascii") + b">")
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
