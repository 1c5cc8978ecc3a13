"""What people and their mailboxes send back, as opposed to MTAs: the mailto unsubscribe
(RFC 2369 / RFC 8058 s.3.2) and auto-replies (RFC 3834), never counted as bounces. Pure."""

from __future__ import annotations

from email.message import Message

from mailer.inbound.mime import text
from mailer.inbound.verdict import Classification, Kind, References

_AUTOREPLY_HEADERS = ("x-autoreply", "x-autorespond", "x-autoresponder")


def unsubscribe(msg: Message, delivery_id: int, bad_tokens: int) -> Classification:
    """A message to `unsubscribe+TOKEN@`: the request itself, whatever it says."""
    refs = References(delivery_id, "rcpt")
    detail = {"subject": text(msg.get("Subject")), "from": text(msg.get("From"))}
    return Classification(Kind.UNSUBSCRIBE, refs, detail, bad_tokens=bad_tokens)


def is_auto_reply(msg: Message) -> bool:
    """RFC 3834 s.5.1 Auto-Submitted (any value but "no"), or the vendors' own headers."""
    auto = str(msg.get("Auto-Submitted") or "").strip().lower()
    if auto and not auto.startswith("no"):
        return True
    if any(msg.get(h) is not None for h in _AUTOREPLY_HEADERS):
        return True
    precedence = str(msg.get("Precedence") or "").strip().lower()
    return precedence == "auto_reply"


def auto_reply(msg: Message) -> Classification:
    """An out-of-office or vacation reply: kept, shown, no effect."""
    return Classification(
        Kind.AUTOREPLY,
        detail={
            "auto_submitted": text(msg.get("Auto-Submitted")),
            "subject": text(msg.get("Subject")),
        },
    )
