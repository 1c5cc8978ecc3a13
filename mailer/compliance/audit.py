"""The auditor's export: for every recipient, the consent that justified the message.

CASL s.13 puts the burden of proving consent on the sender; a regulator asks
"show me the consent and the message". The bundle answers per delivery: the
consent as frozen on the delivery when the audience was computed (kind,
source, date), its ledger evidence, its end under the campaign's policy, and
whether it stood at the send time; the archived message re-rendered and
checked against the SHA-256 taken at send time; the opt-outs the message led
to, with their processing time; the bounces, complaints and mailto unsubscribes
that came back about it (received time, kind, status, diagnostic, the stored
message's SHA-256); plus a campaign summary and the unsubscribe SLA line. A
zip of a CSV, a summary JSON and the .eml files.
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailer.compliance.privacy import operator, sla_breached, sla_line
from mailer.core.consent import Action, Channel, Kind, LedgerEntry, Policy, describe, valid_until
from mailer.core.evidence import InboundEvidence
from mailer.core.spreadsheet import csv_writer

if TYPE_CHECKING:
    from mailer.campaigns.render import Renderer
    from mailer.campaigns.rows import Campaign
    from mailer.compliance.store import ComplianceStore

CSV_COLUMNS = (
    "delivery_id",
    "campaign",
    "email",
    "status",
    "skip_reason",
    "sent_at",
    "message_id",
    "policy",
    "consent_id",
    "consent_kind",
    "consent_source",
    "consent_obtained_at",
    "consent_evidence",
    "consent_valid_until",
    "consent_withdrawn_at",
    "consent_valid_at_send",
    "consent_basis",
    "eml",
    "sha256",
    "hash_verified",
    "optouts",
    "optout_max_processing_s",
    "inbound_evidence",
)


@dataclass(frozen=True)
class Standing:
    """Where a delivery's consent stood at its send time."""

    valid_until: datetime | None  # None: no end (express) or no consent
    valid_at_send: bool | None  # None: the message was not sent
    basis: str


def consent_standing(
    *,
    policy: Policy,
    channel: Channel,
    consent_id: int | None,
    kind: str | None,
    source: str | None,
    obtained_at: datetime | None,
    ends_at: datetime | None,
    withdrawn_at: datetime | None,
    sent_at: datetime | None,
) -> Standing:
    """Whether the consent frozen on a delivery was valid at its send time, and until when."""
    not_withdrawn = withdrawn_at is None or sent_at is None or sent_at < withdrawn_at
    entry = None
    if consent_id is not None and kind is not None and obtained_at is not None:
        entry = LedgerEntry(
            id=consent_id,
            channel=channel,
            action=Action.GRANT,
            kind=Kind(kind),
            source=source or "",
            obtained_at=obtained_at,
            ends_at=ends_at,
        )
    end = None if entry is None else valid_until(entry)
    if policy is Policy.CAN_SPAM:
        # CAN-SPAM 15 U.S.C. 7704(a)(4): opt-out model; lawful until an opt-out, whatever
        # consent (or none) is on record.
        basis = "no opt-out on record (CAN-SPAM opt-out model)"
        if entry is not None:
            basis = f"{describe(entry)}; {basis}"
        return Standing(end, None if sent_at is None else not_withdrawn, basis)
    if entry is None:
        return Standing(None, None if sent_at is None else False, "no consent on the delivery")
    basis = describe(entry)
    if policy is Policy.GDPR and entry.kind is not Kind.EXPRESS:
        # GDPR art. 7 as configured here: only express consent counts.
        return Standing(end, None if sent_at is None else False, f"{basis}; not express (GDPR)")
    if sent_at is None:
        return Standing(end, None, basis)
    in_term = entry.obtained_at <= sent_at and (end is None or sent_at < end)
    if not not_withdrawn:
        basis = f"{basis}; withdrawn on {withdrawn_at:%Y-%m-%d}, before the send"
    return Standing(end, in_term and not_withdrawn, basis)


def processing_seconds(optout: Mapping[str, Any]) -> float:
    """Time from an opt-out request to its effect in the ledger (0 for the tracker's)."""
    requested = datetime.fromisoformat(optout["requested_at"])
    recorded = datetime.fromisoformat(optout["recorded_at"])
    return max(0.0, (recorded - requested).total_seconds())


def _iso(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).isoformat()


def _flag(value: bool | None) -> str:
    return "" if value is None else str(value).lower()


