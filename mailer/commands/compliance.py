"""`mailer hygiene …`, `contacts export|erase`, `audit export`: the compliance commands."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from mailer.campaigns.store import CampaignStore
from mailer.commands.console import console, err, open_pool
from mailer.commands.oplog import logged_write
from mailer.compliance import archive
from mailer.compliance.audit import export_audit
from mailer.compliance.privacy import (
    DEFAULT_INACTIVE,
    DEFAULT_UNENGAGED,
    EVIDENCE_KEPT,
    ErasureBusy,
    erasure_of,
    inactivity_cutoff,
    operator,
    parse_months,
    purge_rule,
    sla_line,
)
from mailer.compliance.rights import erase_contact, export_contact
from mailer.compliance.store import ComplianceStore
from mailer.core.addresses import InvalidAddress, address_hash, normalise
from mailer.core.settings import Settings


def _email(text: str) -> str | None:
    try:
        return normalise(text)
    except InvalidAddress as exc:
        console.print(f"[red]error:[/] {text!r} is not a valid address: {exc}", highlight=False)
        return None


def _months(args: argparse.Namespace) -> int | None:
    try:
        return parse_months(args.inactive)
    except ValueError as exc:
        console.print(f"[red]error:[/] --inactive: {exc}", highlight=False)
        return None


async def hygiene_report(args: argparse.Namespace, settings: Settings) -> int:
    """`mailer hygiene report`: contacts by hygiene rule, the opt-out SLA, recent purges."""
    async with open_pool(settings) as pool:
        store = ComplianceStore(pool)
        months = _months(args)
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
            console.print(
                f"{counts['in_flight']:,} contact(s) have a message in flight: not purged"
            )
        await _print_suppression_evidence(store)
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


_EVIDENCE_SHOWN = 10


async def _print_suppression_evidence(store: ComplianceStore) -> None:
    """Bounced and complained addresses by source, and the mail behind the latest ones."""
    sources = await store.hygiene_suppression_sources()
    if sources:
        console.print(
            "suppressed by source: "
            + ", ".join(f"{reason} {source} {n:,}" for (reason, source), n in sources.items()),
            highlight=False,
        )
    latest = await store.hygiene_inbound_evidence(_EVIDENCE_SHOWN)
    if not latest:
        return
    console.print(f"[bold]latest suppressions from inbound mail[/] (newest {len(latest)}):")
    for held in latest:
        console.print(
            f"  {held.created_at:%Y-%m-%d %H:%M} {held.email or '(erased or no contact)'} "
            f"{held.reason}: {escape(held.evidence.line())}",
            highlight=False,
            soft_wrap=True,
        )


async def hygiene_purge(args: argparse.Namespace, settings: Settings) -> int:
    """`mailer hygiene purge --inactive 12m [--dry-run] [--yes]`: a dry run unless --yes."""
    async with open_pool(settings) as pool:
        store = ComplianceStore(pool)
        months = _months(args)
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
            detail = {"rule": rule, "inactive_before": cutoff.isoformat()}
            async with logged_write(pool, "hygiene.purge", "privacy_log", None, detail) as w:
                done = erasure_of(
                    await store.hygiene_purge(
                        cutoff,
                        now,
                        rule=rule,
                        os_user=operator(),
                        evidence_kept=EVIDENCE_KEPT,
                        conn=w.conn,
                    )
                )
                w.object_id = str(done.log_id)  # the purge's own record, counts per table
                w.detail.update(contacts=done.contacts)
        except ErasureBusy as exc:
            console.print(f"[red]error:[/] {exc}", highlight=False)
            return 1
        console.print(f"purged ({rule}):", highlight=False)
        for line in done.lines():
            console.print(f"  {line}", highlight=False)
        return 0


async def contacts_export(args: argparse.Namespace, settings: Settings) -> int:
    """`mailer contacts export EMAIL [--out FILE]`: everything held about a person, as JSON."""
    async with open_pool(settings) as pool:
        store = ComplianceStore(pool)
        email = _email(args.email)
        if email is None:
            return 2
        document = await export_contact(store, email, datetime.now(UTC))
        tables = document["tables"]
        text = json.dumps(document, ensure_ascii=False, indent=2) + "\n"
        if args.out in (None, "-"):
            sys.stdout.write(text)
        else:
            Path(args.out).write_text(text, encoding="utf-8")  # noqa: ASYNC240 - one small file
            counts = ", ".join(f"{name} {len(rows)}" for name, rows in tables.items() if rows)
            console.print(f"wrote {args.out}: {counts or 'nothing held'}", highlight=False)
        return 0


async def contacts_erase(args: argparse.Namespace, settings: Settings) -> int:
    """`mailer contacts erase EMAIL --yes`: erase a person's data, keep a hashed suppression."""
    async with open_pool(settings) as pool:
        store = ComplianceStore(pool)
        email = _email(args.email)
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
            # Named by the address's hash, as the API logs it: the log outlives the erasure.
            hashed = address_hash(email).hex()
            async with logged_write(pool, "contacts.erase", "contact", hashed) as w:
                done = await erase_contact(store, email, operator(), w.conn)
        except ErasureBusy as exc:
            console.print(f"[red]error:[/] {exc}", highlight=False)
            return 1
        if done.contacts == 0:
            console.print(f"no contact holds {email}; its address is suppressed all the same")
        for line in done.lines():
            console.print(line, highlight=False)
        return 0


