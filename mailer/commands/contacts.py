"""`mailer contacts import|show|explain`, `consents expiring`, `suppress import`: the contact
commands (the story and explain in contact_story.py, topics in topics.py)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from mailer.campaigns import audience
from mailer.campaigns.store import CampaignStore
from mailer.commands.console import at_of, console, err, open_pool
from mailer.commands.contact_story import contacts_explain, contacts_show, when
from mailer.commands.oplog import logged_write
from mailer.contacts import imports
from mailer.contacts.csvfile import Defaults
from mailer.contacts.store import ContactStore, ImportRefused
from mailer.core import consent_dates
from mailer.core.settings import Settings


async def contacts_import(args: argparse.Namespace, settings: Settings) -> int:
    defaults = Defaults(
        consent=args.consent,
        source=args.source,
        consent_date=args.consent_date,
        channel=args.channel,
        locale=args.locale,
        topics=args.topics,
    )
    async with open_pool(settings) as pool:
        try:
            outcome = await imports.import_contacts(
                ContactStore(pool),
                Path(args.file),
                defaults,
                default_locale=settings.imports.default_locale,
                skip_invalid=args.skip_invalid,
                rejects_path=Path(args.rejects) if args.rejects else None,
                encoding=args.encoding,
                delimiter=args.delimiter,
            )
        except ImportRefused as exc:
            _print_rejects(exc.examples, exc.rejected, exc.rejects_file)
            err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
            return 2
    r = outcome.result
    if outcome.rejects_file:
        _print_rejects(outcome.rejected, r.rows_rejected, outcome.rejects_file)
    table = Table(
        "rows read",
        "valid",
        "rejected",
        "created",
        "updated",
        "consents added",
        "topic subscriptions",
        "suppressed",
    )
    table.add_row(
        *(
            str(v)
            for v in (
                r.rows_read,
                r.rows_valid,
                r.rows_rejected,
                r.contacts_created,
                r.contacts_updated,
                r.consents_added,
                r.topics_added,
                r.suppressed,
            )
        )
    )
    console.print(table)
    console.print(f"read {Path(args.file).name} as {outcome.dialect.describe()}", highlight=False)
    return 0


def _print_rejects(examples: Sequence[Any], total: int, where: Path | None) -> None:
    for row in examples:
        err.print(f"line {row.line}: {row.reason}", markup=False, highlight=False)
    if total > len(examples):
        err.print(f"… and {total - len(examples)} more")
    if where is not None and total:
        err.print(f"all rejected rows: {where}")


async def consents_expiring(args: argparse.Namespace, settings: Settings) -> int:
    at = at_of(args)
    try:
        window = audience.parse_duration(args.within, now=at)
    except ValueError as exc:
        err.print(f"[red]error:[/] --within: {exc}")
        return 2
    async with open_pool(settings) as pool:
        rows = await CampaignStore(pool).consents_expiring(args.channel, at, at + window)
    table = Table(
        "email",
        "name",
        "locale",
        "consent",
        "source",
        "obtained",
        "lapses",
        title=f"implied {args.channel} consents lapsing before {at + window:%Y-%m-%d}",
    )
    for r in rows:
        end_is_date = consent_dates.end_date_only(
            r.kind, obtained_date_only=r.obtained_date_only, ends_date_only=r.ends_date_only
        )
        table.add_row(
            r.email,
            r.name or "",
            r.locale,
            r.kind,
            r.source,
            when(r.obtained_at, date_only=r.obtained_date_only),
            when(r.valid_until, date_only=end_is_date),
        )
    console.print(table)
    console.print(f"{len(rows):,} contact(s) to ask for express consent")
    return 0


async def suppress_import(args: argparse.Namespace, settings: Settings) -> int:
    async with open_pool(settings) as pool:
        store = ContactStore(pool)
        try:
            topic_id = await imports.suppression_target(
                store, reason=args.reason, scope=args.scope, channel=args.channel, topic=args.topic
            )
        except imports.SuppressionTargetError as exc:
            err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
            return 2
        source = args.source or Path(args.file).name
        detail = {"reason": args.reason, "scope": args.scope, "source": source}
        async with logged_write(pool, "suppressions.import", "suppression", None, detail) as w:
            result, rejected = await imports.import_suppressions(
                store,
                Path(args.file),
                reason=args.reason,
                scope=args.scope,
                channel=args.channel,
                topic_id=topic_id,
                source=source,
                encoding=args.encoding,
                delimiter=args.delimiter,
                conn=w.conn,
            )
            w.detail.update(added=result.added, rejected=result.rows_rejected)
    _print_rejects(rejected[:20], len(rejected), None)
    console.print(
        f"{result.rows_valid} address(es) read, {result.added} new suppression(s), "
        f"{result.rows_rejected} rejected"
    )
    return 0


def _file_options(parser: argparse.ArgumentParser) -> None:
    """--encoding and --delimiter, read by mailer/contacts/textfile.py."""
    parser.add_argument(
        "--encoding",
        help="utf-8, utf-8-sig, cp1252 or latin-1 (default: UTF-8, and a file that is not "
        "UTF-8 is refused with the line that is not; Excel on Windows writes cp1252)",
    )
    parser.add_argument(
        "--delimiter",
        help="',', ';' or 'tab' (default: read from the header line)",
    )


def register(sub: Any) -> Any:
    """Register the contact commands; return the `contacts` group (compliance adds to it)."""
    contacts = sub.add_parser("contacts", help="contacts and their consent").add_subparsers(
        dest="c", required=True
    )
    imp = contacts.add_parser("import", help="import a contacts CSV (all or nothing)")
    imp.add_argument("file")
    imp.add_argument("--consent", help="consent kind for rows without one (e.g. express)")
    imp.add_argument("--source", help="consent source for rows without one")
    imp.add_argument("--consent-date", help="consent date for rows without one (YYYY-MM-DD)")
    imp.add_argument("--channel", default="email")
    imp.add_argument("--locale", help="locale for rows without one")
    imp.add_argument("--topics", help="topic slugs (;-separated) for rows without any")
    imp.add_argument(
        "--skip-invalid",
        action="store_true",
        help="import the valid rows even if some are rejected",
    )
    imp.add_argument("--rejects", help="where to write rejected rows (default FILE.rejects.csv)")
    _file_options(imp)
    imp.set_defaults(handler=contacts_import)
    show = contacts.add_parser("show", help="a contact's consent story")
    show.add_argument("email")
    show.add_argument(
        "--timezone",
        default="UTC",
        help="print timestamps as days in this zone, as a campaign's footer does (default UTC)",
    )
    show.set_defaults(handler=contacts_show)
    explain = contacts.add_parser("explain", help="may this contact receive a campaign, and why")
    explain.add_argument("email")
    target = explain.add_mutually_exclusive_group(required=True)
    target.add_argument("--campaign")
    target.add_argument("--template", help="a transactional template (mailer send TEMPLATE)")
    explain.add_argument("--at", help="send time (ISO 8601, default now)")
    explain.set_defaults(handler=contacts_explain)
    consents = sub.add_parser("consents", help="the consent ledger").add_subparsers(
        dest="cons", required=True
    )
    exp = consents.add_parser("expiring", help="implied consents about to lapse (re-permission)")
    exp.add_argument("--within", default="30d", help="window: 30d, 2w, 6m (default 30d)")
    exp.add_argument("--channel", default="email", choices=["email", "sms", "postal", "phone"])
    exp.add_argument("--at", help="start of the window (ISO 8601, default now)")
    exp.set_defaults(handler=consents_expiring)

    suppress = sub.add_parser("suppress", help="suppression lists").add_subparsers(
        dest="s", required=True
    )
    simp = suppress.add_parser("import", help="suppress every address in a file")
    simp.add_argument("file")
    simp.add_argument(
        "--reason",
        default="registry",
        choices=["registry", "manual", "complaint", "hard_bounce", "unsubscribe"],
    )
    simp.add_argument("--scope", default="global", choices=["global", "channel", "topic"])
    simp.add_argument("--channel", choices=["email", "sms", "postal", "phone"])
    simp.add_argument("--topic")
    simp.add_argument("--source", help="where the list comes from (default: the file name)")
    _file_options(simp)
    simp.set_defaults(handler=suppress_import)

    return contacts
