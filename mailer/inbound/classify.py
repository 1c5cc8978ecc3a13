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

Each kind is read by its own module: mailer/inbound/dsn.py (3, 4), arf.py (2), replies.py
(1, 5); mime.py holds what they share, verdict.py the values they return.

Attribution (what names the delivery), strongest first, and recorded: a signed token (the
VERP `bounces+TOKEN@` recipient, the original's Return-Path or Original-Mail-From, its
List-Unsubscribe), then the original Message-ID (`<DELIVERY.RANDOM@domain>`, checked
against the delivery ledger by the store), then the failed recipient's address.
"""

from __future__ import annotations

import re
from email import message_from_bytes
from email.message import Message
from email.policy import compat32
from email.utils import getaddresses

from mailer.core.tokens import Keyring, Purpose, TokenError
from mailer.inbound.arf import COMPLAINT_TYPES, arf
from mailer.inbound.dsn import dsn, from_mailer_daemon, text_bounce
from mailer.inbound.mime import (
    message_id_delivery,
    normalised,
    normalised_address,
    original_headers,
    status_of,
    text,
)
from mailer.inbound.replies import auto_reply, is_auto_reply, unsubscribe
from mailer.inbound.verdict import Classification, Envelope, Kind, References

# What the rest of the package (and the ESP mappers) import from here.
__all__ = [
    "COMPLAINT_TYPES",
    "Classification",
    "Classifier",
    "Envelope",
    "Kind",
    "References",
    "message_id_delivery",
    "normalised_address",
    "status_of",
]

_TOKEN_CHARS = r"([A-Za-z0-9_-]{20,64})"  # noqa: S105 - base64url, not a secret
_URL_TOKEN = re.compile(r"/u/" + _TOKEN_CHARS)


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
        prefix, plus, token_text = local.partition("+")
        if not plus:
            return None, None, False
        wanted = {self._bounce: Purpose.BOUNCE, self._unsubscribe: Purpose.UNSUBSCRIBE}
        purpose = wanted.get(prefix.lower())
        if purpose is None:
            return None, None, False
        try:
            token = self._keyring.verify(token_text, now=now)
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
                return unsubscribe(msg, delivery, bad)
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

        def refs_of(recipient: str | None) -> tuple[References, int]:
            return self._original_refs(msg, now, recipient)

        if content_type == "multipart/report" and report_type == "feedback-report":
            return arf(msg, refs_of, lambda header: self.token_in_header(header, now))
        if content_type == "multipart/report" and report_type == "delivery-status":
            found = dsn(msg, refs_of)
            if found is not None:
                return found
        if from_mailer_daemon(msg, envelope):
            found = text_bounce(msg, refs_of)
            if found is not None:
                return found
        if is_auto_reply(msg):
            return auto_reply(msg)
        return Classification(
            Kind.UNMATCHED,
            detail={
                "reason": "not a DSN, feedback report, unsubscribe or auto-reply",
                "subject": text(msg.get("Subject")),
                "from": text(msg.get("From")),
            },
        )

    # ------------------------------------------------------------ references

    def _original_refs(
        self, msg: Message, now: int, recipient: str | None
    ) -> tuple[References, int]:
        """Token, Message-ID and recipient from the returned original (headers or whole)."""
        original = original_headers(msg)
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
                recipient = normalised(to[0][1]) if to else None
        return References(token, where, message_id, message_delivery, recipient), bad

    def token_in_header(self, header: str, now: int) -> tuple[int | None, int]:
        """The delivery named by the first verifying token in `header`, and the forged ones."""
        bad = 0
        candidates = [m.group(1) for m in self._address_token.finditer(header)]
        candidates += [m.group(1) for m in _URL_TOKEN.finditer(header)]
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
