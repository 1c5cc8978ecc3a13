"""`mailer topics …`, `contacts import|show|explain`, `consents expiring`, `suppress import`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from mailer.campaigns import audience
from mailer.campaigns.store import CampaignStore
from mailer.commands import transactional
from mailer.commands.console import at_of, console, day, err, open_pool
from mailer.commands.oplog import log_cli, logged_write
from mailer.contacts import imports
from mailer.contacts.csvfile import Defaults
from mailer.contacts.store import ContactStore, ImportRefused
from mailer.core import consent_dates
from mailer.core.addresses import InvalidAddress, address_hash, normalise
from mailer.core.evidence import InboundEvidence
from mailer.core.settings import Settings
from mailer.core.topics import LANGUAGES as TOPIC_LANGUAGES
from mailer.core.topics import topic_name
from mailer.forms.wording import form_history_line


async def topics_add(args: argparse.Namespace, settings: Settings) -> int:
    # Only the names given change: `--name-en` later keeps the French name; "" removes one.
    names = {
        lang: getattr(args, f"name_{lang}") or None
        for lang in TOPIC_LANGUAGES
        if getattr(args, f"name_{lang}") is not None
    }
    async with open_pool(settings) as pool:
        topic_id = await ContactStore(pool).topic_upsert(
            args.slug, args.name or None, args.description, not args.opt_in, names=names
        )
        # After the change, not with it: ContactStore.topic_upsert takes no connection yet
        # (mailer/contacts is being reworked for import speed meanwhile).
        detail = {"id": topic_id, "opt_in": args.opt_in, "names": names}
        await log_cli(pool, "topic.upsert", "topic", args.slug, detail)
    console.print(f"topic {args.slug} (id {topic_id})")
    return 0


async def topics_list(args: argparse.Namespace, settings: Settings) -> int:
    async with open_pool(settings) as pool:
        topics = await ContactStore(pool).topics_list()
    table = Table("slug", "name", *(f"name ({lang})" for lang in TOPIC_LANGUAGES), "subscription")
    for t in topics:
        # What a reader of each language sees, fallback included (mailer.core.topics).
        shown = [topic_name(t.names, t.name, t.slug, lang) for lang in TOPIC_LANGUAGES]
        table.add_row(t.slug, t.name, *shown, "opt-out" if t.default_subscribed else "opt-in")
    console.print(table)
    return 0


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


async def contacts_show(args: argparse.Namespace, settings: Settings) -> int:
    try:
        email = normalise(args.email)
    except InvalidAddress as exc:
        err.print(f"[red]error:[/] {args.email!r} is not a valid address: {exc}")
        return 2
    try:
        here = consent_dates.zone(args.timezone)
    except ValueError as exc:
        err.print(f"[red]error:[/] --timezone: {exc}")
        return 2
    async with open_pool(settings) as pool:
        store = ContactStore(pool)
        story = await store.contact_story(email, address_hash(email))
        mail = await store.inbound_evidence(email, address_hash(email))
    if story is None:
        err.print(f"no contact and no suppression for {email}")
        return 1
    contact = story.contact
    if contact is None:
        console.print(f"{email}: not a contact")
    else:
        console.print(
            f"[bold]{contact.email}[/]  {contact.name or ''}  locale={contact.locale}  "
            f"tracking={'on' if contact.tracking else 'off'}  "
            f"last activity={day(contact.last_activity_at)}  "
            f"attributes={contact.attributes}"
        )
        ledger = Table(
            "when",
            "channel",
            "action",
            "kind / topic",
            "source",
            "ends",
            "evidence",
            title="consent history",
            caption=f"dates given without a time as given; times as days in {here}",
        )
        for row in story.ledger:
            ledger.add_row(
                when(row.obtained_at, here, date_only=row.obtained_date_only),
                row.channel,
                row.action,
                row.kind or (f"topic {row.topic}" if row.topic else "-"),
                row.source,
                when(row.ends_at, here, date_only=row.ends_date_only),
                str(row.evidence),
            )
        console.print(ledger)
        for row in story.ledger:
            # A sign-up form's grant in plain words, as the preference centre says it.
            said = form_history_line(row.evidence or {}, row.obtained_at, "en", here)
            if row.kind == "express" and said is not None:
                console.print(said, highlight=False, markup=False)
        prefs = Table("preference", "state", "since", title="preferences")
        for topic in story.topics:
            prefs.add_row(
                f"topic {topic.slug}",
                "subscribed" if topic.subscribed else "opted out",
                when(topic.updated_at, here),
            )
        for channel in story.channels:
            prefs.add_row(
                f"channel {channel.channel}",
                "on" if channel.enabled else "off",
                when(channel.updated_at, here),
            )
        console.print(prefs)
    sup = Table("scope", "reason", "source", "since", "evidence", title="suppressions")
    for held in story.suppressions:
        target = held.channel or held.topic or ""
        sup.add_row(
            f"{held.scope} {target}".strip(),
            held.reason,
            held.source,
            when(held.created_at, here),
            held.evidence(),
        )
    console.print(sup)
    print_inbound_evidence(mail)
    return 0


def print_inbound_evidence(mail: Sequence[InboundEvidence]) -> None:
    """The DSNs, feedback reports and mailto unsubscribes behind suppressions and opt-outs."""
    if not mail:
        return
    console.print("[bold]inbound mail behind these[/] (bounces, complaints, mailto unsubscribes):")
    for evidence in mail:
        console.print(f"  {escape(evidence.line())}", highlight=False, soft_wrap=True)


async def contacts_explain(args: argparse.Namespace, settings: Settings) -> int:
    at = at_of(args)
    try:
        email = normalise(args.email)
    except InvalidAddress as exc:
        err.print(f"[red]error:[/] {args.email!r} is not a valid address: {exc}")
        return 2
    if args.template:
        # Transactional templates answer by their basis's rules (mailer/transactional/basis.py).
        return await transactional.explain_template(settings, email, args.template)
    async with open_pool(settings) as pool:
        spec = await CampaignStore(pool).campaign_spec(args.campaign)
        inputs = await ContactStore(pool).contact_rule_inputs(email)
        mail = await ContactStore(pool).inbound_evidence(email, address_hash(email))
    if spec is None:
        err.print(f"[red]error:[/] no campaign {args.campaign!r}")
        return 2
    if inputs is None:
        err.print(f"no contact {email}")
        return 1
    verdict = audience.explain(inputs, spec, at)
    if verdict.eligible:
        console.print(f"[green]eligible[/] for {args.campaign}: {verdict.detail}", highlight=False)
    else:
        assert verdict.reason is not None
        console.print(
            f"[red]not eligible[/] for {args.campaign} ({verdict.reason.value}): {verdict.detail}",
            highlight=False,
        )
    print_inbound_evidence(mail)
    return 0


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


def when(value: datetime | None, zone: tzinfo = UTC, *, date_only: bool = False) -> str:
    """A day as YYYY-MM-DD, by the rule the footer and the preference centre print it with."""
    if value is None:
        return "-"
    return consent_dates.consent_day(value, zone, date_only=date_only).isoformat()


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
    topics = sub.add_parser("topics", help="message topics").add_subparsers(dest="t", required=True)
    add = topics.add_parser("add", help="create or update a topic")
    add.add_argument("slug")
    add.add_argument("--name", help="default name, for languages without their own (default: slug)")
    for lang in TOPIC_LANGUAGES:
        add.add_argument(
            f"--name-{lang}", help=f'the name {lang} readers see ("" removes it)', metavar="NAME"
        )
    add.add_argument("--description", default="")
    add.add_argument(
        "--opt-in",
        action="store_true",
        help="only contacts who subscribed to the topic receive it (newsletters)",
    )
    add.set_defaults(handler=topics_add)
    topics.add_parser("list").set_defaults(handler=topics_list)

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
