"""`mailer inbound ingest FILE|DIR|-`: bounces without an MX, read from files.

For operators whose relay drops bounces into a mailbox: a single .eml, an mbox, a Maildir
(cur/ and new/), a folder of .eml files, or one message on standard input (a Postfix `pipe`
transport: `mailer inbound ingest - --sender ${sender} --recipient ${recipient}`). Every
message is stored exactly as `inbound serve` stores what it receives, then the same
processor classifies it and applies its effects: one parsing path for all of them. A file
ingested twice is stored once (the message's hash).
"""

from __future__ import annotations

import mailbox
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses
from pathlib import Path
from typing import BinaryIO


class IngestError(ValueError):
    """The input cannot be read as messages; the message names the file."""


@dataclass(frozen=True, slots=True)
class FoundMessage:
    """One message read from a file, with its envelope as the delivering MTA recorded it."""

    raw: bytes
    source: str  # file, mbox, maildir, stdin
    origin: str  # the path (and key) it came from
    mail_from: str | None
    rcpt_to: tuple[str, ...]


def read(
    path: str,
    stdin: BinaryIO | None = None,
    *,
    sender: str | None = None,
    recipients: Sequence[str] = (),
) -> Iterator[FoundMessage]:
    """Every message at `path` ('-': standard input), in a stable order."""
    if path == "-":
        if stdin is None:
            raise IngestError("-: no standard input")
        yield _found(stdin.read(), "stdin", "stdin", sender, recipients)
        return
    where = Path(path)
    if where.is_dir():
        if all((where / sub).is_dir() for sub in ("cur", "new")):
            box = mailbox.Maildir(where, factory=None, create=False)
            for key in sorted(box.iterkeys()):
                yield _found(box.get_bytes(key), "maildir", f"{where}/{key}", sender, recipients)
            return
        files = sorted(p for p in where.iterdir() if p.is_file() and p.suffix == ".eml")
        if not files:
            raise IngestError(f"{where}: neither a Maildir (cur/, new/) nor a folder of .eml files")
        for file in files:
            yield _found(file.read_bytes(), "file", str(file), sender, recipients)
        return
    try:
        with where.open("rb") as fh:
            head = fh.read(5)
    except OSError as exc:
        raise IngestError(f"{where}: {exc.strerror}") from None
    if head == b"From ":
        box_file = mailbox.mbox(where, factory=None, create=False)
        try:
            for key in box_file.iterkeys():
                yield _found(box_file.get_bytes(key), "mbox", f"{where}#{key}", sender, recipients)
        finally:
            box_file.close()
        return
    yield _found(where.read_bytes(), "file", str(where), sender, recipients)


def _found(
    raw: bytes, source: str, origin: str, sender: str | None, recipients: Sequence[str]
) -> FoundMessage:
    """The envelope from the command line, else from the delivering MTA's headers."""
    if raw.find(b"\r\n") < 0:
        raw = raw.replace(b"\n", b"\r\n")  # as SMTP carried it: one hash for one message
    headers = BytesHeaderParser(policy=compat32).parsebytes(raw)
    mail_from = sender
    if mail_from is None and headers.get("Return-Path") is not None:
        mail_from = str(headers["Return-Path"]).strip().strip("<>")
    rcpt = tuple(recipients)
    if not rcpt:
        # RFC 9228 Delivered-To, then Postfix's X-Original-To, Exim's Envelope-To, then To.
        for name in ("Delivered-To", "X-Original-To", "Envelope-To", "To"):
            values = headers.get_all(name) or []
            addresses = [a for _, a in getaddresses([str(v) for v in values]) if a]
            if addresses:
                rcpt = tuple(addresses)
                break
    return FoundMessage(raw, source, origin, mail_from, rcpt)
