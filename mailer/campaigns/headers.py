"""Header values as they go on the wire, refused when data could inject a header.

From and To as RFC 5322 addresses (ASCII addr-specs; display names plain, quoted or RFC 2047
encoded words), the Subject within RFC 5322's 998-octet lines, and the RFC 8058 one-click
header beside List-Unsubscribe. Every value from data is checked for CR, LF and other control
characters first (DESIGN: no header value may carry CR or LF from data).
"""

from __future__ import annotations

import binascii
import re

from mailer.campaigns.deliverability import one_click_allowed
from mailer.campaigns.render import MessageError

__all__ = [
    "HeaderInjection",
    "InvalidRecipient",
    "check_header",
    "encode_subject",
    "format_address",
    "one_click_header",
]

_ONE_CLICK = b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
# CR/LF would start a new header (injection); other C0 controls, DEL and the Unicode line
# separators break parsers or get "repaired" differently along the way.
_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")
# An ASCII addr-spec with a dot-atom local part: what the To header can carry unquoted.
_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
)
# A display name that needs neither quoting nor encoding (atext and spaces, no "=?").
_PLAIN_PHRASE = re.compile(r"[A-Za-z0-9!#$%&'*+/?^_`{|}~ -]+")
_RAW_SUBJECT_MAX = 900  # longer ASCII subjects are folded as encoded words (998-octet lines)
_WORD_BYTES = 45  # 45 UTF-8 bytes -> 60 base64 chars -> a 72-char encoded word (max 75)


class HeaderInjection(MessageError):
    """A header value from data holds CR, LF or another control character."""

    reason = "header_injection"


class InvalidRecipient(MessageError):
    """The contact's address cannot go into a To header (not an ASCII addr-spec)."""

    reason = "invalid_address"


def one_click_header(list_unsubscribe: str) -> bytes:
    """RFC 8058 s.3.1: one-click only with an HTTPS URI (a tracker on http:// keeps the link
    and the mailto without claiming one-click; `campaign check` fails such a campaign).
    Loopback counts as secure: nothing crosses a network (the demo's tracker)."""
    # "<scheme://host[:port]/u/…>, <mailto:…>": the origin decides, and is cached.
    end = list_unsubscribe.find("/", list_unsubscribe.find("://") + 3)
    return _ONE_CLICK if one_click_allowed(list_unsubscribe[1:end]) else b""


def check_header(value: str, label: str) -> None:
    """Refuse a header value holding CR, LF or another control character (HeaderInjection)."""
    if _CONTROL.search(value):
        raise HeaderInjection(f"{label}: control character (CR/LF?) in a header value")


def format_address(name: str | None, address: str, label: str = "address") -> bytes:
    """An address header's value: `name <address>`, the name quoted or encoded as needed."""
    check_header(address, label)
    if name:
        check_header(name, f"{label} name")
    if not address.isascii() or not _ADDRESS.fullmatch(address):
        # Non-ASCII addresses would need SMTPUTF8 end to end; refuse rather than mangle.
        raise InvalidRecipient(f"{label}: {address!r} is not an ASCII address")
    if not name:
        return address.encode("ascii")
    if name.isascii():
        # Unquoted, runs of spaces are folding whitespace a reader may collapse: quote those.
        if _PLAIN_PHRASE.fullmatch(name) and name.strip() == name and "  " not in name:
            return f"{name} <{address}>".encode("ascii")
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{quoted}" <{address}>'.encode("ascii")
    return _encoded_words(name) + f" <{address}>".encode("ascii")


def encode_subject(subject: str) -> bytes:
    """The Subject value: as is when short plain ASCII, else RFC 2047 encoded words."""
    check_header(subject, "subject")
    if subject.isascii() and len(subject) <= _RAW_SUBJECT_MAX and "=?" not in subject:
        return subject.encode("ascii")
    return _encoded_words(subject)


def _encoded_words(text: str) -> bytes:
    """RFC 2047 B-encoded words, split between characters, folded one per line."""
    data = text.encode("utf-8")
    words: list[bytes] = []
    start = 0
    while len(data) - start > _WORD_BYTES:
        end = start + _WORD_BYTES
        while data[end] & 0xC0 == 0x80:  # never split inside a UTF-8 sequence (RFC 2047 s.5)
            end -= 1
        words.append(_b_word(data[start:end]))
        start = end
    words.append(_b_word(data[start:]))
    return b"\r\n ".join(words)


def _b_word(chunk: bytes) -> bytes:
    return b"=?utf-8?b?" + binascii.b2a_base64(chunk, newline=False) + b"?="
