"""SMTP PIPELINING (RFC 2920) on the relay's transactions, against real servers.

A scripted server (plain asyncio streams) shows what arrives in each read and
answers as a misbehaving relay might; aiosmtpd, offering PIPELINING or not,
answers the refusals.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from mailer.core.outcome import Outcome, Status
from mailer.core.settings import RelaySettings
from mailer.send.smtp import Relay
from tests.smtp_servers import Faults, smtp_server

MESSAGE = b"From: shop@example.org\r\nTo: a@example.com\r\nSubject: hi\r\n\r\nhello\r\n"
Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def scripted(script: Script) -> AsyncIterator[int]:
    """A server on 127.0.0.1 that plays `script` on each connection; yields its port."""

    async def play(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await script(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(play, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ehlo: bytes) -> None:
    writer.write(b"220 scripted ESMTP\r\n")
    await reader.readline()  # EHLO
    writer.write(ehlo)


async def _send(port: int, rcpt: str = "a@example.com", connections: int = 1) -> Outcome:
    relay = Relay(RelaySettings(port=port, connections=connections, timeout_s=5), None)
    try:
        return await relay.send("bounces@example.org", rcpt, MESSAGE)
    finally:
        await relay.close()


async def test_a_relay_offering_pipelining_gets_mail_rcpt_and_data_in_one_write() -> None:
    first_reads: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await greet(reader, writer, b"250-scripted\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
        first_reads.append(await reader.read(4096))
        writer.write(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go on\r\n")
        await reader.readuntil(b"\r\n.\r\n")
        writer.write(b"250 2.0.0 queued\r\n")
        await reader.readline()  # QUIT
        writer.write(b"221 bye\r\n")

    async with scripted(script) as port:
        result = await _send(port)
    assert result.status is Status.SENT
    assert first_reads == [
        b"MAIL FROM:<bounces@example.org>\r\nRCPT TO:<a@example.com>\r\nDATA\r\n"
    ]


async def test_a_relay_without_pipelining_gets_each_command_after_the_reply_before_it() -> None:
    reads: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await greet(reader, writer, b"250-scripted\r\n250 8BITMIME\r\n")
        for reply in (b"250 2.1.0 ok\r\n", b"250 2.1.5 ok\r\n", b"354 go on\r\n"):
            await asyncio.sleep(0.05)  # a client that did not wait would have sent more by now
            reads.append(await reader.read(4096))
            writer.write(reply)
        await reader.readuntil(b"\r\n.\r\n")
        writer.write(b"250 2.0.0 queued\r\n")

    async with scripted(script) as port:
        result = await _send(port)
    assert result.status is Status.SENT
    mail, rcpt = b"MAIL FROM:<bounces@example.org>\r\n", b"RCPT TO:<a@example.com>\r\n"
    assert reads == [mail, rcpt, b"DATA\r\n"]


async def test_a_relay_accepting_data_after_refusing_the_recipient_gets_an_empty_message() -> None:
    after_354: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await greet(reader, writer, b"250-scripted\r\n250 PIPELINING\r\n")
        await reader.readuntil(b"DATA\r\n")
        # RFC 2920 s.3.1: the client must end such a DATA with the lone period, nothing else.
        writer.write(b"250 2.1.0 ok\r\n550 5.1.1 no such user\r\n354 go on\r\n")
        after_354.append(await reader.readline())
        writer.write(b"554 5.5.1 no valid recipients\r\n")
        after_354.append(await reader.readline())
        writer.write(b"250 2.0.0 reset\r\n")

    async with scripted(script) as port:
        result = await _send(port)
    assert (result.status, result.code) == (Status.BOUNCED, 550)
    assert result.hard_bounce
    assert after_354 == [b".\r\n", b"RSET\r\n"]


async def test_a_421_to_pipelined_mail_from_is_the_outcome_though_the_relay_hangs_up() -> None:
    connections = 0

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await greet(reader, writer, b"250-scripted\r\n250 PIPELINING\r\n")
        await reader.readuntil(b"DATA\r\n")
        if connections == 1:
            writer.write(b"421 4.7.0 too many messages, slow down\r\n")
            writer.close()
            return
        writer.write(b"250 ok\r\n250 ok\r\n354 go on\r\n")
        await reader.readuntil(b"\r\n.\r\n")
        writer.write(b"250 2.0.0 queued\r\n")

    async with scripted(script) as port:
        relay = Relay(RelaySettings(port=port, connections=1, timeout_s=5), None)
        try:
            refused = await relay.send("bounces@example.org", "a@example.com", MESSAGE)
            again = await relay.send("bounces@example.org", "a@example.com", MESSAGE)
        finally:
            await relay.close()
    assert (refused.status, refused.code, refused.slow_down) == (Status.DEFERRED, 421, True)
    assert again.status is Status.SENT
    assert connections == 2


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one by one"])
async def test_a_refused_recipient_leaves_the_connection_ready_for_the_next(
    pipelining: bool,
) -> None:
    faults = Faults(rcpt={"gone@example.com": "550 5.1.1 no such user"})
    with smtp_server(faults, pipelining=pipelining) as (port, handler):
        relay = Relay(RelaySettings(port=port, connections=1, timeout_s=5), None)
        try:
            gone = await relay.send("bounces@example.org", "gone@example.com", MESSAGE)
            here = await relay.send("bounces@example.org", "here@example.com", MESSAGE)
            assert relay.opened == 1
        finally:
            await relay.close()
    assert (gone.status, gone.code, gone.hard_bounce) == (Status.BOUNCED, 550, True)
    assert here.status is Status.SENT
    assert handler.recipients == ["here@example.com"]


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one by one"])
async def test_a_refused_sender_is_deferred_and_nothing_is_delivered(pipelining: bool) -> None:
    with smtp_server(Faults(mail_reply="553 5.7.1 sender refused"), pipelining=pipelining) as (
        port,
        handler,
    ):
        result = await _send(port)
    assert (result.status, result.code) == (Status.DEFERRED, 553)
    assert result.reply.startswith("sender refused")
    assert handler.recipients == []