async def audit_export(args: argparse.Namespace, settings: Settings) -> int:
    """`mailer audit export --campaign C [--contact EMAIL] [--out FILE]`."""
    async with open_pool(settings) as pool:
        store = ComplianceStore(pool)
        if not args.campaign and not args.contact:
            console.print("[red]error:[/] give --campaign, --contact or both")
            return 2
        campaign = campaign_id = contact_id = None
        if args.campaign:
            campaign = await CampaignStore(pool).campaign_by_slug(args.campaign)
            if campaign is None:
                console.print(f"[red]error:[/] no campaign {args.campaign!r}", highlight=False)
                return 2
            campaign_id = campaign.id
        if args.contact:
            try:
                email = normalise(args.contact)
            except InvalidAddress as exc:
                console.print(f"[red]error:[/] --contact: {exc}", highlight=False)
                return 2
            contact_id = await store.audit_contact_id(email)
            if contact_id is None:
                console.print(f"[red]error:[/] no contact {email} (erased or never held)")
                return 2
        label = args.campaign or f"contact-{contact_id}"
        out = Path(args.out or f"{label}-audit.zip")
        result = await export_audit(
            store,
            out,
            label=label,
            campaign_id=campaign_id,
            contact_id=contact_id,
            campaign=campaign,
        )
        s = result.summary
        console.print(
            f"wrote {out}: {result.rows:,} recipient(s), {s['sent']:,} sent, "
            f"{s['sent_with_valid_consent']:,} with a consent valid at send time, "
            f"{s['hashes_verified']:,}/{s['messages_archived']:,} archived messages verified",
            highlight=False,
        )
        console.print(s["unsubscribe_sla"]["line"], highlight=False)
        if not result.clean:
            console.print(
                "[red]attention:[/] see sent_without_valid_consent, hash_mismatches and "
                "unsubscribe_sla in the summary"
            )
        return 0 if result.clean else 1


