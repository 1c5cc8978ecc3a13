"""`mailer contacts show|explain`: a contact's consent story, and whether a campaign (or a
transactional template) may reach them and why."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import UTC, datetime, tzinfo

from rich.markup import escape
from rich.table import Table

from mailer.campaigns import audience
from mailer.campaigns.store import CampaignStore
from mailer.commands import transactional
from mailer.commands.console import at_of, console, day, err, open_pool
from mailer.contacts.store import ContactStore
from mailer.core import consent_dates
from mailer.core.addresses import InvalidAddress, address_hash, normalise
from mailer.core.evidence import InboundEvidence
from mailer.core.settings import Settings
from mailer.forms.wording import form_history_line


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


def when(value: datetime | None, zone: tzinfo = UTC, *, date_only: bool = False) -> str:
    """A day as YYYY-MM-DD, by the rule the footer and the preference centre print it with."""
    if value is None:
        return "-"
    return consent_dates.consent_day(value, zone, date_only=date_only).isoformat()
