"""The `mailer` command: one sub-command per operator task.

argparse (stdlib) is enough for a tree of sub-commands with typed options;
output goes through rich for tables. Expected bad input (a bad file, a bad
setting) prints one clear error and exits 2; bugs keep their traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from mailer import audience, config, consent, imports
from mailer.addresses import InvalidAddress, address_hash, normalise
from mailer.campaign_file import CampaignFileError
from mailer.contacts_file import Defaults, FileError
from mailer.lifecycle import CampaignError
from mailer.render import TemplateFileError
from mailer.store import ImportRefused, MigrationError, Store

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

console = Console()
err = Console(stderr=True)

Handler = Callable[[argparse.Namespace, config.Settings], Coroutine[Any, Any, int]]


def _store(settings: config.Settings) -> Any:
    db = settings.database
    return Store.open(
        db.url, min_size=db.pool_min, max_size=db.pool_max, audience_parts=db.audience_parts
    )


# ---------------------------------------------------------------- db


async def db_migrate(args: argparse.Namespace, settings: config.Settings) -> int:
    async with _store(settings) as store:
        applied = await store.migrate()
    if applied:
        for m in applied:
            console.print(f"applied {m.version:04d}_{m.name}")
    else:
        console.print("database is up to date")
    return 0


async def db_status(args: argparse.Namespace, settings: config.Settings) -> int:
    async with _store(settings) as store:
        states = await store.migration_status()
    table = Table("version", "name", "applied at")
    for s in states:
        table.add_row(f"{s.version:04d}", s.name, str(s.applied_at) if s.applied_at else "pending")
    console.print(table)
    return 0 if all(s.applied_at for s in states) else 1


# ---------------------------------------------------------------- topics


async def topics_add(args: argparse.Namespace, settings: config.Settings) -> int:
    async with _store(settings) as store:
        topic_id = await store.topic_upsert(
            args.slug, args.name or args.slug, args.description, not args.opt_in
        )
    console.print(f"topic {args.slug} (id {topic_id})")
    return 0


async def topics_list(args: argparse.Namespace, settings: config.Settings) -> int:
    async with _store(settings) as store:
        topics = await store.topics_list()
    table = Table("slug", "name", "subscription")
    for t in topics:
        table.add_row(t["slug"], t["name"], "opt-out" if t["default_subscribed"] else "opt-in")
    console.print(table)
    return 0


# ---------------------------------------------------------------- contacts


async def contacts_import(args: argparse.Namespace, settings: config.Settings) -> int:
    defaults = Defaults(
        consent=args.consent,
        source=args.source,
        consent_date=args.consent_date,
        channel=args.channel,
        locale=args.locale,
        topics=args.topics,
    )
    async with _store(settings) as store:
        try:
            outcome = await imports.import_contacts(
                store,
                Path(args.file),
                defaults,
                default_locale=settings.imports.default_locale,
                skip_invalid=args.skip_invalid,
                rejects_path=Path(args.rejects) if args.rejects else None,
            )
        except ImportRefused as exc:
            _print_rejects(exc.examples, exc.rejected, exc.rejects_file)
            err.print(f"[red]error:[/] {exc}")
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
    return 0


def _print_rejects(examples: Sequence[Any], total: int, where: Path | None) -> None:
    for row in examples:
        err.print(f"line {row.line}: {row.reason}", markup=False, highlight=False)
    if total > len(examples):
        err.print(f"… and {total - len(examples)} more")
    if where is not None and total:
        err.print(f"all rejected rows: {where}")


async def contacts_show(args: argparse.Namespace, settings: config.Settings) -> int:
    try:
        email = normalise(args.email)
    except InvalidAddress as exc:
        err.print(f"[red]error:[/] {args.email!r} is not a valid address: {exc}")
        return 2
    async with _store(settings) as store:
        story = await store.contact_story(email, address_hash(email))
    if story is None:
        err.print(f"no contact and no suppression for {email}")
        return 1
    contact = story["contact"]
    if contact is None:
        console.print(f"{email}: not a contact")
    else:
        console.print(
            f"[bold]{contact['email']}[/]  {contact['name'] or ''}  locale={contact['locale']}  "
            f"tracking={'on' if contact['tracking'] else 'off'}  "
            f"last activity={_day(contact['last_activity_at'])}  "
            f"attributes={contact['attributes']}"
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
        )
        for row in story["ledger"]:
            ledger.add_row(
                _day(row["obtained_at"]),
                row["channel"],
                row["action"],
                row["kind"] or (f"topic {row['topic']}" if row["topic"] else "-"),
                row["source"],
                _day(row["ends_at"]),
                str(row["evidence"]),
            )
        console.print(ledger)
        prefs = Table("preference", "state", "since", title="preferences")
        for row in story["topics"]:
            prefs.add_row(
                f"topic {row['slug']}",
                "subscribed" if row["subscribed"] else "opted out",
                _day(row["updated_at"]),
            )
        for row in story["channels"]:
            prefs.add_row(
                f"channel {row['channel']}",
                "on" if row["enabled"] else "off",
                _day(row["updated_at"]),
            )
        console.print(prefs)
    sup = Table("scope", "reason", "source", "since", title="suppressions")
    for row in story["suppressions"]:
        target = row["channel"] or row["topic"] or ""
        sup.add_row(
            f"{row['scope']} {target}".strip(),
            row["reason"],
            row["source"],
            _day(row["created_at"]),
        )
    console.print(sup)
    return 0


def _day(value: Any) -> str:
    return value.date().isoformat() if value is not None else "-"


# ---------------------------------------------------------------- audience


async def campaign_audience(args: argparse.Namespace, settings: config.Settings) -> int:
    at = _at(args)
    async with _store(settings) as store:
        spec = await store.campaign_spec(args.campaign)
        if spec is None:
            err.print(f"[red]error:[/] no campaign {args.campaign!r}")
            return 2
        counts = await store.audience_counts(spec, at)
    total = sum(counts.values())
    table = Table(
        "", "contacts", "why", title=f"audience of {args.campaign} at {at:%Y-%m-%d %H:%M} UTC"
    )
    table.add_row("[bold]eligible[/]", f"{counts.pop('eligible', 0):,}", "")
    for reason in consent.Reason:
        if reason.value in counts:
            table.add_row(reason.value, f"{counts[reason.value]:,}", consent.REASON_TEXT[reason])
    table.add_row("total", f"{total:,}", "")
    console.print(table)
    return 0


async def contacts_explain(args: argparse.Namespace, settings: config.Settings) -> int:
    at = _at(args)
    try:
        email = normalise(args.email)
    except InvalidAddress as exc:
        err.print(f"[red]error:[/] {args.email!r} is not a valid address: {exc}")
        return 2
    async with _store(settings) as store:
        spec = await store.campaign_spec(args.campaign)
        inputs = await store.contact_rule_inputs(email)
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
    return 0


async def consents_expiring(args: argparse.Namespace, settings: config.Settings) -> int:
    at = _at(args)
    try:
        window = audience.parse_duration(args.within, now=at)
    except ValueError as exc:
        err.print(f"[red]error:[/] --within: {exc}")
        return 2
    async with _store(settings) as store:
        rows = await store.consents_expiring(args.channel, at, at + window)
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
        table.add_row(
            r["email"],
            r["name"] or "",
            r["locale"],
            r["kind"],
            r["source"],
            _day(r["obtained_at"]),
            _day(r["valid_until"]),
        )
    console.print(table)
    console.print(f"{len(rows):,} contact(s) to ask for express consent")
    return 0


def _at(args: argparse.Namespace) -> datetime:
    if getattr(args, "at", None):
        parsed = datetime.fromisoformat(args.at)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return datetime.now(UTC)


# ---------------------------------------------------------------- suppressions


async def suppress_import(args: argparse.Namespace, settings: config.Settings) -> int:
    if (args.scope == "channel") != (args.channel is not None):
        err.print("[red]error:[/] --channel is required with --scope channel, and only then")
        return 2
    if (args.scope == "topic") != (args.topic is not None):
        err.print("[red]error:[/] --topic is required with --scope topic, and only then")
        return 2
    async with _store(settings) as store:
        topic_id = None
        if args.topic is not None:
            ids = {t["slug"]: t["id"] for t in await store.topics_list()}
            if args.topic not in ids:
                err.print(f"[red]error:[/] --topic: unknown topic {args.topic!r}")
                return 2
            topic_id = ids[args.topic]
        result, rejected = await imports.import_suppressions(
            store,
            Path(args.file),
            reason=args.reason,
            scope=args.scope,
            channel=args.channel,
            topic_id=topic_id,
            source=args.source or Path(args.file).name,
        )
    _print_rejects(rejected[:20], len(rejected), None)
    console.print(
        f"{result.rows_valid} address(es) read, {result.added} new suppression(s), "
        f"{result.rows_rejected} rejected"
    )
    return 0


# ---------------------------------------------------------------- campaigns and sending


def _campaign_handler(name: str, **extra: Any) -> Handler:
    """Adapts a mailer.sending command to a CLI handler with a store."""

    async def handler(args: argparse.Namespace, settings: config.Settings) -> int:
        from mailer import sending

        func = getattr(sending, name)
        async with _store(settings) as store:
            if name in ("check", "preview", "send", "worker"):
                return int(await func(args, store, settings, console, **extra))
            return int(await func(args, store, console, **extra))

    return handler


def _privacy_handler(func: Callable[..., Coroutine[Any, Any, int]]) -> Handler:
    """Adapts a mailer.privacy / mailer.audit (args, store, console) handler."""

    async def handler(args: argparse.Namespace, settings: config.Settings) -> int:
        async with _store(settings) as store:
            return int(await func(args, store, console))

    return handler


async def campaign_report(args: argparse.Namespace, settings: config.Settings) -> int:
    from mailer import report

    async with _store(settings) as store:
        return await report.report(args, store, console)


async def campaign_list(args: argparse.Namespace, settings: config.Settings) -> int:
    async with _store(settings) as store:
        rows = await store.campaigns_list()
    table = Table("campaign", "status", "topic", "deliveries", "created", "finished")
    for r in rows:
        table.add_row(
            r["slug"],
            r["status"],
            r["topic"],
            f"{r['deliveries']:,}",
            _day(r["created_at"]),
            _day(r["finished_at"]),
        )
    console.print(table)
    return 0


# ---------------------------------------------------------------- archive


async def archive_show(args: argparse.Namespace, settings: config.Settings) -> int:
    from mailer import archive

    async with _store(settings) as store:
        row = await store.archive_by_delivery(args.delivery)
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


async def archive_export(args: argparse.Namespace, settings: config.Settings) -> int:
    from mailer import archive

    async with _store(settings) as store:
        spec = await store.campaign_spec(args.campaign)
        if spec is None:
            err.print(f"[red]error:[/] no campaign {args.campaign!r}")
            return 2
        out = Path(args.out or f"{args.campaign}-archive.zip")
        counts = await archive.export_campaign(store, spec.id, args.campaign, out)
    console.print(
        f"wrote {out}: {counts.messages:,} messages, {counts.verified:,} verified by hash, "
        f"{counts.erased:,} of erased recipients (hash and consent only), with consents"
    )
    return 0 if counts.complete else 1


# ---------------------------------------------------------------- demo


async def demo(args: argparse.Namespace, settings: config.Settings) -> int:
    from mailer import demo as demo_flow

    return await demo_flow.run(settings, Path(args.folder), console)


# ---------------------------------------------------------------- wiring


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailer", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="TOML settings file (or MAILER_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="schema migrations").add_subparsers(dest="db", required=True)
    db.add_parser("migrate", help="apply pending migrations").set_defaults(handler=db_migrate)
    db.add_parser("status", help="list migrations and when they were applied").set_defaults(
        handler=db_status
    )

    topics = sub.add_parser("topics", help="message topics").add_subparsers(dest="t", required=True)
    add = topics.add_parser("add", help="create or update a topic")
    add.add_argument("slug")
    add.add_argument("--name")
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
    imp.set_defaults(handler=contacts_import)
    show = contacts.add_parser("show", help="a contact's consent story")
    show.add_argument("email")
    show.set_defaults(handler=contacts_show)
    explain = contacts.add_parser("explain", help="may this contact receive a campaign, and why")
    explain.add_argument("email")
    explain.add_argument("--campaign", required=True)
    explain.add_argument("--at", help="send time (ISO 8601, default now)")
    explain.set_defaults(handler=contacts_explain)
    from mailer import privacy

    # hygiene report|purge, contacts export|erase, audit export
    privacy.add_commands(sub, contacts, _privacy_handler)

    campaign = sub.add_parser("campaign", help="campaigns").add_subparsers(
        dest="cmp", required=True
    )
    create = campaign.add_parser("create", help="create a draft campaign from a campaign file")
    create.add_argument("file")
    create.add_argument("--templates", default=str(TEMPLATES), help="templates folder")
    create.set_defaults(handler=_campaign_handler("create"))
    campaign.add_parser("list", help="every campaign and its state").set_defaults(
        handler=campaign_list
    )
    for name, help_text in (
        ("check", "render for a sample of each consent kind and report missing elements"),
        ("status", "deliveries by state, from the ledger"),
        ("resend-uncertain", "queue again the deliveries left uncertain by a crash"),
    ):
        cmd = campaign.add_parser(name, help=help_text)
        cmd.add_argument("campaign")
        cmd.set_defaults(handler=_campaign_handler(name.replace("-", "_")))
    for name, target in (("pause", "paused"), ("resume", "running"), ("cancel", "cancelled")):
        cmd = campaign.add_parser(name, help=f"{name} a campaign (takes effect within one batch)")
        cmd.add_argument("campaign")
        cmd.set_defaults(handler=_campaign_handler("transition", target=target))
    prev = campaign.add_parser("preview", help="write the exact message a contact would get")
    prev.add_argument("campaign")
    prev.add_argument("--to", required=True, help="the contact's address")
    prev.add_argument("--out", help="where to write the .eml (default CAMPAIGN-EMAIL.eml)")
    prev.set_defaults(handler=_campaign_handler("preview"))
    snd = campaign.add_parser("send", help="lint, freeze the audience and send, with progress")
    snd.add_argument("campaign")
    snd.add_argument("--no-metrics", action="store_true", help="do not serve /metrics")
    snd.set_defaults(handler=_campaign_handler("send"))
    rep = campaign.add_parser("report", help="deliveries, opens, clicks, opt-outs")
    rep.add_argument("campaign")
    rep.add_argument("--html", metavar="FILE", help="also write a self-contained HTML page")
    rep.add_argument("--json", action="store_true", help="print JSON instead of tables")
    rep.set_defaults(handler=campaign_report)
    aud = campaign.add_parser("audience", help="eligible count and exclusions by reason")
    aud.add_argument("campaign")
    aud.add_argument("--at", help="send time (ISO 8601, default now)")
    aud.set_defaults(handler=campaign_audience)

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
    simp.set_defaults(handler=suppress_import)

    trk = sub.add_parser("tracker", help="the tracking server").add_subparsers(
        dest="trk", required=True
    )
    trk.add_parser("serve", help="serve /o /c /u /p /healthz /metrics until SIGTERM")

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

    wrk = sub.add_parser("worker", help="send running campaigns until SIGTERM")
    wrk.add_argument(
        "--until-idle", action="store_true", help="exit once nothing is due and nothing in flight"
    )
    wrk.set_defaults(handler=_campaign_handler("worker"))

    dem = sub.add_parser("demo", help="run the product end to end on embedded defaults")
    dem.add_argument("--folder", default=".demo", help="where the demo writes its files")
    dem.set_defaults(handler=demo)
    return parser


def _run(main: Coroutine[Any, Any, int]) -> int:
    """Run a command on uvloop when installed (the SMTP client runs ~1.5x faster on it)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is an optional speed-up
        return asyncio.run(main)
    return uvloop.run(main)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = config.load(args.config)
        if args.command == "tracker":
            settings.require_token_keys()
    except config.ConfigError as exc:
        err.print(f"[red]configuration error:[/] {exc}", highlight=False)
        return 2
    if args.command == "tracker":
        from tracker import app as tracker_app

        tracker_app.serve(settings)  # its own event loop (uvloop when installed)
        return 0
    handler: Handler = args.handler
    try:
        return _run(handler(args, settings))
    except (
        FileError,
        MigrationError,
        config.ConfigError,
        CampaignError,
        CampaignFileError,
        TemplateFileError,
    ) as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False)
        return 2
    except OSError as exc:
        if "Connect call failed" in str(exc) or isinstance(exc, ConnectionRefusedError):
            err.print(f"[red]error:[/] cannot reach Postgres at database.url: {exc}")
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