@dataclass
class Summary:
    """Campaign-level figures, accumulated row by row (a campaign may have millions)."""

    deliveries: Counter[str] = field(default_factory=Counter)
    consent_kinds: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    sent_with_valid_consent: int = 0
    sent_without_valid_consent: list[int] = field(default_factory=list)
    archived: int = 0
    verified: int = 0
    mismatched: list[int] = field(default_factory=list)
    # Archived messages of erased recipients: hash kept, render inputs gone.
    archive_erased: int = 0
    erased_recipients: int = 0
    optouts: int = 0
    optout_max_processing_s: float = 0.0
    # Bounces, complaints and mailto unsubscribes that came back about these messages.
    inbound: Counter[str] = field(default_factory=Counter)

    def add(self, row: Mapping[str, Any], standing: Standing, verified: bool | None) -> None:
        """Count one delivery."""
        self.deliveries[row["status"]] += 1
        self.erased_recipients += row["erased_at"] is not None
        if row["status"] == "sent":
            self.sent += 1
            self.consent_kinds[row["consent_kind"] or "none"] += 1
            if standing.valid_at_send:
                self.sent_with_valid_consent += 1
            elif len(self.sent_without_valid_consent) < 1000:
                self.sent_without_valid_consent.append(row["delivery_id"])
        if row["sha256"] is not None:
            self.archived += 1
            if verified:
                self.verified += 1
            elif verified is None:
                self.archive_erased += 1
            elif len(self.mismatched) < 1000:
                self.mismatched.append(row["delivery_id"])
        for message in row["inbound"]:
            self.inbound[message["kind"] or "pending"] += 1
        for optout in row["optouts"]:
            self.optouts += 1
            self.optout_max_processing_s = max(
                self.optout_max_processing_s, processing_seconds(optout)
            )

    @property
    def clean(self) -> bool:
        """Every sent message had a valid consent and every reproducible message matched."""
        return self.sent == self.sent_with_valid_consent and not self.mismatched

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return {
            "deliveries": dict(sorted(self.deliveries.items())),
            "sent": self.sent,
            "sent_with_valid_consent": self.sent_with_valid_consent,
            "sent_without_valid_consent": self.sent_without_valid_consent,
            "consent_kinds_of_sent": dict(sorted(self.consent_kinds.items())),
            "messages_archived": self.archived,
            "hashes_verified": self.verified,
            "hash_mismatches": self.mismatched,
            "archived_messages_of_erased_recipients": self.archive_erased,
            "erased_recipients": self.erased_recipients,
            "optouts_from_these_messages": self.optouts,
            "optout_max_processing_s": self.optout_max_processing_s,
            "inbound_messages_by_kind": dict(sorted(self.inbound.items())),
        }


def csv_row(
    row: Mapping[str, Any], standing: Standing, eml: str, verified: bool | None
) -> list[Any]:
    """One line of the auditor's CSV, in CSV_COLUMNS order."""
    # requested_at / recorded_at stay the ISO strings the ledger gave; the auditor
    # reads the processing time next to them.
    optouts = [{**o, "processing_s": processing_seconds(o)} for o in row["optouts"]]
    erased = row["erased_at"] is not None
    return [
        row["delivery_id"],
        row["campaign"],
        "(erased)" if erased else row["email"],
        row["status"],
        row["skip_reason"] or "",
        _iso(row["sent_at"]),
        row["message_id"] or "",
        row["policy"],
        row["consent_id"] or "",
        row["consent_kind"] or "",
        row["consent_source"] or "",
        _iso(row["consent_obtained_at"]),
        "" if row["consent_evidence"] is None else json.dumps(row["consent_evidence"]),
        _iso(standing.valid_until),
        _iso(row["withdrawn_at"]),
        _flag(standing.valid_at_send),
        standing.basis,
        eml,
        "" if row["sha256"] is None else bytes(row["sha256"]).hex(),
        "erased" if erased and row["sha256"] is not None else _flag(verified),
        json.dumps(optouts, ensure_ascii=False) if optouts else "",
        max((o["processing_s"] for o in optouts), default=""),
        _inbound_json(row["inbound"]),
    ]


def inbound_evidence(message: Mapping[str, Any]) -> InboundEvidence:
    """One element of audit_rows' `inbound` list as the evidence every face prints."""
    return InboundEvidence.from_row(
        {
            **message,
            "received_at": datetime.fromisoformat(message["received_at"]),
            "sha256": bytes.fromhex(message["sha256"]),
        }
    )


def _inbound_json(messages: list[Mapping[str, Any]]) -> str:
    """The DSN / feedback report / mailto behind the delivery's bounce, complaint or opt-out:
    received time, kind, status, diagnostic, the message's SHA-256 (CASL s.13 evidence)."""
    if not messages:
        return ""
    found = [inbound_evidence(m).as_json() for m in messages]
    return json.dumps(found, ensure_ascii=False)


