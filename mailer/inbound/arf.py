"""Complaints: RFC 5965 feedback reports (ARF), as mailbox providers' feedback loops send
them. Feedback-Type abuse, fraud or virus is a recipient's complaint; not-spam and the rest
have no effect (kept and shown as unmatched). Pure.

The delivery is named by our signed token in Original-Mail-From (the VERP return path we
sent with) first, then by the returned original's headers.
"""

from __future__ import annotations

from collections.abc import Callable
from email.message import Message
from email.parser import HeaderParser
from email.policy import compat32
from typing import Any

from mailer.inbound.mime import address_field, first, text
from mailer.inbound.verdict import Classification, Kind, References, RefsOf

# RFC 5965 s.7.3 / RFC 6650: the feedback types that are a recipient's complaint.
COMPLAINT_TYPES = frozenset({"abuse", "fraud", "virus"})

# The delivery a header's first verifying token names, and how many forged ones it holds.
TokenIn = Callable[[str], tuple[int | None, int]]


def arf(msg: Message, refs_of: RefsOf, token_in: TokenIn) -> Classification:
    """A feedback report's verdict: a complaint, or unmatched for the types that are not."""
    fields = _feedback_fields(msg)
    feedback_type = (fields.get("feedback-type") or "").strip().lower()
    recipient = address_field(fields.get("original-rcpt-to"))
    refs, bad = refs_of(recipient)
    mail_from = fields.get("original-mail-from") or ""
    token = token_in(mail_from)
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
        "user_agent": text(fields.get("user-agent")),
        "reported_domain": text(fields.get("reported-domain")),
        "arrival_date": text(fields.get("arrival-date") or fields.get("received-date")),
    }
    if feedback_type in COMPLAINT_TYPES:
        return Classification(Kind.COMPLAINT, refs, detail, bad_tokens=bad)
    detail["reason"] = f"feedback report of type {feedback_type or 'none'}: no effect"
    return Classification(Kind.UNMATCHED, refs, detail, bad_tokens=bad)


def _feedback_fields(msg: Message) -> dict[str, str]:
    """The RFC 5965 s.3.1 fields of the message/feedback-report part, lower-cased names."""
    part = first(msg, "message/feedback-report")
    if part is not None:
        payload = part.get_payload()
        if isinstance(payload, list) and payload and isinstance(payload[0], Message):
            block = payload[0]
        else:
            data = part.get_payload(decode=True)
            body = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(payload)
            block = HeaderParser(policy=compat32).parsestr(body.strip())
        return {k.lower(): str(v) for k, v in block.items()}
    return {}
