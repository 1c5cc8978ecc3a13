"""`mailer contacts opt-out EMAIL`: an opt-out told by phone, letter or another system.

The same operation as POST /api/v1/contacts/{email}/opt-out (mailer.optouts.by_address),
logged in the operator log in the same transaction."""

from __future__ import annotations

import argparse
from typing import Any

from rich.markup import escape

from mailer.commands.console import console, err, open_pool
from mailer.commands.oplog import cli_actor, logged_write
from mailer.core.settings import Settings
from mailer.optouts.by_address import OptOutRefused, opt_out_address


def _list(text: str | None) -> list[str]:
    return [p.strip() for p in (text or "").split(",") if p.strip()]


async def contacts_opt_out(args: argparse.Namespace, settings: Settings) -> int:
    evidence: dict[str, Any] = {"operator": cli_actor()}
    if args.note:
        evidence["note"] = args.note
    try:
        async with (
            open_pool(settings) as pool,
            logged_write(pool, "contacts.opt_out", "contact") as w,
        ):
            done = await opt_out_address(
                w.conn,
                args.email,
                channels=_list(args.channels) if args.channels else None,
                topics=_list(args.topics),
                source=args.source,
                evidence=evidence,
            )
            w.object_id = str(done.contact_id)
            w.detail.update(channels=done.channels, topics=done.topics)
    except OptOutRefused as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
        return 2
    what = ", ".join(done.channels + [f"topic {t}" for t in done.topics])
    state = "opted out of" if done.changed else "was already opted out of"
    console.print(f"{done.email} {state} {what}", highlight=False)
    return 0


def register(contacts_group: Any) -> None:
    opt = contacts_group.add_parser("opt-out", help="withdraw consent told by other means")
    opt.add_argument("email")
    opt.add_argument("--channels", help="comma-separated (default: every digital channel)")
    opt.add_argument("--topics", help="comma-separated topic slugs")
    opt.add_argument("--source", required=True, help="how it came: 'phone call', 'letter'…")
    opt.add_argument("--note", help="evidence kept with the ledger row")
    opt.set_defaults(handler=contacts_opt_out)
