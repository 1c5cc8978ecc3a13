"""What an inbound message is, by the standards, and what in it names the delivery. Pure.

In order (the first that applies wins):

1. Sent to `unsubscribe+TOKEN@` with a valid unsubscribe token: a mailto unsubscribe (RFC
   2369 / RFC 8058 s.3.2: any message to the List-Unsubscribe mailto, whatever it says).
2. `multipart/report; report-type=feedback-report`: an RFC 5965 ARF report. Feedback-Type
   abuse, fraud or virus is a complaint; not-spam and the rest have no effect (kept, shown).
3. `multipart/report; report-type=delivery-status`: an RFC 3464 DSN. Action failed with a
   5.x.x Status is a hard bounce, failed with 4.x.x or delayed a soft one (RFC 3463 classes);
   delivered / relayed / expanded notify success and change nothing.
4. From the null sender or a mailer-daemon but not a DSN (Exim's and Yahoo's text bounces,
   older Exchange): flufl.bounce's detectors (GNU Mailman's) find the failed recipients,
   permanent or temporary, and the enhanced status is read from the text if it says one.
5. RFC 3834 `Auto-Submitted` (not "no"), or the vendors' auto-reply headers: an auto-reply
   (out of office, vacation), never counted as a bounce. Checked after 2-4 because MTAs mark
   their DSNs `Auto-Submitted: auto-replied` too.
6. Anything else: unmatched, kept and shown to the operator.

Attribution (what names the delivery), strongest first, and recorded: a signed token (the
VERP `bounces+TOKEN@` recipient, the original's Return-Path or Original-Mail-From, its
List-Unsubscribe), then the original Message-ID (`<DELIVERY.RANDOM@domain>`, checked
against the delivery ledger by the store), then the failed recipient's address.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from email.parser import HeaderParser
from email.policy import compat32
from email.utils import getaddresses
from enum import StrEnum
from typing import Any

from flufl.bounce import all_failures

from mailer.core.addresses import InvalidAddress, normalise
from mailer.core.outcome import dead_address
from mailer.core.tokens import Keyring, Purpose, TokenError

# flufl.bounce logs a traceback for a detector that trips on malformed input before
# re-raising; _text_bounce handles that, so only its critical messages are worth a line.
logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)


class Kind(StrEnum):
    """What a message is; the value is inbound_messages.kind and the metric label."""

    DSN_HARD = "dsn_hard"
    DSN_SOFT = "dsn_soft"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"
    AUTOREPLY = "autoreply"
    UNMATCHED = "unmatched"


# RFC 5965 s.7.3 / RFC 6650: the feedback types that are a recipient's complaint.
COMPLAINT_TYPES = frozenset({"abuse", "fraud", "virus"})
_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_MESSAGE_ID = re.compile(r"<(\d{1,18})\.([0-9A-Za-z]{4,64})@([^<>\s]+)>")
_TOKEN_CHARS = r"([A-Za-z0-9_-]{20,64})"  # noqa: S105 - base64url, not a secret
_URL_TOKEN = re.compile(r"/u/" + _TOKEN_CHARS)
_AUTOREPLY_HEADERS = ("x-autoreply", "x-autorespond", "x-autoresponder")
_MAX_TEXT = 500  # characters of a diagnostic or subject kept


@dataclass(frozen=True, slots=True)
class Envelope:
    """Who the message was for and from, as SMTP said (or as an ingested file's headers say)."""

    mail_from: str | None
    rcpt_to: Sequence[str]


@dataclass(frozen=True, slots=True)
class References:
    """What in the message may name the delivery, strongest first; the store resolves them."""

    token_delivery_id: int | None = None
    token_where: str | None = None  # rcpt, return-path, list-unsubscribe…
    message_id: str | None = None  # the original's Message-ID, as sent
    message_id_delivery_id: int | None = None  # the delivery id it claims
    recipient: str | None = None  # normalised address of the recipient reported


@dataclass(frozen=True)
class Classification:
    """The verdict on one message: its kind, what names its delivery, what it said."""

    kind: Kind
    refs: References = field(default_factory=References)
    # Status, action, diagnostic, feedback type, reason unmatched: kept with the message.
    detail: dict[str, Any] = field(default_factory=dict)
    # A hard bounce whose status says the address is dead (5.1.x, 5.2.1): suppress it.
    dead_address: bool = False
    # Tokens that failed verification (forged, or from a retired key): counted, never used.
    bad_tokens: int = 0


class Classifier:
    """Reads our VERP and unsubscribe addresses with the keyring; classify() per message."""

    def __init__(
        self, keyring: Keyring, *, bounce_local_part: str, unsubscribe_mailbox: str
    ) -> None:
        self._keyring = keyring
        self._bounce = bounce_local_part.lower()
        self._unsubscribe = unsubscribe_mailbox.lower()
        prefixes = "|".join(re.escape(p) for p in (bounce_local_part, unsubscribe_mailbox))
        self._address_token = re.compile(rf"(?i:{prefixes})\+{_TOKEN_CHARS}@")

    def token_of(self, address: str, now: int) -> tuple[Purpose | None, int | None, bool]:
        """(purpose, delivery id, forged) for one of our token addresses; Nones otherwise.

        `forged` is True when the local part has our shape but the token does not verify.
        """
        local = address.strip().strip("<>").rpartition("@")[0]
        prefix, plus, text = local.partition("+")
        if not plus:
            return None, None, False
        wanted = {self._bounce: Purpose.BOUNCE, self._unsubscribe: Purpose.UNSUBSCRIBE}
        purpose = wanted.get(prefix.lower())
        if purpose is None:
            return None, None, False
        try:
            token = self._keyring.verify(text, now=now)
        except TokenError:
            return purpose, None, True
        if token.purpose is not purpose:
            return purpose, None, True
        return purpose, token.delivery_id, False

    def classify(self, raw: bytes, envelope: Envelope, now: int) -> Classification:
        """The kind of `raw` and what names its delivery; never raises on bad input."""
        msg = message_from_bytes(raw, policy=compat32)
        bad = 0
        rcpt_token: tuple[int, str] | None = None
        for address in envelope.rcpt_to:
            purpose, delivery, forged = self.token_of(address, now)
            bad += forged
            if delivery is None:
                continue
            if purpose is Purpose.UNSUBSCRIBE:
                # RFC 8058 s.3.2 / RFC 2369: a message to the mailto is the request.
                refs = References(delivery, "rcpt")
                detail = {"subject": _text(msg.get("Subject")), "from": _text(msg.get("From"))}
                return Classification(Kind.UNSUBSCRIBE, refs, detail, bad_tokens=bad)
            if rcpt_token is None:
                rcpt_token = (delivery, "rcpt")
        verdict = self._by_content(msg, envelope, now)
        refs = verdict.refs
        if rcpt_token is not None and verdict.kind is not Kind.UNMATCHED:
            # The VERP recipient is the strongest reference: our own signature on the
            # envelope, whatever the report's body claims.
            refs = References(
                rcpt_token[0],
                rcpt_token[1],
                refs.message_id,
                refs.message_id_delivery_id,
                refs.recipient,
            )
        elif rcpt_token is not None:
            refs = References(rcpt_token[0], rcpt_token[1])
        return Classification(
            verdict.kind, refs, verdict.detail, verdict.dead_address, verdict.bad_tokens + bad
        )

    # ------------------------------------------------------------ by content

    def _by_content(self, msg: Message, envelope: Envelope, now: int) -> Classification:
        content_type = msg.get_content_type()
        report_type = str(msg.get_param("report-type", "") or "").lower()
        if content_type == "multipart/report" and report_type == "feedback-report":
            return self._arf(msg, now)
        if content_type == "multipart/report" and report_type == "delivery-status":
            dsn = self._dsn(msg, now)
            if dsn is not None:
                return dsn
        if _from_mailer_daemon(msg, envelope):
            found = self._text_bounce(msg, now)
            if found is not None:
                return found
        if _auto_reply(msg):
            return Classification(
                Kind.AUTOREPLY,
                detail={
                    "auto_submitted": _text(msg.get("Auto-Submitted")),
                    "subject": _text(msg.get("Subject")),
                },
            )
        return Classification(
            Kind.UNMATCHED,
            detail={
                "reason": "not a DSN, feedback report, unsubscribe or auto-reply",
                "subject": _text(msg.get("Subject")),
                "from": _text(msg.get("From")),
            },
        )

    def _dsn(self, msg: Message, now: int) -> Classification | None:
        blocks = _status_blocks(msg)
        if not blocks:
            return None
        best = max(blocks, key=_severity)
        action = best.get("action", "").lower()
        status_text = best.get("status", "") or ""
        diagnostic = _text(best.get("diagnostic-code"))
        status = _status(status_text) or _status(diagnostic or "")
        recipient = _address_field(best.get("original-recipient")) or _address_field(
            best.get("final-recipient")
        )
        refs, bad = self._original_refs(msg, now, recipient)
        detail: dict[str, Any] = {
            "action": action or None,
            "status": None if status is None else ".".join(map(str, status)),
            "diagnostic": diagnostic,
            "remote_mta": _text(best.get("remote-mta")),
            "reporting_mta": _text(_per_message(msg).get("reporting-mta")),
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

    def _arf(self, msg: Message, now: int) -> Classification:
        fields = _feedback_fields(msg)
        feedback_type = (fields.get("feedback-type") or "").strip().lower()
        recipient = _address_field(fields.get("original-rcpt-to"))
        refs, bad = self._original_refs(msg, now, recipient)
        mail_from = fields.get("original-mail-from") or ""
        token = self.token_in_header(mail_from, now)
        bad += token[1]
        if token[0] is not None:
            refs = References(
                token[0],
                "original-mail-from",
                refs.message_id,
                refs.message_id_delivery_id,
                refs.recipient,
            )
        detail: dict[str, Any] = {
            "feedback_type": feedback_type or None,
            "user_agent": _text(fields.get("user-agent")),
            "reported_domain": _text(fields.get("reported-domain")),
            "arrival_date": _text(fields.get("arrival-date") or fields.get("received-date")),
        }
        if feedback_type in COMPLAINT_TYPES:
            return Classification(Kind.COMPLAINT, refs, detail, bad_tokens=bad)
        detail["reason"] = f"feedback report of type {feedback_type or 'none'}: no effect"
        return Classification(Kind.UNMATCHED, refs, detail, bad_tokens=bad)

    def _text_bounce(self, msg: Message, now: int) -> Classification | None:
        try:
            temporary, permanent = all_failures(msg)
        except Exception:  # its detectors assume well-formed headers; ours is bad input
            return None
        if not temporary and not permanent:
            return None
        hard = bool(permanent)
        addresses = sorted(a.decode("ascii", "replace") for a in (permanent or temporary))
        body = _plain_text(msg)
        status = _status(body) or ((5, 0, 0) if hard else (4, 0, 0))
        if hard and status[0] != 5:
            status = (5, 0, 0)
        recipient = _normalised(addresses[0]) if addresses else None
        refs, bad = self._original_refs(msg, now, recipient)
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

    # ------------------------------------------------------------ references

    def _original_refs(
        self, msg: Message, now: int, recipient: str | None
    ) -> tuple[References, int]:
        """Token, Message-ID and recipient from the returned original (headers or whole)."""
        original = _original_headers(msg)
        bad = 0
        token: int | None = None
        where: str | None = None
        message_id: str | None = None
        message_delivery: int | None = None
        if original is not None:
            for header, label in (
                ("Return-Path", "return-path"),
                ("List-Unsubscribe", "list-unsubscribe"),
            ):
                value = original.get(header)
                if value is None or token is not None:
                    continue
                found, forged = self.token_in_header(str(value), now)
                bad += forged
                if found is not None:
                    token, where = found, label
            parsed = message_id_delivery(str(original.get("Message-ID") or ""))
            if parsed is not None:
                message_id, message_delivery = parsed
            if recipient is None:
                to = getaddresses([str(v) for v in original.get_all("To", [])])
                recipient = _normalised(to[0][1]) if to else None
        return References(token, where, message_id, message_delivery, recipient), bad

    def token_in_header(self, text: str, now: int) -> tuple[int | None, int]:
        """The delivery named by the first verifying token in `text`, and the forged ones."""
        bad = 0
        candidates = [m.group(1) for m in self._address_token.finditer(text)]
        candidates += [m.group(1) for m in _URL_TOKEN.finditer(text)]
        for candidate in candidates:
            try:
                token = self._keyring.verify(candidate, now=now)
            except TokenError:
                bad += 1
                continue
            if token.purpose in (Purpose.BOUNCE, Purpose.UNSUBSCRIBE):
                return token.delivery_id, bad
            bad += 1
        return None, bad


# ---------------------------------------------------------------- MIME helpers


def _first(msg: Message, content_type: str) -> Message | None:
    """The first part of this type; the parts are indexed in one walk, kept on the message."""
    index: dict[str, Message] | None = getattr(msg, "_mailer_parts", None)
    if index is None:
        index = {}
        for part in msg.walk():
            index.setdefault(part.get_content_type(), part)
        msg._mailer_parts = index  # type: ignore[attr-defined]
    return index.get(content_type)


def _status_blocks(msg: Message) -> list[Message]:
    """The per-recipient blocks of the message/delivery-status part (RFC 3464 s.2.3)."""
    part = _first(msg, "message/delivery-status")
    if part is not None:
        payload = part.get_payload()
        if isinstance(payload, list):
            blocks = [b for b in payload if isinstance(b, Message)]
        else:  # some MTAs send it base64 or as one block of text: parse it ourselves
            text = part.get_payload(decode=True) or b""
            if not isinstance(text, bytes):
                return []
            chunks = re.split(r"\r?\n\s*\r?\n", text.decode("utf-8", "replace").strip())
            blocks = [HeaderParser(policy=compat32).parsestr(c) for c in chunks]
        return [b for b in blocks[1:] if b.get("action") or b.get("status")] or [
            b for b in blocks if b.get("action") or b.get("status")
        ]
    return []


def _per_message(msg: Message) -> Message:
    part = _first(msg, "message/delivery-status")
    if part is not None:
        payload = part.get_payload()
        if isinstance(payload, list) and payload and isinstance(payload[0], Message):
            return payload[0]
    return Message()


def _severity(block: Message) -> tuple[int, int]:
    """Failed beats delayed beats the rest; 5.x.x beats 4.x.x: the block that decides."""
    action = block.get("action", "").lower()
    rank = 2 if action.startswith(("failed", "error")) else 1 if action.startswith("delayed") else 0
    status = _status(block.get("status", "") or "")
    return rank, status[0] if status else 0


def _feedback_fields(msg: Message) -> dict[str, str]:
    """The RFC 5965 s.3.1 fields of the message/feedback-report part, lower-cased names."""
    part = _first(msg, "message/feedback-report")
    if part is not None:
        payload = part.get_payload()
        if isinstance(payload, list) and payload and isinstance(payload[0], Message):
            block = payload[0]
        else:
            data = part.get_payload(decode=True)
            text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(payload)
            block = HeaderParser(policy=compat32).parsestr(text.strip())
        return {k.lower(): str(v) for k, v in block.items()}
    return {}


def _original_headers(msg: Message) -> Message | None:
    """The returned original: its message/rfc822 part or its text/rfc822-headers."""
    whole = _first(msg, "message/rfc822")
    if whole is not None:
        payload = whole.get_payload()
        if isinstance(payload, list) and payload and isinstance(payload[0], Message):
            return payload[0]
    headers = _first(msg, "text/rfc822-headers")
    if headers is not None:
        data = headers.get_payload(decode=True)
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else ""
        return HeaderParser(policy=compat32).parsestr(text.lstrip(), headersonly=True)
    # Text bounces quote the original below a marker line; its headers still parse.
    body = _plain_text(msg)
    for marker in (
        "------ This is a copy of the message, including all the headers. ------",
        "--- Below this line is a copy of the message.",
        "Original message headers:",
    ):
        at = body.find(marker)
        if at >= 0:
            return HeaderParser(policy=compat32).parsestr(body[at + len(marker) :].lstrip())
    return None


def _plain_text(msg: Message) -> str:
    part = _first(msg, "text/plain")
    if part is not None:
        data = part.get_payload(decode=True)
        if isinstance(data, bytes):
            return data.decode(part.get_content_charset() or "utf-8", "replace")
    return ""


def _from_mailer_daemon(msg: Message, envelope: Envelope) -> bool:
    """RFC 5321 s.4.5.5: bounces come from the null sender; headers name the daemon too."""
    if envelope.mail_from is not None and envelope.mail_from.strip("<> ") == "":
        return True
    sender = str(msg.get("From") or "").lower() + str(msg.get("Return-Path") or "")
    return "mailer-daemon" in sender or "postmaster" in sender or "<>" in sender


def _auto_reply(msg: Message) -> bool:
    # RFC 3834 s.5.1: any Auto-Submitted value but "no" marks an automatic message.
    auto = str(msg.get("Auto-Submitted") or "").strip().lower()
    if auto and not auto.startswith("no"):
        return True
    if any(msg.get(h) is not None for h in _AUTOREPLY_HEADERS):
        return True
    precedence = str(msg.get("Precedence") or "").strip().lower()
    return precedence == "auto_reply"


def message_id_delivery(value: str) -> tuple[str, int] | None:
    """(Message-ID, the delivery id it claims) for one of ours, `<DELIVERY.RANDOM@domain>`."""
    match = _MESSAGE_ID.search(value)
    return None if match is None else (match.group(0), int(match.group(1)))


def status_of(text: str) -> tuple[int, int, int] | None:
    """The first RFC 3463 enhanced status code in `text`, e.g. (5, 1, 1)."""
    return _status(text)


def normalised_address(address: str) -> str | None:
    """The address as contacts store it, or None when it is not one."""
    return _normalised(address.strip().strip("<>"))


def _status(text: str) -> tuple[int, int, int] | None:
    found = _STATUS.search(text) if text else None
    return None if found is None else (int(found[1]), int(found[2]), int(found[3]))


def _address_field(value: str | None) -> str | None:
    """`rfc822; someone@example.com` (RFC 3464 s.2.3.1) or a bare address, normalised."""
    if not value:
        return None
    _, _, address = str(value).rpartition(";")
    return _normalised(address.strip().strip("<>"))


def _normalised(address: str) -> str | None:
    try:
        return normalise(address)
    except InvalidAddress:
        return None


def _text(value: object) -> str | None:
    if value is None:
        return None
    # jsonb refuses NUL; other controls and undecodable bytes are shown, not kept.
    flat = " ".join(str(value).replace("\x00", " ").split())
    return flat.encode("utf-8", "replace").decode("utf-8")[:_MAX_TEXT] or None


def _diagnostic_line(body: str, addresses: Iterable[str]) -> str | None:
    """The line of a text bounce that gives the reason (the one with an SMTP code)."""
    for line in body.splitlines():
        if re.search(r"\b[45]\d\d\b", line) and len(line.strip()) > 3:
            return _text(line)
    for address in addresses:
        for line in body.splitlines():
            if address in line:
                return _text(line)
    return None
