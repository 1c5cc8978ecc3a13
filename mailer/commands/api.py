"""`mailer api serve`, `mailer api-keys create|list|revoke|expire`."""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime
from typing import Any

from rich.table import Table

from mailer.api import key_admin
from mailer.api.keys import ApiKeyError
from mailer.api.store import ApiStore
from mailer.commands.console import console, err, open_pool, stop_on_signals
from mailer.commands.oplog import cli_actor
from mailer.core.settings import Settings


async def keys_create(args: argparse.Namespace, settings: Settings) -> int:
    async with open_pool(settings) as pool:
        try:
            key, scopes, text = await key_admin.create_key(
                pool, cli_actor(), args.name, args.scopes, args.expires, actor_kind="cli"
            )
        except ApiKeyError as exc:
            err.print(f"[red]error:[/] {exc}", highlight=False)
            return 2
    # The only time the key is shown: only its hash is kept.
    console.print(f"key {key.prefix} ({args.name}), scopes {', '.join(scopes)}", highlight=False)
    console.print(text, highlight=False, soft_wrap=True)
    err.print("Store it now: it cannot be shown again (only its hash is kept).")
    return 0


async def keys_list(args: argparse.Namespace, settings: Settings) -> int:
    async with open_pool(settings) as pool:
        keys = await ApiStore(pool).key_list()
    now = datetime.now(UTC)
    table = Table("prefix", "name", "scopes", "state", "created", "expires", "last used")
    for k in keys:
        table.add_row(
            k.prefix,
            k.name,
            ",".join(k.scopes),
            k.state(now),
            k.created_at.isoformat(timespec="seconds"),
            k.expires_at.isoformat(timespec="seconds") if k.expires_at else "-",
            k.last_used_at.isoformat(timespec="seconds") if k.last_used_at else "-",
        )
    console.print(table)
    return 0


async def keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    return await _change(args, settings, "revoke")


async def keys_expire(args: argparse.Namespace, settings: Settings) -> int:
    return await _change(args, settings, "expire")


async def _change(args: argparse.Namespace, settings: Settings, action: str) -> int:
    try:
        at = key_admin.when(args.at, "--at") if getattr(args, "at", None) else datetime.now(UTC)
    except ApiKeyError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False)
        return 2
    async with open_pool(settings) as pool:
        changed = await key_admin.change_key(
            pool, cli_actor(), args.key, action, at, {"via": "cli"}, actor_kind="cli"
        )
    if not changed:
        err.print(f"[red]error:[/] no active key named or prefixed {args.key!r}", highlight=False)
        return 2
    verb = "revoked" if action == "revoke" else f"expires {at.isoformat(timespec='seconds')}"
    console.print(f"key {', '.join(changed)} {verb}", highlight=False)
    return 0


async def api_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT, or until the webhook dispatcher dies (then exit 1)."""
    from aiohttp import web

    from mailer.api.app import create_app  # aiohttp's app only for the server
    from mailer.api.context import BACKGROUND

    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, port = args.host or settings.api.host, args.port or settings.api.port
    stop = asyncio.Event()
    try:
        await web.TCPSite(runner, host, port).start()
        console.print(f"api serving on http://{host}:{port}/api/v1/openapi.json")
        with stop_on_signals(stop, err):
            stopping = asyncio.ensure_future(stop.wait())
            tasks = app[BACKGROUND]
            await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
        for task in tasks:
            if task.done() and not stop.is_set():
                why = "cancelled" if task.cancelled() else repr(task.exception())
                err.print(f"[red]error:[/] background task {task.get_name()} stopped ({why})")
                return 1
        return 0
    finally:
        await runner.cleanup()


def register(sub: Any) -> None:
    keys = sub.add_parser("api-keys", help="keys of the operator HTTP API").add_subparsers(
        dest="api_keys", required=True
    )
    create = keys.add_parser("create", help="make a key and print it once")
    create.add_argument("name", help="who uses it: 'dms', 'website'…")
    create.add_argument("--scopes", required=True, help="comma-separated: contacts:write,…")
    create.add_argument("--expires", help="ISO 8601 time or a number of days (90d)")
    create.set_defaults(handler=keys_create)
    keys.add_parser("list", help="every key: prefix, scopes, state").set_defaults(handler=keys_list)
    revoke = keys.add_parser("revoke", help="refuse a key from now on")
    revoke.add_argument("key", help="the key's prefix or name")
    revoke.set_defaults(handler=keys_revoke)
    expire = keys.add_parser("expire", help="make a key expire (now, or --at)")
    expire.add_argument("key", help="the key's prefix or name")
    expire.add_argument("--at", help="ISO 8601 time or a number of days (7d)")
    expire.set_defaults(handler=keys_expire)

    api = sub.add_parser("api", help="the operator HTTP API").add_subparsers(
        dest="api", required=True
    )
    serve = api.add_parser("serve", help="serve /api/v1 (and the webhook dispatcher)")
    serve.add_argument("--host", help="address to bind (default api.host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default api.port)")
    serve.set_defaults(handler=api_serve)
