"""The inbound message behind a suppression or an opt-out, as the operator and the auditor
read it, and what of it survives the erasure of the person it is about. Pure values.

A DSN, a feedback report or a mailto unsubscribe is the evidence for a `hard_bounce` or
`complaint` suppression and for a withdrawal recorded from mail (issue 16). `contacts show`,
`contacts explain`, `hygiene report` and `audit export` all print it through `line()` and
`as_json()`, so the four faces say the same thing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

# What an inbound message keeps of its parsed fields once the person it is about is erased
# (GDPR art. 17): its structure, never its free text (diagnostics, subjects and From lines
# quote the address). Its SHA-256, kind, time and delivery stay too: the hash-only evidence
# behind the hashed suppression. The erasure and the processor of later arrivals both use it.
DETAIL_KEPT_AFTER_ERASURE = (
    "action",
    "status",
    "feedback_type",
    "reason",
    "suppressed",
    "detector",
    "auto_submitted",
    "recipient_reported",
    "classified_as",
)

KIND_TEXT = {
    "dsn_hard": "hard bounce (DSN)",
    "dsn_soft": "soft bounce (DSN)",
    "complaint": "complaint (feedback report)",
    "unsubscribe": "mailto unsubscribe",
    "autoreply": "auto-reply",
    "unmatched": "unmatched",
}
_DIAGNOSTIC_SHOWN = 120  # characters of a diagnostic on one line; as_json keeps it whole


def kept_after_erasure(detail: dict[str, Any]) -> dict[str, Any]:
    """`detail` without the fields that may quote the erased person, marked erased."""
    kept = {k: v for k, v in detail.items() if k in DETAIL_KEPT_AFTER_ERASURE}
    return {**kept, "erased": True}


@dataclass(frozen=True, slots=True)
class InboundEvidence:
    """One stored inbound message, as evidence: what came, when, and what it said."""

    inbound_id: int
    received_at: datetime
    kind: str | None  # None while still pending
    source: str  # smtp, file, mbox, maildir, stdin, ses
    sha256: bytes
    status: str | None = None  # RFC 3463 enhanced status of a DSN
    diagnostic: str | None = None  # RFC 3464 Diagnostic-Code (gone after an erasure)
    feedback_type: str | None = None  # RFC 5965 Feedback-Type of a complaint
    erased: bool = False  # the raw message and free text were erased with the person
    # How its delivery was found: token (our signature), message_id, or recipient (weakest).
    attributed_by: str | None = None

    @property
    def kind_text(self) -> str:
        """The kind in words."""
        return KIND_TEXT.get(self.kind or "", self.kind or "pending")

    def line(self) -> str:
        """One line: kind, status or feedback type, diagnostic, when, how, and the hash."""
        parts = [f"inbound #{self.inbound_id} {self.kind_text}"]
        if self.status:
            parts.append(f"status {self.status}")
        if self.feedback_type:
            parts.append(f"feedback type {self.feedback_type}")
        if self.diagnostic:
            text = self.diagnostic
            if len(text) > _DIAGNOSTIC_SHOWN:
                text = text[: _DIAGNOSTIC_SHOWN - 1] + "…"
            parts.append(f"“{text}”")
        parts.append(
            f"received {self.received_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC by {self.source}"
        )
        if self.attributed_by:
            parts.append(f"matched by {self.attributed_by.replace('_', '-')}")
        parts.append(f"sha256 {self.sha256.hex()}")
        if self.erased:
            parts.append("(raw message erased)")
        return ", ".join(parts)

    def as_json(self) -> dict[str, Any]:
        """The same, for the auditor's CSV and JSON."""
        return {
            "inbound_id": self.inbound_id,
            "kind": self.kind,
            "received_at": self.received_at.astimezone(UTC).isoformat(),
            "source": self.source,
            "status": self.status,
            "diagnostic": self.diagnostic,
            "feedback_type": self.feedback_type,
            "sha256": self.sha256.hex(),
            "erased": self.erased,
            "attributed_by": self.attributed_by,
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> InboundEvidence:
        """From a row with the columns every store's evidence query selects."""
        detail = row["detail"] or {}
        return cls(
            inbound_id=row["inbound_id"],
            received_at=row["received_at"],
            kind=row["kind"],
            source=row["source"],
            sha256=bytes(row["sha256"]),
            status=detail.get("status"),
            diagnostic=detail.get("diagnostic"),
            feedback_type=detail.get("feedback_type"),
            erased=bool(detail.get("erased")),
            attributed_by=row.get("attributed_by"),
        )