async def archive_show(args: argparse.Namespace, settings: Settings) -> int:
    async with open_pool(settings) as pool:
        row = await ComplianceStore(pool).archive_by_delivery(args.delivery)
    if row is None:
        err.print(f"[red]error:[/] no archived message for delivery {args.delivery}")
        return 2
    if archive.erased(row):
        console.print(
            f"delivery {args.delivery}: the recipient was erased on "
            f"{row['render_inputs']['erased_at']}; the message cannot be rebuilt. "
            f"sha256 at send time: {bytes(row['sha256']).hex()}"
        )
        return 0
    again = archive.reproduce_row(row)
    head = again.data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    console.print(head, markup=False, highlight=False)
    console.print(
        f"\n{row['size_bytes']:,} bytes, sent {row['sent_at']}, template {row['template']}"
    )
    if again.verified:
        console.print(f"[green]re-rendered byte for byte: sha256 {again.sha256} matches[/]")
        return 0
    err.print(f"[red]MISMATCH: stored sha256 {again.stored_sha256}, re-rendered {again.sha256}[/]")
    return 1


async def archive_export(args: argparse.Namespace, settings: Settings) -> int:
    async with open_pool(settings) as pool:
        spec = await CampaignStore(pool).campaign_spec(args.campaign)
        if spec is None:
            err.print(f"[red]error:[/] no campaign {args.campaign!r}")
            return 2
        out = Path(args.out or f"{args.campaign}-archive.zip")
        store = ComplianceStore(pool)
        counts = await archive.export_campaign(store, spec.id, args.campaign, out)
    console.print(
        f"wrote {out}: {counts.messages:,} messages, {counts.verified:,} verified by hash, "
        f"{counts.erased:,} of erased recipients (hash and consent only), with consents"
    )
    return 0 if counts.complete else 1


def register(sub: Any, contacts: Any) -> None:
    """`hygiene …`, `contacts export|erase` (on the `contacts` group), `audit …`, `archive …`."""
    hygiene = sub.add_parser("hygiene", help="list hygiene").add_subparsers(dest="h", required=True)
    report = hygiene.add_parser("report", help="inactive, unconsented, bounced, unengaged contacts")
    report.add_argument("--inactive", default=DEFAULT_INACTIVE, help="period: 12m, 18m, 2y")
    report.add_argument(
        "--unengaged",
        type=int,
        default=DEFAULT_UNENGAGED,
        help="count contacts with no open or click in their last N messages (default 5)",
    )
    report.set_defaults(handler=hygiene_report)
    purge = hygiene.add_parser("purge", help="erase inactive contacts without express consent")
    purge.add_argument("--inactive", default=DEFAULT_INACTIVE, help="period: 12m, 18m, 2y")
    purge.add_argument("--dry-run", action="store_true", help="count only (the default)")
    purge.add_argument("--yes", action="store_true", help="really erase them")
    purge.set_defaults(handler=hygiene_purge)

    export = contacts.add_parser("export", help="everything held about a person, as JSON")
    export.add_argument("email")
    export.add_argument("--out", help="JSON file (default: standard output)")
    export.set_defaults(handler=contacts_export)
    erase = contacts.add_parser("erase", help="erase a person's data (keeps a hashed suppression)")
    erase.add_argument("email")
    erase.add_argument("--yes", action="store_true", help="really erase")
    erase.set_defaults(handler=contacts_erase)

    auditing = sub.add_parser("audit", help="proof for regulators").add_subparsers(
        dest="aud", required=True
    )
    bundle = auditing.add_parser("export", help="zip: per-recipient consent CSV, .eml, summary")
    bundle.add_argument("--campaign")
    bundle.add_argument("--contact", help="one recipient's messages (with or without --campaign)")
    bundle.add_argument("--out", help="zip file (default CAMPAIGN-audit.zip)")
    bundle.set_defaults(handler=audit_export)

    arch = sub.add_parser("archive", help="sent messages, reproducible").add_subparsers(
        dest="arch", required=True
    )
    ashow = arch.add_parser("show", help="re-render one sent message and check its hash")
    ashow.add_argument("delivery", type=int)
    ashow.set_defaults(handler=archive_show)
    aexp = arch.add_parser("export", help="a zip of a campaign's messages (.eml) and consents")
    aexp.add_argument("--campaign", required=True)
    aexp.add_argument("--out", help="zip file (default CAMPAIGN-archive.zip)")
    aexp.set_defaults(handler=archive_export)
