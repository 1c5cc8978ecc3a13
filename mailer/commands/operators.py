"""`mailer operators add|list` (the console's accounts) and `mailer console serve`."""

from __future__ import annotations

import argparse
import getpass
from typing import Any

from rich.table import Table

from mailer.commands.console import console, err, open_pool
from mailer.commands.oplog import cli_actor
from mailer.console.accounts import Role
from mailer.console.enrolment import EnrolmentError, add_operator
from mailer.console.store import ConsoleStore
from mailer.core.settings import Settings


async def operators_add(args: argparse.Namespace, settings: Settings) -> int:
    """Add an operator; by default print a one-time link where they choose their password."""
    try:
        role = Role.parse(args.role)
    except ValueError as exc:
        err.print(f"[red]error:[/] --role: {exc}")
        return 2
    password = None
    if args.prompt:
        # Typed at a prompt, never on the command line (where ps and shell history see it).
        password = getpass.getpass(f"password for {args.email}: ")
        if getpass.getpass("again: ") != password:
            err.print("[red]error:[/] the two passwords differ")
            return 2
    async with open_pool(settings) as pool:
        try:
            enrolled = await add_operator(
                ConsoleStore(pool),
                settings,
                args.email,
                role,
                locale=args.locale,
                password=password,
                actor=cli_actor(),
                actor_kind="cli",
            )
        except EnrolmentError as exc:
            err.print(f"[red]error:[/] {exc}")
            return 2
    console.print(f"operator {args.email.strip().lower()} added as {role.label}")
    if enrolled.setup_link:
        console.print(
            f"one-time link to set the password (valid {settings.console.setup_link_hours} h):"
        )
        console.out(enrolled.setup_link, highlight=False)
    return 0


async def operators_list(args: argparse.Namespace, settings: Settings) -> int:
    async with open_pool(settings) as pool:
        rows = await ConsoleStore(pool).operators_list()
    table = Table("operator", "role", "password", "language", "last seen")
    for r in rows:
        table.add_row(
            r.email,
            r.role.label,
            "set" if r.has_password else "link pending",
            r.locale,
            "-" if r.last_seen_at is None else f"{r.last_seen_at:%Y-%m-%d %H:%M}",
        )
    console.print(table)
    return 0


def register(sub: Any) -> None:
    ops = sub.add_parser("operators", help="accounts of the browser console").add_subparsers(
        dest="ops", required=True
    )
    add = ops.add_parser("add", help="add an operator (one-time link, or --prompt)")
    add.add_argument("email")
    add.add_argument("--role", required=True, help="viewer, sender or admin")
    add.add_argument("--locale", default="en", choices=("en", "fr"), help="console language")
    add.add_argument("--prompt", action="store_true", help="type the password now instead")
    add.set_defaults(handler=operators_add)
    ops.add_parser("list", help="every operator").set_defaults(handler=operators_list)
    con = sub.add_parser("console", help="the operators' browser console").add_subparsers(
        dest="con", required=True
    )
    con.add_parser("serve", help="serve the console on console.host:console.port until SIGTERM")
