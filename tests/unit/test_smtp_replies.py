"""The reply reader of pipelined SMTP: replies come out whole and in order, however split."""

from __future__ import annotations

import asyncio

import aiosmtplib
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.send.connection import Replies

texts = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(
    str.strip
)
replies = st.lists(
    st.tuples(st.integers(200, 599), st.lists(texts, min_size=1, max_size=4)),
    min_size=1,
    max_size=6,
)


def wire(reply: tuple[int, list[str]]) -> bytes:
    """One reply as a server writes it: every line but the last with a hyphen (RFC 5321 s.4.2)."""
    code, lines = reply
    out = b""
    for n, line in enumerate(lines):
        sep = b" " if n == len(lines) - 1 else b"-"
        out += str(code).encode() + sep + line.encode() + b"\r\n"
    return out


async def read_all(reader: Replies, count: int) -> list[tuple[int, str]]:
    return [tuple(await reader.read()) for _ in range(count)]  # type: ignore[misc]


@settings(max_examples=300, deadline=None)
@given(replies, st.data())
def test_replies_are_read_whole_and_in_order_however_the_bytes_are_split(
    sent: list[tuple[int, list[str]]], data: st.DataObject
) -> None:
    stream = b"".join(wire(r) for r in sent)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    reader = Replies(timeout=1)
    start = 0
    for cut in [*cuts, len(stream)]:
        reader.data_received(stream[start:cut])
        start = cut
    got = asyncio.run(read_all(reader, len(sent)))
    assert got == [(code, "\n".join(lines)) for code, lines in sent]


async def test_a_line_that_is_not_a_reply_ends_the_connection_with_a_clear_error() -> None:
    reader = Replies(timeout=1)
    reader.data_received(b"250 ok\r\nHTTP/1.1 400 Bad Request\r\n")
    assert tuple(await reader.read()) == (250, "ok")
    with pytest.raises(aiosmtplib.SMTPResponseException, match="Malformed SMTP reply line"):
        await reader.read()


async def test_a_reply_that_never_comes_times_out() -> None:
    reader = Replies(timeout=0.05)
    reader.data_received(b"250-first line of a reply that never ends\r\n")
    with pytest.raises(aiosmtplib.SMTPReadTimeoutError):
        await reader.read()


async def test_a_closed_connection_fails_the_waiting_read() -> None:
    reader = Replies(timeout=5)
    waiting = asyncio.ensure_future(reader.read())
    await asyncio.sleep(0)
    reader.connection_lost(None)
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await waiting
