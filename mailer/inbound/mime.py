"""Reading the parts of an inbound message every classifier needs: a part by type, the
returned original's headers, the plain text, and the addresses, statuses and Message-IDs in
them, tolerant of the malformed MIME that bounces often are. Pure."""

from __future__ import annotations

import re
from email.message import Message
from email.parser import HeaderParser
from email.policy import compat32

from mailer.core.addresses import InvalidAddress, normalise

_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_MESSAGE_ID = re.compile(r"<(\d{1,18})\.([0-9A-Za-z]{4,64})@([^<>\s]+)>")
_MAX_TEXT = 500  # characters of a diagnostic or subject kept


def first(msg: Message, content_type: str) -> Message | None:
    """The first part of this type; the parts are indexed in one walk, kept on the message."""
    index: dict[str, Message] | None = getattr(msg, "_mailer_parts", None)
    if index is None:
        index = {}
        for part in msg.walk():
            index.setdefault(part.get_content_type(), part)
        msg._mailer_parts = index  # type: ignore[attr-defined]
    return index.get(content_type)


def original_headers(msg: Message) -> Message | None:
    """The returned original: its message/rfc822 part or its text/rfc822-headers."""
    whole = first(msg, "message/rfc822")
    if whole is not None:
        payload = whole.get_payload()
        if isinstance(payload, list) and payload and isinstance(payload[0], Message):
            return payload[0]
    headers = first(msg, "text/rfc822-headers")
    if headers is not None:
        data = headers.get_payload(decode=True)
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else ""
        return HeaderParser(policy=compat32).parsestr(text.lstrip(), headersonly=True)
    # Text bounces quote the original below a marker line; its headers still parse.
    body = plain_text(msg)
    for marker in (
        "------ This is a copy of the message, including all the headers. ------",
        "--- Below this line is a copy of the message.",
        "Original message headers:",
    ):
        at = body.find(marker)
        if at >= 0:
            return HeaderParser(policy=compat32).parsestr(body[at + len(marker) :].lstrip())
    return None


def plain_text(msg: Message) -> str:
    """The first text/plain part, decoded."""
    part = first(msg, "text/plain")
    if part is not None:
        data = part.get_payload(decode=True)
        if isinstance(data, bytes):
            try:
                return data.decode(part.get_content_charset() or "utf-8", "replace")
            except LookupError:  # a charset Python does not know: read it as UTF-8
                return data.decode("utf-8", "replace")
    return ""


def message_id_delivery(value: str) -> tuple[str, int] | None:
    """(Message-ID, the delivery id it claims) for one of ours, `<DELIVERY.RANDOM@domain>`."""
    match = _MESSAGE_ID.search(value)
    return None if match is None else (match.group(0), int(match.group(1)))


def status_of(text: str) -> tuple[int, int, int] | None:
    """The first RFC 3463 enhanced status code in `text`, e.g. (5, 1, 1)."""
    found = _STATUS.search(text) if text else None
    return None if found is None else (int(found[1]), int(found[2]), int(found[3]))


def normalised_address(address: str) -> str | None:
    """The address as contacts store it, or None when it is not one."""
    return normalised(address.strip().strip("<>"))


def address_field(value: str | None) -> str | None:
    """`rfc822; someone@example.com` (RFC 3464 s.2.3.1) or a bare address, normalised."""
    if not value:
        return None
    _, _, address = str(value).rpartition(";")
    return normalised(address.strip().strip("<>"))


def normalised(address: str) -> str | None:
    """`normalise`, or None for what is not an address."""
    try:
        return normalise(address)
    except InvalidAddress:
        return None


def text(value: object) -> str | None:
    """A header or field as one line of at most _MAX_TEXT characters, None when empty."""
    if value is None:
        return None
    # jsonb refuses NUL; other controls and undecodable bytes are shown, not kept.
    flat = " ".join(str(value).replace("\x00", " ").split())
    return flat.encode("utf-8", "replace").decode("utf-8")[:_MAX_TEXT] or None
