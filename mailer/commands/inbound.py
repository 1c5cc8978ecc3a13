"""`mailer inbound …`: the return path's SMTP server, ingesting bounces from files, and the
messages that matched nothing."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rich.table import Table

from mailer.commands.console import console, err, open_pool, stop_on_signals
from mailer.core.settings import Settings
from mailer.inbound.ingest import IngestError, read
from mailer.inbound.metrics import InboundMetrics
from mailer.inbound.service import InboundService, classifier_for, processor_for, run_until
from mailer.inbound.store import InboundStore


async def serve(args: argparse.Namespace, settings: Settings) -> int:
    """Receive bounces, complaints and mailto unsubscribes until SIGTERM."""
    settings.require_token_keys()
    async with open_pool(settings) as pool:
        service = InboundService(settings, pool)
        i = settings.inbound

        async def started() -> None:
            console.print(
                f"inbound SMTP on {i.host}:{service.port} as {settings.inbound_hostname()}"
                + (f", SES webhook on {i.webhook_host}:{i.webhook_port}" if i.webhook_port else "")
                + (f", metrics on 127.0.0.1:{i.metrics_port}/metrics" if i.metrics_port else ""),
                highlight=False,
            )

        with stop_on_signals(service.stop_event, console):
            await run_until(service, started)
        console.print("inbound stopped")
        return 0


async def ingest(args: argparse.Namespace, settings: Settings) -> int:
    """Store every message of FILE|DIR|- and process it, as `serve` would."""
    settings.require_token_keys()
    async with open_pool(settings) as pool:
        store = InboundStore(pool)
        metrics = InboundMetrics()
        stored = duplicates = 0
        try:
            for found in read(
                args.path, sys.stdin.buffer, sender=args.sender, recipients=args.recipient or ()
            ):
                _, fresh = await store.store(
                    found.raw,
                    source=found.source,
                    peer=found.origin,
                    mail_from=found.mail_from,
                    rcpt_to=found.rcpt_to,
                )
                stored += fresh
                duplicates += not fresh
        except IngestError as exc:
            err.print(f"[red]error:[/] {exc}", highlight=False)
            return 2
        processor = processor_for(settings, store, metrics, classifier_for(settings))
        processed = await processor.drain()
        kinds = {kind: n for kind, n in sorted(processor.counts.items()) if n}
        console.print(
            f"{stored} stored, {duplicates} already stored; {processed} processed: "
            + (", ".join(f"{k} {v}" for k, v in kinds.items()) or "nothing new"),
            highlight=False,
        )
        return 0


async def unmatched(args: argparse.Namespace, settings: Settings) -> int:
    """The messages that matched nothing, newest first; --dismiss IDs once looked at."""
    async with open_pool(settings) as pool:
        store = InboundStore(pool)
        if args.dismiss:
            count = await store.dismiss(args.dismiss)
            console.print(f"{count} dismissed")
            return 0
        rows = await store.unmatched(args.limit)
        table = Table("id", "received", "source", "from", "to", "why", title="unmatched")
        for r in rows:
            why = str(r.detail.get("reason") or "")
            if r.detail.get("classified_as"):
                why = f"{r.detail['classified_as']}: {why}"
            subject = r.detail.get("subject")
            table.add_row(
                str(r.id),
                f"{r.received_at:%Y-%m-%d %H:%M}",
                r.source,
                r.mail_from or "",
                ", ".join(r.rcpt_to),
                why + (f" — {subject}" if subject else ""),
            )
        console.print(table)
        console.print(f"{await store.unmatched_backlog()} unmatched, not dismissed")
        return 0


async def status(args: argparse.Namespace, settings: Settings) -> int:
    """Stored messages by kind, and those still waiting."""
    async with open_pool(settings) as pool:
        counts = await InboundStore(pool).kind_counts()
    table = Table("kind", "messages", title="inbound")
    for kind, count in counts.items():
        table.add_row(kind, f"{count:,}")
    console.print(table)
    return 0


def register(sub: Any) -> None:
    group = sub.add_parser("inbound", help="bounces, complaints and mailto unsubscribes")
    inbound = group.add_subparsers(dest="inb", required=True)
    inbound.add_parser(
        "serve", help="the return path's SMTP server (and ESP webhook) until SIGTERM"
    ).set_defaults(handler=serve)
    ing = inbound.add_parser("ingest", help="store and process a .eml, an mbox, a Maildir or -")
    ing.add_argument("path", help="FILE, DIR (Maildir or .eml files) or - for standard input")
    ing.add_argument("--sender", help="envelope sender (a pipe transport's ${sender})")
    ing.add_argument(
        "--recipient", action="append", help="envelope recipient (${recipient}); repeatable"
    )
    ing.set_defaults(handler=ingest)
    unm = inbound.add_parser("unmatched", help="messages that matched nothing")
    unm.add_argument("--limit", type=int, default=50)
    unm.add_argument("--dismiss", type=int, nargs="+", metavar="ID", help="mark as looked at")
    unm.set_defaults(handler=unmatched)
    inbound.add_parser("status", help="stored messages by kind").set_defaults(handler=status)