def standing_of(row: Mapping[str, Any]) -> Standing:
    """consent_standing for a row of Store.audit_rows."""
    return consent_standing(
        policy=Policy(row["policy"]),
        channel=Channel(row["channel"]),
        consent_id=row["consent_id"],
        kind=row["consent_kind"],
        source=row["consent_source"],
        obtained_at=row["consent_obtained_at"],
        ends_at=row["consent_ends_at"],
        withdrawn_at=row["withdrawn_at"],
        sent_at=row["sent_at"] if row["status"] == "sent" else None,
    )


@dataclass(frozen=True)
class AuditResult:
    rows: int
    summary: dict[str, Any]
    clean: bool


async def export_audit(
    store: ComplianceStore,
    out: Path,
    *,
    label: str,
    campaign_id: int | None,
    contact_id: int | None,
    campaign: Campaign | None,
) -> AuditResult:
    """Write the auditor's zip: LABEL-audit.csv, LABEL-summary.json, messages/<delivery>.eml."""
    from mailer.compliance.archive import reproduce_row  # render and Jinja2 load only for an export

    renderers: dict[str, Renderer] = {}
    summary = Summary()
    rows = 0
    # The table goes to a temporary file, not memory: a campaign may have millions of rows.
    table = tempfile.TemporaryFile("w+", encoding="utf-8", newline="")  # noqa: SIM115
    writer = csv_writer(table)
    writer.writerow(CSV_COLUMNS)
    with table, zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        async for row in store.audit_rows(campaign_id, contact_id):
            rows += 1
            standing = standing_of(row)
            eml, verified = "", None
            inputs = row["render_inputs"]
            if inputs is not None and "erased_at" not in inputs:
                again = reproduce_row(row, renderers)
                eml, verified = f"messages/{row['delivery_id']}.eml", again.verified
                bundle.writestr(eml, again.data)
            summary.add(row, standing, verified)
            writer.writerow(csv_row(row, standing, eml, verified))
        table.seek(0)
        with bundle.open(f"{label}-audit.csv", "w") as target:
            for line in table:
                target.write(line.encode("utf-8"))
        await _operator_log(bundle, store, label, campaign, contact_id)
        sla = await store.unsubscribe_sla(campaign_id)
        document = {
            "generated_at": datetime.now(UTC).isoformat(),
            "generated_by": operator(),
            "campaign": None if campaign is None else _campaign_json(campaign),
            "recipients": rows,
            **summary.as_dict(),
            "unsubscribe_sla": {**sla, "line": sla_line(sla)},
        }
        bundle.writestr(
            f"{label}-summary.json", json.dumps(document, indent=2, ensure_ascii=False, default=str)
        )
    return AuditResult(rows, document, summary.clean and not sla_breached(sla))


async def _operator_log(
    bundle: zipfile.ZipFile,
    store: ComplianceStore,
    label: str,
    campaign: Campaign | None,
    contact_id: int | None,
) -> None:
    """LABEL-operator-log.csv: who changed the campaign (or the contact) through the API,
    the console or the CLI, when (the append-only operator log), newest first."""
    subjects = []
    if campaign is not None:
        subjects.append(("campaign", campaign.slug))
    if contact_id is not None:
        subjects.append(("contact", str(contact_id)))
    table = tempfile.TemporaryFile("w+", encoding="utf-8", newline="")  # noqa: SIM115
    with table:
        writer = csv_writer(table)
        writer.writerow(["at", "actor_kind", "actor_id", "action", "object_kind", "object_id",
                         "detail"])  # fmt: skip
        for kind, ident in subjects:
            before = None
            while page := await store.operator_log(
                before=before, limit=500, object_kind=kind, object_id=ident
            ):
                for e in page:
                    writer.writerow([e.at.isoformat(), e.actor_kind, e.actor_id, e.action,
                                     e.object_kind, e.object_id,
                                     json.dumps(e.detail, ensure_ascii=False)])  # fmt: skip
                before = page[-1].id
        table.seek(0)
        bundle.writestr(f"{label}-operator-log.csv", table.read())


def _campaign_json(campaign: Campaign) -> dict[str, Any]:
    definition = campaign.definition
    return {
        "slug": campaign.slug,
        "name": definition.get("name"),
        "kind": definition.get("kind"),
        "policy": definition.get("policy"),
        "topic": campaign.topic_slug,
        "status": campaign.status,
        "audience_at": campaign.audience_at,
        "audience_counts": campaign.audience_counts,
        "started_at": campaign.started_at,
        "finished_at": campaign.finished_at,
        "sender": definition.get("sender"),
    }
