"""Amazon SES notifications (through SNS) as bounces and complaints.

The stored body is the SNS envelope (verified by mailer/inbound/sns.py before it was
stored); its `Message` is SES's JSON: notificationType Bounce (bounceType Permanent: hard,
Transient or Undetermined: soft), Complaint (complaintFeedbackType, RFC 5965's vocabulary),
Delivery (no effect). `mail.source` is the envelope sender we used, bounces+TOKEN@…: the
signed token names the delivery, then the original Message-ID, then the recipient.
"""

from __future__ import annotations

import json
from typing import Any

from mailer.core.outcome import dead_address
from mailer.inbound.classify import (
    COMPLAINT_TYPES,
    Classification,
    Classifier,
    Kind,
    References,
    message_id_delivery,
    normalised_address,
    status_of,
)


def classify(raw: bytes, classifier: Classifier, now: int) -> Classification:
    """One SES notification's kind and what names its delivery."""
    try:
        envelope = json.loads(raw)
        note = json.loads(envelope["Message"]) if "Message" in envelope else envelope
        kind_name = str(note.get("notificationType") or note.get("eventType") or "")
        mail = note.get("mail") or {}
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        return Classification(Kind.UNMATCHED, detail={"reason": f"not an SES notification: {exc}"})
    refs, bad = _refs(mail, classifier, now)
    if kind_name == "Bounce":
        bounce = note.get("bounce") or {}
        recipients = bounce.get("bouncedRecipients") or [{}]
        first = recipients[0] if isinstance(recipients[0], dict) else {}
        bounce_type = str(bounce.get("bounceType") or "")
        status = _status(first.get("status"), hard=bounce_type == "Permanent")
        refs = _with_recipient(refs, first.get("emailAddress"))
        detail: dict[str, Any] = {
            "action": first.get("action") or ("failed" if bounce_type == "Permanent" else None),
            "status": ".".join(map(str, status)),
            "diagnostic": first.get("diagnosticCode"),
            "bounce_type": bounce_type,
            "bounce_subtype": bounce.get("bounceSubType"),
            "reporting_mta": bounce.get("reportingMTA"),
            "ses_message_id": mail.get("messageId"),
        }
        if bounce_type == "Permanent":
            return Classification(Kind.DSN_HARD, refs, detail, dead_address(status), bad)
        return Classification(Kind.DSN_SOFT, refs, detail, bad_tokens=bad)
    if kind_name == "Complaint":
        complaint = note.get("complaint") or {}
        people = complaint.get("complainedRecipients") or [{}]
        refs = _with_recipient(refs, people[0].get("emailAddress") if people else None)
        # SES omits the type when the provider's report has none: a complaint all the same.
        feedback = str(complaint.get("complaintFeedbackType") or "abuse").lower()
        detail = {
            "feedback_type": feedback,
            "user_agent": complaint.get("userAgent"),
            "ses_message_id": mail.get("messageId"),
        }
        if feedback in COMPLAINT_TYPES:
            return Classification(Kind.COMPLAINT, refs, detail, bad_tokens=bad)
        detail["reason"] = f"SES complaint of type {feedback}: no effect"
        return Classification(Kind.UNMATCHED, refs, detail, bad_tokens=bad)
    if kind_name == "Delivery":
        return Classification(
            Kind.AUTOREPLY, refs, {"reason": "SES delivery notification"}, bad_tokens=bad
        )
    return Classification(
        Kind.UNMATCHED, refs, {"reason": f"SES notification {kind_name or '?'}"}, bad_tokens=bad
    )


def _refs(mail: dict[str, Any], classifier: Classifier, now: int) -> tuple[References, int]:
    bad = 0
    token: int | None = None
    where: str | None = None
    source = str(mail.get("source") or "")
    _, delivery, forged = classifier.token_of(source, now) if "+" in source else (None, None, 0)
    bad += forged
    if delivery is not None:
        token, where = delivery, "ses-source"
    headers = {
        str(h.get("name", "")).lower(): str(h.get("value", ""))
        for h in mail.get("headers") or []
        if isinstance(h, dict)
    }
    message_id = headers.get("message-id") or str(
        (mail.get("commonHeaders") or {}).get("messageId") or ""
    )
    parsed = message_id_delivery(message_id)
    if token is None and "list-unsubscribe" in headers:
        found = classifier.token_in_header(headers["list-unsubscribe"], now)
        bad += found[1]
        if found[0] is not None:
            token, where = found[0], "list-unsubscribe"
    return References(
        token, where, parsed[0] if parsed else None, parsed[1] if parsed else None, None
    ), bad


def _with_recipient(refs: References, address: object) -> References:
    recipient = normalised_address(str(address)) if address else None
    return References(
        refs.token_delivery_id,
        refs.token_where,
        refs.message_id,
        refs.message_id_delivery_id,
        recipient,
    )


def _status(value: object, *, hard: bool) -> tuple[int, int, int]:
    found = status_of(str(value or ""))
    if found is not None and (found[0] == 5) == hard:
        return found
    return (5, 0, 0) if hard else (4, 0, 0)
