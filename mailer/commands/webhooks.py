"""`mailer webhooks add|list|enable|replay|dispatch`: outgoing webhooks."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from prometheus_client import REGISTRY, start_http_server
from rich.table import Table

from mailer.commands.console import console, err, open_pool, stop_on_signals
from mailer.commands.oplog import cli_actor, logged_write
from mailer.core.settings import Settings
from mailer.webhooks.dispatcher import EVENT_TYPES, WebhookMetrics, dispatch
from mailer.webhooks.endpoints import WebhookInputError, add_endpoint, replay_window
from mailer.webhooks.store import WebhookStore


async def webhooks_add(args: argparse.Namespace, settings: Settings) -> int:
    async with open_pool(settings) as pool:
        try:
            async with logged_write(pool, "webhook.add", "webhook") as w:
                endpoint, secret = await add_endpoint(
                    WebhookStore(pool), args.url, args.events, w.conn
                )
                w.object_id = str(endpoint.id)
                w.detail.update(url=endpoint.url, events=endpoint.events)
        except WebhookInputError as exc:
            err.print(f"[red]error:[/] {exc}", highlight=False)
            return 2
    events = ", ".join(endpoint.events)
    console.print(f"endpoint {endpoint.id}: {endpoint.url} ({events})", highlight=False)
    # Shown once: the receiver verifies signatures with it.
    console.print(f"signing secret: {secret}", highlight=False, soft_wrap=True)
    return 0


async def webhooks_list(args: argparse.Namespace, settings: Settings) -> int:
    async with open_pool(settings) as pool:
        endpoints = await WebhookStore(pool).endpoint_list()
    table = Table("id", "url", "events", "state", "pending", "oldest pending", "failed", "sent")
    for e in endpoints:
        state = "enabled" if e.disabled_at is None else f"DISABLED: {e.disabled_why}"
        oldest = "-" if e.oldest_pending_s is None else f"{e.oldest_pending_s:.0f} s"
        table.add_row(
            str(e.id), e.url, ",".join(e.events), state, str(e.pending), oldest,
            str(e.failed), str(e.delivered),
        )  # fmt: skip
    console.print(table)
    return 0


async def webhooks_enable(args: argparse.Namespace, settings: Settings) -> int:
    async with open_pool(settings) as pool:
        store = WebhookStore(pool)
        if not await store.endpoint_exists(args.endpoint):
            err.print(f"[red]error:[/] no webhook endpoint {args.endpoint}")
            return 2
        async with logged_write(pool, "webhook.enable", "webhook", str(args.endpoint)) as w:
            due = await store.endpoint_enable(args.endpoint, w.conn)
            w.detail.update(due=due)
    console.print(f"endpoint {args.endpoint} enabled; {due} pending event(s) due now")
    return 0


async def webhooks_disable(args: argparse.Namespace, settings: Settings) -> int:
    async with open_pool(settings) as pool:
        store = WebhookStore(pool)
        if not await store.endpoint_exists(args.endpoint):
            err.print(f"[red]error:[/] no webhook endpoint {args.endpoint}")
            return 2
        async with logged_write(pool, "webhook.disable", "webhook", str(args.endpoint)) as w:
            done = await store.endpoint_disable(args.endpoint, f"disabled by {cli_actor()}", w.conn)
            w.unchanged = not done
    state = "disabled" if done else "was already disabled"
    console.print(f"endpoint {args.endpoint} {state}; its events wait until it is enabled")
    return 0


async def webhooks_replay(args: argparse.Namespace, settings: Settings) -> int:
    try:
        since, until = replay_window(args.since, args.until)
    except WebhookInputError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False)
        return 2
    async with open_pool(settings) as pool:
        store = WebhookStore(pool)
        if not await store.endpoint_exists(args.endpoint):
            err.print(f"[red]error:[/] no webhook endpoint {args.endpoint}")
            return 2
        window = {"since": since.isoformat(), "until": until.isoformat()}
        async with logged_write(pool, "webhook.replay", "webhook", str(args.endpoint), window) as w:
            queued = await store.replay(args.endpoint, since, until, w.conn)
            w.detail.update(queued=queued)
    console.print(f"{queued} event(s) queued again for endpoint {args.endpoint}")
    return 0


async def webhooks_dispatch(args: argparse.Namespace, settings: Settings) -> int:
    """Deliver the outbox until SIGTERM (the first finishes the batch in hand)."""
    stop = asyncio.Event()
    if args.metrics_port:
        start_http_server(args.metrics_port, addr="127.0.0.1")
    metrics = WebhookMetrics(REGISTRY)
    with stop_on_signals(stop, err):
        async with open_pool(settings) as pool:
            console.print("dispatching webhooks (SIGTERM to stop)")
            await dispatch(WebhookStore(pool), settings.webhooks, metrics, stop)
    return 0


def register(sub: Any) -> None:
    hooks = sub.add_parser("webhooks", help="signed outgoing webhooks").add_subparsers(
        dest="webhooks", required=True
    )
    add = hooks.add_parser("add", help="send events to URL (prints the signing secret once)")
    add.add_argument("url")
    add.add_argument("--events", required=True, help=f"comma-separated: {','.join(EVENT_TYPES)}")
    add.set_defaults(handler=webhooks_add)
    hooks.add_parser("list", help="endpoints, state and backlog").set_defaults(
        handler=webhooks_list
    )
    enable = hooks.add_parser("enable", help="enable an endpoint disabled after failures")
    enable.add_argument("endpoint", type=int)
    enable.set_defaults(handler=webhooks_enable)
    disable = hooks.add_parser("disable", help="stop delivering to an endpoint (events wait)")
    disable.add_argument("endpoint", type=int)
    disable.set_defaults(handler=webhooks_disable)
    replay = hooks.add_parser("replay", help="deliver again the events of a time range")
    replay.add_argument("endpoint", type=int)
    replay.add_argument("--since", required=True, help="ISO 8601 (UTC if no zone)")
    replay.add_argument("--until", help="ISO 8601 (default: now)")
    replay.set_defaults(handler=webhooks_replay)
    run = hooks.add_parser("dispatch", help="deliver the outbox until SIGTERM")
    run.add_argument("--metrics-port", type=int, help="serve /metrics on 127.0.0.1:PORT")
    run.set_defaults(handler=webhooks_dispatch)
