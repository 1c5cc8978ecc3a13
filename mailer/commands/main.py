"""The `mailer` command: one sub-command per operator task.

argparse (stdlib) is enough for a tree of sub-commands with typed options;
output goes through rich for tables. Expected bad input (a bad file, a bad
setting) prints one clear error and exits 2; bugs keep their traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from rich.markup import escape

from mailer.campaigns.definition import CampaignFileError
from mailer.campaigns.lifecycle import CampaignError
from mailer.campaigns.template_set import TemplateFileError
from mailer.commands import (
    api,
    campaign,
    compliance,
    contacts,
    db,
    forms,
    inbound,
    operators,
    optouts,
    topics,
    transactional,
    webhooks,
)
from mailer.commands.console import Handler, UsageError, console, err, open_pool
from mailer.contacts.csvfile import FileError
from mailer.core.settings import ConfigError, Settings, load
from mailer.db import DatabaseUnreachable
from mailer.db.migrations import MigrationError, pending, schema_error


async def demo(args: argparse.Namespace, settings: Settings) -> int:
    from mailer.demo import run as demo_flow  # the demo's imports only for the demo

    return await demo_flow.run(settings, Path(args.folder), console)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailer", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="TOML settings file (or MAILER_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)
    db.register(sub)
    topics.register(sub)
    contacts_group = contacts.register(sub)
    compliance.register(sub, contacts_group)
    optouts.register(contacts_group)
    campaign.register(sub)
    inbound.register(sub)
    api.register(sub)
    webhooks.register(sub)
    operators.register(sub)
    transactional.register(sub)
    forms.register(sub)
    trk = sub.add_parser("tracker", help="the tracking server").add_subparsers(
        dest="trk", required=True
    )
    trk.add_parser("serve", help="serve /o /c /u /p /s /confirm /healthz /metrics until SIGTERM")

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
        # The tracker never signs: it does not read the DKIM keys.
        settings = load(args.config, dkim_keys=args.command != "tracker")
        if args.command == "tracker":
            settings.require_token_keys()
    except ConfigError as exc:
        err.print(f"[red]configuration error:[/] {exc}", highlight=False)
        return 2
    if args.command == "tracker":
        from tracker import app as tracker_app

        tracker_app.serve(settings)  # its own event loop (uvloop when installed)
        return 0
    if args.command == "console":
        from mailer.console import app as console_app

        try:
            return console_app.serve(settings)  # its own loop; SIGTERM/SIGINT stop it
        except DatabaseUnreachable as exc:
            err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
            return 2
    handler: Handler = args.handler
    try:
        return _run(handler(args, settings))
    except (
        FileError,
        MigrationError,
        ConfigError,
        CampaignError,
        CampaignFileError,
        TemplateFileError,
        DatabaseUnreachable,
        UsageError,
    ) as exc:
        # Escaped: a refused file's message quotes its line, and "[/x]" there is not markup.
        err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
        return 2
    except OSError as exc:
        if "Connect call failed" in str(exc) or isinstance(exc, ConnectionRefusedError):
            err.print(f"[red]error:[/] cannot reach Postgres at database.url: {exc}")
            return 2
        raise
    except Exception as exc:
        if schema_error(exc) and args.command != "db" and _run(_behind(settings)):
            # A new database, or code upgraded without `db migrate` (README, "Upgrading").
            err.print(
                f"[red]error:[/] the database at database.url is not migrated ({escape(str(exc))}):"
                " run `mailer db migrate` (`mailer db status` lists what is pending)",
                highlight=False,
            )
            return 2
        raise


async def _behind(settings: Settings) -> int:
    """How many shipped migrations the database lacks."""
    async with open_pool(settings) as pool:
        return len(await pending(pool))


if __name__ == "__main__":
    sys.exit(main())
