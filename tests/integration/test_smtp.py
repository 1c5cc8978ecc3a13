"""The relay's own DATA path against a real SMTP server (aiosmtpd)."""

from __future__ import annotations

from mailer.core.outcome import Status
from mailer.core.settings import RelaySettings
from mailer.send.smtp import Relay
from tests.smtp_servers import Faults, smtp_server

MESSAGE = (
    b"From: shop@example.org\r\nTo: a@example.com\r\nSubject: dots\r\n\r\n"
    b".a line that starts with a period\r\n"
    b"..two of them\r\n"
    b".\r\n"
    b"the lone period above must not end the message\r\n"
)


async def _send(port: int, data: bytes, rcpt: str = "a@example.com") -> Status:
    relay = Relay(RelaySettings(port=port, connections=1, timeout_s=5), None)
    try:
        return (await relay.send("bounces@example.org", rcpt, data)).status
    finally:
        await relay.close()


async def test_lines_starting_with_a_period_arrive_exactly_as_composed() -> None:
    with smtp_server() as (port, handler):
        assert await _send(port, MESSAGE) is Status.SENT
    assert handler.messages[0].data == MESSAGE


async def test_a_message_without_a_final_line_break_still_ends_cleanly() -> None:
    with smtp_server() as (port, handler):
        assert await _send(port, MESSAGE.rstrip(b"\r\n")) is Status.SENT
        assert await _send(port, MESSAGE) is Status.SENT
    assert [m.data for m in handler.messages] == [MESSAGE, MESSAGE]


async def test_one_connection_carries_message_after_message() -> None:
    with smtp_server() as (port, handler):
        relay = Relay(RelaySettings(port=port, connections=1, timeout_s=5), None)
        try:
            for n in range(5):
                result = await relay.send("bounces@example.org", f"p{n}@example.com", MESSAGE)
                assert result.status is Status.SENT
            assert relay.opened == 1
        finally:
            await relay.close()
    assert handler.recipients == [f"p{n}@example.com" for n in range(5)]


async def test_a_connection_dropped_after_the_message_was_handed_over_is_uncertain() -> None:
    with smtp_server(Faults(drop_rate=1.0)) as (port, _):
        assert await _send(port, MESSAGE) is Status.UNCERTAIN
