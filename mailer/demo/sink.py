"""A minimal SMTP server that accepts everything: the demo's mailbox and the benchmark's sink.

Written by hand rather than with aiosmtpd because aiosmtpd spends 0.6–1.2 ms
of CPU per message (measured, ../shared/DESIGN.md), which would make the sink
the bottleneck of a send benchmark on this 2-core machine. It speaks just
enough ESMTP for a well-behaved client (EHLO/HELO, MAIL, RCPT, DATA with
dot-unstuffing, RSET, NOOP, QUIT) and is for 127.0.0.1 only: no TLS, no AUTH,
no size limits. Tests use aiosmtpd, the reference implementation.

    python -m mailer.demo.sink --port 2525 --folder .demo/mail
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
from collections.abc import Callable
from pathlib import Path


class Sink:
    """Counts messages, and writes each as an .eml file when a folder is given."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder
        self.count = 0
        self.recipients: list[str] = []
        self._ids = itertools.count(1)
        self.on_message: Callable[[str, list[str], bytes], None] | None = None
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)

    def store(self, mail_from: str, rcpts: list[str], data: bytes) -> str:
        number = next(self._ids)
        self.count += 1
        if self.folder is not None:
            self.recipients.extend(rcpts)
            name = (
                f"{number:06d}-{rcpts[0].replace('/', '_')}.eml" if rcpts else f"{number:06d}.eml"
            )
            (self.folder / name).write_bytes(data)
        if self.on_message is not None:
            self.on_message(mail_from, rcpts, data)
        return f"{number:06d}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        write = writer.write
        write(b"220 sink ESMTP ready\r\n")
        mail_from, rcpts = "", list[str]()
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                verb = line[:4].upper()
                if verb == b"EHLO":
                    write(b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")
                elif verb == b"HELO":
                    write(b"250 sink\r\n")
                elif verb == b"MAIL":
                    mail_from, rcpts = _address(line), []
                    write(b"250 2.1.0 OK\r\n")
                elif verb == b"RCPT":
                    rcpts.append(_address(line))
                    write(b"250 2.1.5 OK\r\n")
                elif verb == b"DATA":
                    write(b"354 end with <CRLF>.<CRLF>\r\n")
                    data = await _read_data(reader)
                    queue_id = self.store(mail_from, rcpts, data)
                    write(b"250 2.0.0 queued as " + queue_id.encode() + b"\r\n")
                elif verb == b"RSET":
                    mail_from, rcpts = "", []
                    write(b"250 2.0.0 OK\r\n")
                elif verb == b"NOOP":
                    write(b"250 2.0.0 OK\r\n")
                elif verb == b"QUIT":
                    write(b"221 2.0.0 bye\r\n")
                    break
                else:
                    write(b"502 5.5.2 command not implemented\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(ConnectionError):
                writer.close()


def _address(line: bytes) -> str:
    text = line.decode("utf-8", "replace")
    start, end = text.find("<"), text.find(">")
    return text[start + 1 : end] if 0 <= start < end else ""


async def _read_data(reader: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    while True:
        line = await reader.readline()
        if line in (b".\r\n", b".\n", b""):
            return b"".join(chunks)
        chunks.append(line[1:] if line.startswith(b"..") else line)


async def serve(sink: Sink, host: str, port: int) -> asyncio.Server:
    """Start listening; the caller owns the returned server."""
    return await asyncio.start_server(sink.handle, host, port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2525)
    parser.add_argument("--folder", type=Path)
    args = parser.parse_args()

    async def run() -> None:
        server = await serve(Sink(args.folder), args.host, args.port)
        async with server:
            await server.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":
    main()
