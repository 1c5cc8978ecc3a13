"""Bounces: RFC 3464 delivery-status notifications, and the text bounces of MTAs that send
none (Exim's, Yahoo's, older Exchange), read by flufl.bounce (GNU Mailman's detectors). Pure.

A DSN's Action failed with a 5.x.x Status is a hard bounce, failed with 4.x.x or delayed a
soft one (RFC 3463 classes); delivered / relayed / expanded notify success and change
nothing. A hard bounce suppresses the address only when its status says the address is dead
(mailer.core.outcome.dead_address, the rule a first-hop refusal follows too).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from email.message import Message
from email.parser import HeaderParser
from email.policy import compat32
from typing import Any

from flufl.bounce import all_failures

from mailer.core.outcome import dead_address
from mailer.inbound.mime import address_field, first, normalised, plain_text, status_of, text
from mailer.inbound.verdict import Classification, Envelope, Kind, RefsOf

# flufl.bounce logs a traceback for a detector that trips on malformed input before
# re-raising; text_bounce handles that, so only its critical messages are worth a line.
logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)


def dsn(msg: Message, refs_of: RefsOf) -> Classification | None:
    """An RFC 3464 report's verdict, or None when it has no per-recipient block."""
    blocks = _status_blocks(msg)
    if not blocks:
        return None
    best = max(blocks, key=_severity)
    action = _field(best, "action").lower()
    status_text = _field(best, "status")
    diagnostic = text(best.get("diagnostic-code"))
    status = status_of(status_text) or status_of(diagnostic or "")
    recipient = address_field(best.get("original-recipient")) or address_field(
        best.get("final-recipient")
    )
    refs, bad = refs_of(recipient)
    detail: dict[str, Any] = {
        "action": action or None,
        "status": None if status is None else ".".join(map(str, status)),
        "diagnostic": diagnostic,
        "remote_mta": text(best.get("remote-mta")),
        "reporting_mta": text(_per_message(msg).get("reporting-mta")),
    }
    if action.startswith(("delivered", "relayed", "expanded")):
        detail["reason"] = "a delivery-status notification of success"
        return Classification(Kind.AUTOREPLY, refs, detail, bad_tokens=bad)
    if action.startswith("delayed"):
        return Classification(Kind.DSN_SOFT, refs, detail, bad_tokens=bad)
    if status is None:
        status = (5, 0, 0) if action.startswith(("failed", "error")) else (4, 0, 0)
        detail["status"] = ".".join(map(str, status))
    if status[0] == 5:
        return Classification(Kind.DSN_HARD, refs, detail, dead_address(status), bad)
    return Classification(Kind.DSN_SOFT, refs, detail, bad_tokens=bad)


def text_bounce(msg: Message, refs_of: RefsOf) -> Classification | None:
    """A non-RFC bounce's verdict by flufl.bounce, or None when it finds no failed recipient."""
    try:
        temporary, permanent = all_failures(msg)
    except Exception:  # its detectors assume well-formed headers; ours is bad input
        return None
    if not temporary and not permanent:
        return None
    hard = bool(permanent)
    addresses = sorted(a.decode("ascii", "replace") for a in (permanent or temporary))
    body = plain_text(msg)
    status = status_of(body) or ((5, 0, 0) if hard else (4, 0, 0))
    if hard and status[0] != 5:
        status = (5, 0, 0)
    recipient = normalised(addresses[0]) if addresses else None
    refs, bad = refs_of(recipient)
    detail: dict[str, Any] = {
        "action": "failed" if hard else "delayed",
        "status": ".".join(map(str, status)),
        "diagnostic": _diagnostic_line(body, addresses),
        "detector": "flufl.bounce",
        "recipients": addresses[:10],
    }
    if hard:
        return Classification(Kind.DSN_HARD, refs, detail, dead_address(status), bad)
    return Classification(Kind.DSN_SOFT, refs, detail, bad_tokens=bad)


def from_mailer_daemon(msg: Message, envelope: Envelope) -> bool:
    """RFC 5321 s.4.5.5: bounces come from the null sender; headers name the daemon too."""
    if envelope.mail_from is not None and envelope.mail_from.strip("<> ") == "":
        return True
    sender = str(msg.get("From") or "").lower() + str(msg.get("Return-Path") or "")
    return "mailer-daemon" in sender or "postmaster" in sender or "<>" in sender


def _status_blocks(msg: Message) -> list[Message]:
    """The per-recipient blocks of the message/delivery-status part (RFC 3464 s.2.3)."""
    part = first(msg, "message/delivery-status")
    if part is not None:
        payload = part.get_payload()
        if isinstance(payload, list):
            blocks = [b for b in payload if isinstance(b, Message)]
        else:  # some MTAs send it base64 or as one block of text: parse it ourselves
            data = part.get_payload(decode=True) or b""
            if not isinstance(data, bytes):
                return []
            chunks = re.split(r"\r?\n\s*\r?\n", data.decode("utf-8", "replace").strip())
            blocks = [HeaderParser(policy=compat32).parsestr(c) for c in chunks]
        return [b for b in blocks[1:] if b.get("action") or b.get("status")] or [
            b for b in blocks if b.get("action") or b.get("status")
        ]
    return []


def _per_message(msg: Message) -> Message:
    part = first(msg, "message/delivery-status")
    if part is not None:
        payload = part.get_payload()
        if isinstance(payload, list) and payload and isinstance(payload[0], Message):
            return payload[0]
    return Message()


def _severity(block: Message) -> tuple[int, int]:
    """Failed beats delayed beats the rest; 5.x.x beats 4.x.x: the block that decides."""
    action = _field(block, "action").lower()
    rank = 2 if action.startswith(("failed", "error")) else 1 if action.startswith("delayed") else 0
    status = status_of(_field(block, "status"))
    return rank, status[0] if status else 0


def _field(block: Message, name: str) -> str:
    # A field with bytes outside ASCII comes back as an email.header.Header, not a str.
    return str(block.get(name) or "")


def _diagnostic_line(body: str, addresses: Iterable[str]) -> str | None:
    """The line of a text bounce that gives the reason (the one with an SMTP code)."""
    for line in body.splitlines():
        if re.search(r"\b[45]\d\d\b", line) and len(line.strip()) > 3:
            return text(line)
    for address in addresses:
        for line in body.splitlines():
            if address in line:
                return text(line)
    return None
