"""List hygiene and data subject requests: purge, erase, export, and the opt-out SLA line.

Erasure anonymises in place (contacts are never deleted: reports keep their
totals) and keeps a hashed global suppression, so a re-import cannot bring a
person back silently. Every purge and erasure lands in the append-only
privacy_log with who ran it. The SQL is in mailer/sql/privacy.sql; the rules
here are values in, values out, and the CLI handlers at the end wire them up.
"""

from __future__ import annotations

import argparse
import getpass
import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from mailer.core.addresses import InvalidAddress, address_hash, normalise
from mailer.core.consent import add_months

if TYPE_CHECKING:
    from mailer.store import Store

# Ledger evidence keys that survive an erasure: where the row came from (import
# and line), which message and campaign an opt-out answered, and how it was made.
# They identify no one, and reports count opt-outs by them. IP prefix, user agent,
# free-text reasons and anything else go (GDPR art. 17).
EVIDENCE_KEPT = ("import_id", "file", "line", "delivery_id", "campaign_id", "method")

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
    log_id: int
    db_user: str
    performed_at: datetime

    @classmethod
    def from_counts(cls, counts: Mapping[str, Any]) -> Erasure:
        """Build from Store._erase's result (a successful run)."""
        return cls(**{name: counts[name] for name in cls.__dataclass_fields__})

    def lines(self) -> list[str]:
        """Plain-English lines for the operator."""
        return [
            f"{self.contacts:,} contact(s) anonymised, {self.suppressions:,} hashed "
            "suppression(s) added (a re-import stays suppressed)",
            f"{self.consents_scrubbed:,} ledger row(s) stripped of evidence, "
            f"{self.events_scrubbed:,} open/click event(s) stripped of user agent and IP, "
            f"{self.archive_scrubbed:,} archived message(s) stripped of render inputs",
            f"{self.deliveries_skipped:,} unsent deliveries skipped, "
            f"{self.deliveries_scrubbed:,} SMTP replies dropped",
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


def sla_line(sla: Mapping[str, Any]) -> str:
    """The report line proving opt-outs took effect before the next send."""
    verdict = "OK" if sla["violations"] == 0 else f"VIOLATED ({sla['violations']} sent after)"
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
            "privacy_log": "erasures of this address",
        },
        "tables": dict(tables),
    }


def operator() -> str | None:
    """The OS user running the command, for the privacy log (None if it cannot be told)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no passwd entry and no LOGNAME/USER (some containers)
        return None


# ---------------------------------------------------------------- CLI handlers


def _email(text: str, console: Console) -> str | None:
    try:
        return normalise(text)
    except InvalidAddress as exc:
        console.print(f"[red]error:[/] {text!r} is not a valid address: {exc}", highlight=False)
        return None


def _months(args: argparse.Namespace, console: Console) -> int | None:
    try:
        return parse_months(args.inactive)
    except ValueError as exc:
        console.print(f"[red]error:[/] --inactive: {exc}", highlight=False)
        return None


async def hygiene_report(args: argparse.Namespace, store: Store, console: Console) -> int:
    """`mailer hygiene report`: contacts by hygiene rule, the opt-out SLA, recent purges."""
    months = _months(args, console)
    if months is None:
        return 2
    now = datetime.now(UTC)
    counts = await store.hygiene_report(inactivity_cutoff(now, months), now, args.unengaged)
    table = Table("", "contacts", title=f"list hygiene at {now:%Y-%m-%d %H:%M} UTC")
    for label, key in (
        ("live contacts", "contacts"),
        (f"inactive ≥ {months} months", "inactive"),
        ("without valid express consent", "without_express"),
        ("only expired implied consent (email)", "only_expired_implied"),
        ("hard-bounced", "hard_bounced"),
        (f"never opened or clicked in their last {args.unengaged} messages", "unengaged"),
        ("[bold]purge candidates[/] (inactive and no express consent)", "purge_candidates"),
        ("already erased", "erased"),
    ):
        table.add_row(label, f"{counts[key]:,}")
    console.print(table)
    if counts["in_flight"]:
        console.print(f"{counts['in_flight']:,} contact(s) have a message in flight: not purged")
    console.print(sla_line(await store.unsubscribe_sla(None)), highlight=False)
    log = await store.privacy_log_recent(5)
    if log:
        recent = Table("#", "when", "action", "rule", "contacts", "by", title="privacy log")
        for row in log:
            recent.add_row(
                str(row["id"]),
                f"{row['performed_at']:%Y-%m-%d %H:%M}",
                row["action"],
                row["rule"],
                f"{row['contacts']:,}",
                row["os_user"] or row["db_user"],
            )
        console.print(recent)
    return 0


async def hygiene_purge(args: argparse.Namespace, store: Store, console: Console) -> int:
    """`mailer hygiene purge --inactive 12m [--dry-run] [--yes]`: a dry run unless --yes."""
    months = _months(args, console)
    if months is None:
        return 2
    now = datetime.now(UTC)
    cutoff, rule = inactivity_cutoff(now, months), purge_rule(months)
    if args.dry_run or not args.yes:
        count = await store.hygiene_candidate_count(cutoff, now)
        console.print(
            f"dry run: {count:,} contact(s) would be erased ({rule}, last activity before "
            f"{cutoff:%Y-%m-%d}); run with --yes to erase them",
            highlight=False,
        )
        return 0
    try:
        done = erasure_of(
            await store.hygiene_purge(
                cutoff, now, rule=rule, os_user=operator(), evidence_kept=EVIDENCE_KEPT
            )
        )
    except ErasureBusy as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        return 1
    console.print(f"purged ({rule}):", highlight=False)
    for line in done.lines():
        console.print(f"  {line}", highlight=False)
    return 0


async def contacts_export(args: argparse.Namespace, store: Store, console: Console) -> int:
    """`mailer contacts export EMAIL [--out FILE]`: everything held about a person, as JSON."""
    email = _email(args.email, console)
    if email is None:
        return 2
    tables = await store.contact_export(email, address_hash(email))
    document = export_document(email, tables, datetime.now(UTC))
    text = json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    if args.out in (None, "-"):
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text, encoding="utf-8")  # noqa: ASYNC240 - one small file
        counts = ", ".join(f"{name} {len(rows)}" for name, rows in tables.items() if rows)
        console.print(f"wrote {args.out}: {counts or 'nothing held'}", highlight=False)
    return 0


async def contacts_erase(args: argparse.Namespace, store: Store, console: Console) -> int:
    """`mailer contacts erase EMAIL --yes`: erase a person's data, keep a hashed suppression."""
    email = _email(args.email, console)
    if email is None:
        return 2
    if not args.yes:
        console.print(
            f"this erases every personal data held about {email} for good; "
            "run again with --yes to do it",
            highlight=False,
        )
        return 1
    try:
        done = erasure_of(
            await store.contact_erase(
                email,
                address_hash(email),
                rule=ERASE_RULE,
                os_user=operator(),
                evidence_kept=EVIDENCE_KEPT,
            )
        )
    except ErasureBusy as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        return 1
    if done.contacts == 0:
        console.print(f"no contact holds {email}; its address is suppressed all the same")
    for line in done.lines():
        console.print(line, highlight=False)
    return 0


