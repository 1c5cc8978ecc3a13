"""`mailer db migrate|status`: the schema."""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table

from mailer.commands.console import console, open_pool
from mailer.core.settings import Settings
from mailer.db.migrations import migrate, migration_status


async def db_migrate(args: argparse.Namespace, settings: Settings) -> int:
    async with open_pool(settings) as pool:
        applied = await migrate(pool)
    if applied:
        for m in applied:
            console.print(f"applied {m.version:04d}_{m.name}")
    else:
        console.print("database is up to date")
    return 0


async def db_status(args: argparse.Namespace, settings: Settings) -> int:
    async with open_pool(settings) as pool:
        states = await migration_status(pool)
    table = Table("version", "name", "applied at")
    for s in states:
        table.add_row(f"{s.version:04d}", s.name, str(s.applied_at) if s.applied_at else "pending")
    console.print(table)
    return 0 if all(s.applied_at for s in states) else 1


def register(sub: Any) -> None:
    db = sub.add_parser("db", help="schema migrations").add_subparsers(dest="db", required=True)
    db.add_parser("migrate", help="apply pending migrations").set_defaults(handler=db_migrate)
    db.add_parser("status", help="list migrations and when they were applied").set_defaults(
        handler=db_status
    )
