"""List hygiene and data subject requests: purge, erase, export, and the opt-out SLA line.

Erasure anonymises in place (contacts are never deleted: reports keep their
totals) and keeps a hashed global suppression, so a re-import cannot bring a
person back silently. Every purge and erasure lands in the append-only
privacy_log with who ran it. The SQL is in mailer/compliance/compliance.sql; the rules
here are values in, values out; mailer/commands/compliance.py wires them to the CLI.
"""

from __future__ import annotations

import getpass
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mailer.core.consent import add_months

# Ledger evidence keys that survive an erasure: where the row came from (import
# and line), which message and campaign an opt-out answered, and how it was made
# (inbound_id: the stored mail it came by, kept by hash).
# They identify no one, and reports count opt-outs by them. IP prefix, user agent,
# free-text reasons and anything else go (GDPR art. 17).
EVIDENCE_KEPT = (
    "import_id",
    "file",
    "line",
    "delivery_id",
    "campaign_id",
    "method",
    "inbound_id",
)

DEFAULT_INACTIVE = "12m"
DEFAULT_UNENGAGED = 5
ERASE_RULE = "data subject request (GDPR art. 17)"

_MONTHS = re.compile(r"(\d{1,4})\s*(m|mo|months?|y|years?)?")


def parse_months(text: str) -> int:
    """'12m', '18 months', '1y' or '12' as a number of months; ValueError names the problem."""
    match = _MONTHS.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"{text!r} is not a period like 12m or 1y")
    amount = int(match.group(1)) * (12 if (match.group(2) or "m").startswith("y") else 1)
    if amount < 1:
        raise ValueError(f"{text!r}: the period must be at least one month")
    return amount


def inactivity_cutoff(now: datetime, months: int) -> datetime:
    """The instant before which a contact's last activity makes it inactive (calendar months)."""
    return add_months(now, -months)


def purge_rule(months: int) -> str:
    """The rule a purge applies, as the privacy log records it."""
    return f"inactive >= {months} months and no valid express consent"


@dataclass(frozen=True)
class Erasure:
    """What one purge or erasure did, table by table."""

    contacts: int
    suppressions: int
    deliveries_skipped: int
    deliveries_scrubbed: int
    consents_scrubbed: int
    events_scrubbed: int
    archive_scrubbed: int
    inbound_scrubbed: int
    log_id: int
    db_user: str
    performed_at: datetime
    # Transactional messages stripped of their data and render inputs (unsent ones skipped).
    transactional_scrubbed: int = 0
    # Console rejects files dropped because they held an erased address.
    rejects_dropped: int = 0

    @classmethod
    def from_counts(cls, counts: Mapping[str, Any]) -> Erasure:
        """Build from Store._erase's result (a successful run)."""
        return cls(**{name: counts[name] for name in cls.__dataclass_fields__ if name in counts})

    def lines(self) -> list[str]:
        """Plain-English lines for the operator."""
        return [
            f"{self.contacts:,} contact(s) anonymised, {self.suppressions:,} hashed "
            "suppression(s) added (a re-import stays suppressed)",
            f"{self.consents_scrubbed:,} ledger row(s) stripped of evidence, "
            f"{self.events_scrubbed:,} open/click event(s) stripped of user agent and IP, "
            f"{self.archive_scrubbed:,} archived message(s) stripped of render inputs, "
            f"{self.inbound_scrubbed:,} inbound message(s) (bounces, complaints, mailto "
            "unsubscribes) stripped to their hash and status",
            f"{self.deliveries_skipped:,} unsent deliveries skipped, "
            f"{self.deliveries_scrubbed:,} SMTP replies dropped, "
            f"{self.transactional_scrubbed:,} transactional message(s) stripped of their data, "
            f"{self.rejects_dropped:,} console rejects file(s) dropped",
            f"logged as privacy_log #{self.log_id} by {self.db_user} at "
            f"{self.performed_at:%Y-%m-%d %H:%M:%S} UTC",
        ]


class ErasureBusy(RuntimeError):
    """A message to a contact being erased is in flight; nothing was written."""


def erasure_of(counts: Mapping[str, Any]) -> Erasure:
    """The Erasure a store run produced, or ErasureBusy if it had to give up."""
    if counts.get("busy"):
        raise ErasureBusy(
            f"{counts['busy']} message(s) to the contact(s) are being sent right now; "
            "nothing was erased: run the command again in a minute"
        )
    return Erasure.from_counts(counts)


# The strictest deadline the line cites: Gmail's and Yahoo's bulk-sender rules (2024) want an
# unsubscribe honoured within 2 days (CASL s.11(3) allows 10 business days). Ours is "before
# the answer", so an opt-out recorded later than this was queued somewhere it should not be.
SLA_PROCESSING_S = 2 * 86400.0


def sla_breached(sla: Mapping[str, Any]) -> bool:
    """An opt-out not honoured in time: a message sent after it, or recorded past the SLA."""
    return bool(sla["violations"]) or float(sla["max_processing_s"]) > SLA_PROCESSING_S


def sla_line(sla: Mapping[str, Any]) -> str:
    """The report line proving opt-outs took effect before the next send."""
    if sla["violations"]:
        verdict = f"VIOLATED ({sla['violations']} sent after)"
    elif sla_breached(sla):
        verdict = "VIOLATED (recorded more than 2 days after the request)"
    else:
        verdict = "OK"
    return (
        f"unsubscribe SLA {verdict}: {sla['optouts']:,} opt-out(s), "
        f"{sla['followed']:,} followed by a send on that channel or topic, "
        f"{sla['held_back']:,} message(s) held back, {sla['violations']:,} sent after the "
        f"opt-out; max processing {sla['max_processing_s']:.0f} s "
        "(ours: immediate; CASL: 10 business days; Gmail/Yahoo: 2 days)"
    )


def export_document(email: str, tables: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """The JSON a person receives: what we hold, table by table, with how to read it."""
    held = any(tables.get(name) for name in ("contacts", "suppressions", "privacy_log"))
    return {
        "subject": email,
        "generated_at": now.isoformat(),
        "held": held,
        "notes": {
            "consents": "the consent ledger: every grant and withdrawal, in order",
            "suppressions": "keyed by the SHA-256 of the address; kept after an erasure "
            "so that we never contact the address again",
            "deliveries": "one row per campaign sent or planned to this address",
            "events": "opens and clicks of those messages",
            "archive": "what reproduces each message sent, and its SHA-256",
            "transactional_messages": "one-to-one notices (quotes, orders, recalls) sent or "
            "planned to this address, with their values and the rule they were sent under",
            "privacy_log": "erasures of this address",
            "inbound_messages": "bounce reports, complaints and unsubscribe messages about "
            "your messages, as received",
        },
        "tables": dict(tables),
    }


def operator() -> str | None:
    """The OS user running the command, for the privacy log (None if it cannot be told)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no passwd entry and no LOGNAME/USER (some containers)
        return None