# ---------------------------------------------------------------- wiring

PrivacyHandler = Callable[[argparse.Namespace, "Store", Console], Any]


def add_commands(
    sub: Any, contacts: Any, adapt: Callable[[PrivacyHandler], Callable[..., Any]]
) -> None:
    """Register `hygiene …`, `contacts export|erase` and `audit export` on mailer/cli.py's parser.

    `sub` is the top-level subparsers, `contacts` the `contacts` subparsers, and
    `adapt` turns a (args, store, console) handler into the CLI's handler type.
    """
    from mailer.compliance import audit

    hygiene = sub.add_parser("hygiene", help="list hygiene").add_subparsers(dest="h", required=True)
    report = hygiene.add_parser("report", help="inactive, unconsented, bounced, unengaged contacts")
    report.add_argument("--inactive", default=DEFAULT_INACTIVE, help="period: 12m, 18m, 2y")
    report.add_argument(
        "--unengaged",
        type=int,
        default=DEFAULT_UNENGAGED,
        help="count contacts with no open or click in their last N messages (default 5)",
    )
    report.set_defaults(handler=adapt(hygiene_report))
    purge = hygiene.add_parser("purge", help="erase inactive contacts without express consent")
    purge.add_argument("--inactive", default=DEFAULT_INACTIVE, help="period: 12m, 18m, 2y")
    purge.add_argument("--dry-run", action="store_true", help="count only (the default)")
    purge.add_argument("--yes", action="store_true", help="really erase them")
    purge.set_defaults(handler=adapt(hygiene_purge))

    export = contacts.add_parser("export", help="everything held about a person, as JSON")
    export.add_argument("email")
    export.add_argument("--out", help="JSON file (default: standard output)")
    export.set_defaults(handler=adapt(contacts_export))
    erase = contacts.add_parser("erase", help="erase a person's data (keeps a hashed suppression)")
    erase.add_argument("email")
    erase.add_argument("--yes", action="store_true", help="really erase")
    erase.set_defaults(handler=adapt(contacts_erase))

    auditing = sub.add_parser("audit", help="proof for regulators").add_subparsers(
        dest="aud", required=True
    )
    bundle = auditing.add_parser("export", help="zip: per-recipient consent CSV, .eml, summary")
    bundle.add_argument("--campaign")
    bundle.add_argument("--contact", help="one recipient's messages (with or without --campaign)")
    bundle.add_argument("--out", help="zip file (default CAMPAIGN-audit.zip)")
    bundle.set_defaults(handler=adapt(audit.audit_export))
