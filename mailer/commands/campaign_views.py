"""The campaign commands that only read: list, status, audience and report (what a campaign
is, who it reaches and how it went); the commands that change one are in campaign.py."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from mailer.campaigns.store import CampaignStore
from mailer.commands.console import at_of, console, day, err, open_pool
from mailer.core import consent
from mailer.core.reputation import describe
from mailer.core.settings import Settings
from mailer.db import Pool
from mailer.report.document import render_json
from mailer.report.figures import OUTCOMES, figures
from mailer.report.html import render_html
from mailer.report.store import ReportStore
from mailer.report.terminal import render_rich


async def status(args: argparse.Namespace, settings: Settings) -> int:
    """Deliveries by state, from the ledger; uncertain ones explained."""
    async with open_pool(settings) as pool:
        return await print_status(pool, args.campaign)


async def print_status(pool: Pool, slug: str) -> int:
    """The status table of `slug` (after `campaign send` too); 2 when there is none."""
    store = CampaignStore(pool)
    row = await store.campaign_by_slug(slug)
    if row is None:
        console.print(f"[red]error:[/] no campaign {slug!r}")
        return 2
    counts = await store.campaign_status_counts(row.id)
    frozen = sum(counts.values())
    table = Table("state", "deliveries", title=f"{slug}: {row.status}")
    for state in OUTCOMES:  # the ledger's order, as the report's
        if counts.get(state):
            table.add_row(state, f"{counts[state]:,}")
    table.add_row("[bold]frozen audience[/]", f"{frozen:,}")
    console.print(table)
    if row.pause_reason:
        console.print(f"[red]{describe(row.pause_reason)}[/]", highlight=False)
    if counts.get("uncertain"):
        console.print(f"[yellow]{uncertain_explained(counts['uncertain'], slug)}[/]")
    if counts.get("skipped") and (unbuilt := await store.campaign_unbuilt(row.id)):
        # Which contacts and what went wrong: the template line is in the error's text.
        errors = Table("contact", "reason", "error", title="messages that could not be built")
        for u in unbuilt:
            errors.add_row(escape(u.email or "(erased)"), u.reason, escape(u.error))
        console.print(errors)
    return 0


def uncertain_explained(count: int, slug: str) -> str:
    """What `uncertain` means, and what resending them risks (status, resend-uncertain)."""
    return (
        f"{count:,} uncertain: a worker died after handing these messages to the SMTP relay "
        "and before their outcome was recorded, so each may or may not have been delivered. "
        f"They are not resent unless you run `mailer campaign resend-uncertain {slug}` "
        "(it says how many it would resend, and resends only with --yes): those already "
        "delivered would arrive twice."
    )


async def campaign_audience(args: argparse.Namespace, settings: Settings) -> int:
    at = at_of(args)
    async with open_pool(settings) as pool:
        store = CampaignStore(pool, audience_parts=settings.database.audience_parts)
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


async def campaign_report(args: argparse.Namespace, settings: Settings) -> int:
    """`mailer campaign report C [--html FILE] [--json]`: print the report, write the page."""
    if args.html and not Path(args.html).parent.is_dir():
        # Checked first: a whole report printed, then a traceback, helps no one.
        err.print(f"[red]error:[/] --html {escape(args.html)}: no such folder", highlight=False)
        return 2
    async with open_pool(settings) as pool:
        spec = await CampaignStore(pool).campaign_spec(args.campaign)
        if spec is None:
            console.print(f"[red]error:[/] no campaign {args.campaign!r}")
            return 2
        found = await figures(ReportStore(pool), spec.id)
    if args.json:
        # Raw text: no wrapping, markup or highlighting, so the output parses.
        console.out(render_json(found), highlight=False)
    else:
        console.print(render_rich(found))
    if args.html:
        out = Path(args.html)
        try:
            await asyncio.to_thread(out.write_text, render_html(found), encoding="utf-8")
        except OSError as exc:  # a directory, no permission, a full disk
            err.print(f"[red]error:[/] --html {escape(args.html)}: {exc.strerror}", highlight=False)
            return 2
        if not args.json:
            console.print(f"wrote {out}")
    return 0


async def campaign_list(args: argparse.Namespace, settings: Settings) -> int:
    async with open_pool(settings) as pool:
        rows = await CampaignStore(pool).campaigns_list()
    table = Table("campaign", "status", "topic", "deliveries", "created", "finished")
    for r in rows:
        table.add_row(
            r.slug,
            r.status,
            r.topic,
            f"{r.deliveries:,}",
            day(r.created_at),
            day(r.finished_at),
        )
    console.print(table)
    return 0
