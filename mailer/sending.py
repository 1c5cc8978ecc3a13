"""The operator's sending commands: create, lint, preview, send (with a progress bar),
pause / resume / cancel, status, resend-uncertain, and the long-running worker.

Signal handling follows one rule everywhere: the first SIGTERM/SIGINT sets the
engine's stop event (stop claiming, finish the message in hand, hand back the
rest, flush, close); a second one cancels.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from mailer import config, lifecycle, lint
from mailer.consent import Kind
from mailer.engine import Engine
from mailer.limits import RenderLimits, timed
from mailer.message import Composer, Recipient
from mailer.metrics import EngineMetrics
from mailer.render import MessageError, Renderer, TemplateSet, UnregisteredLinks
from mailer.smtp import Relay, Relays
from mailer.store import Store
from mailer.tokens import Keyring

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
FINAL = ("sent", "bounced", "failed", "skipped", "uncertain")


def build_engine(store: Store, settings: config.Settings, **kwargs: Any) -> Engine:
    keyring = Keyring.from_spec(settings.require_token_keys())
    relays = Relays([Relay(r, settings.relay_password(r)) for r in settings.all_relays()])
    return Engine(store, settings, keyring, relays, **kwargs)


def install_stop_handlers(stop: asyncio.Event, console: Console) -> None:
    """First signal: graceful stop. Second: cancel everything."""
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()

    def on_signal(name: str) -> None:
        if stop.is_set():
            console.print(f"[red]{name} again: cancelling[/]")
            if main is not None:
                main.cancel()
            return
        console.print(f"[yellow]{name}: finishing the messages in hand, handing back the rest…[/]")
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, on_signal, sig.name)


async def create(args: argparse.Namespace, store: Store, console: Console) -> int:
    campaign_id, definition = await lifecycle.create(store, Path(args.file), Path(args.templates))
    console.print(f"campaign [bold]{definition.slug}[/] created (id {campaign_id}, draft)")
    return 0


async def check(
    args: argparse.Namespace, store: Store, settings: config.Settings, console: Console
) -> int:
    limits = RenderLimits.from_settings(settings.engine)
    problems = await lifecycle.check(store, args.campaign, limits)
    _print_lint(problems, console)
    return 1 if problems else 0


def _print_lint(problems: list[lint.LintProblem], console: Console) -> None:
    if not problems:
        console.print(
            "[green]lint: every sample carries sender, address, consent sentence, "
            "unsubscribe and preference links[/]"
        )
    for problem in problems:
        console.print(f"[red]lint:[/] {problem}", highlight=False)


async def preview(
    args: argparse.Namespace, store: Store, settings: config.Settings, console: Console
) -> int:
    """Write the exact message one contact would get, without sending or recording anything."""
    _, definition = await lifecycle.load_definition(store, args.campaign)
    spec = await store.campaign_spec(args.campaign)
    assert spec is not None
    data = await store.campaign_for_engine(spec.id)
    inputs = await store.contact_rule_inputs(args.to.strip().lower())
    if inputs is None:
        console.print(f"[red]error:[/] no contact {args.to}")
        return 2
    limits = RenderLimits.from_settings(settings.engine)
    renderer = Renderer(
        TemplateSet(data["template"], data["files"]), max_output=limits.max_message_bytes
    )
    composer = Composer.for_settings(
        definition,
        renderer,
        Keyring.from_spec(settings.require_token_keys()),
        settings,
        link_ids={**data["links"]},
    )
    best = next(
        (e for e in reversed(inputs["ledger"]) if e["action"] == "grant" and e["kind"]), None
    )
    recipient = Recipient(
        delivery_id=0,
        email=inputs["email"],
        name=inputs["name"],
        locale=inputs["locale"],
        attributes=inputs["attributes"],
        consent_kind=None if best is None else Kind(best["kind"]),
        consent_source="" if best is None else best["source"],
        consent_obtained_at=None if best is None else datetime.fromisoformat(best["obtained_at"]),
    )
    for _ in range(20):
        try:
            # The engine's time and size limits (in this process: no memory cap).
            composed = timed(limits, composer.compose, recipient, datetime.now(UTC))
            break
        except UnregisteredLinks as exc:
            composer.add_links({url: 0 for url in exc.urls})  # preview: nothing is registered
        except MessageError as exc:
            skipped = f"{inputs['email']} would be skipped ({exc.reason})"
            console.print(f"[red]error:[/] {skipped}: {exc}", highlight=False)
            return 2
    else:
        console.print("[red]error:[/] the template keeps producing new links")
        return 2
    out = Path(args.out or f"{args.campaign}-{inputs['email']}.eml")
    out.write_bytes(composed.data)  # noqa: ASYNC240 - one small file, a CLI step
    console.print(f"wrote {out} ({len(composed.data):,} bytes, sha256 {composed.sha256[:16]}…)")
    _print_lint(await lifecycle.check(store, args.campaign, limits), console)
    return 0


async def send(
    args: argparse.Namespace, store: Store, settings: config.Settings, console: Console
) -> int:
    """Launch (lint, freeze) and send in this process, with a progress bar, until nothing is due."""
    launched = await lifecycle.launch(
        store, args.campaign, datetime.now(UTC), RenderLimits.from_settings(settings.engine)
    )
    counts = launched.freeze.counts
    console.print(
        f"audience frozen: {counts.get('eligible', 0):,} eligible, "
        + ", ".join(f"{k} {v:,}" for k, v in counts.items() if k != "eligible")
    )
    if launched.status == "scheduled":
        console.print("scheduled: a `mailer worker` will start it at its time")
        return 0
    stop = asyncio.Event()
    install_stop_handlers(stop, console)
    metrics = EngineMetrics()
    metrics.serve(0 if args.no_metrics else settings.engine.metrics_port)
    engine = build_engine(
        store, settings, stop=stop, metrics=metrics, only_campaigns={launched.campaign_id}
    )
    run = asyncio.create_task(engine.run(until_idle=True))
    await watch_progress(store, launched.campaign_id, run, console)
    await run
    return await status(args, store, console)


async def watch_progress(
    store: Store, campaign_id: int, run: asyncio.Task[Any], console: Console
) -> None:
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("sending", total=None, detail="")
        while True:
            finished = run.done()
            counts = await store.campaign_status_counts(campaign_id)
            total = sum(counts.values())
            done = sum(counts.get(s, 0) for s in FINAL)
            detail = "  ".join(
                f"{s} {counts.get(s, 0):,}"
                for s in ("sent", "deferred", "bounced", "skipped")
                if counts.get(s)
            )
            bar.update(task, total=total, completed=done, detail=detail)
            if finished:
                return
            await asyncio.wait({run}, timeout=0.5)


async def status(args: argparse.Namespace, store: Store, console: Console) -> int:
    row = await store.campaign_by_slug(args.campaign)
    if row is None:
        console.print(f"[red]error:[/] no campaign {args.campaign!r}")
        return 2
    spec = await store.campaign_spec(args.campaign)
    assert spec is not None
    counts = await store.campaign_status_counts(spec.id)
    frozen = sum(counts.values())
    table = Table("state", "deliveries", title=f"{args.campaign}: {row['status']}")
    for state in (
        "queued",
        "sending",
        "sent",
        "deferred",
        "bounced",
        "failed",
        "skipped",
        "uncertain",
    ):
        if counts.get(state):
            table.add_row(state, f"{counts[state]:,}")
    table.add_row("[bold]frozen audience[/]", f"{frozen:,}")
    console.print(table)
    if counts.get("uncertain"):
        console.print(
            f"[yellow]{counts['uncertain']} deliveries were in flight when a worker died; they "
            f"may or may not have been delivered. `mailer campaign resend-uncertain "
            f"{args.campaign}` resends them (risking duplicates).[/]"
        )
    return 0


async def transition(args: argparse.Namespace, store: Store, console: Console, target: str) -> int:
    await lifecycle.transition(store, args.campaign, target)
    console.print(f"{args.campaign}: {target}")
    return 0


async def resend_uncertain(args: argparse.Namespace, store: Store, console: Console) -> int:
    spec = await store.campaign_spec(args.campaign)
    if spec is None:
        console.print(f"[red]error:[/] no campaign {args.campaign!r}")
        return 2
    count = await store.resend_uncertain(spec.id)
    console.print(f"{count} uncertain deliveries queued again")
    return 0


async def worker(
    args: argparse.Namespace, store: Store, settings: config.Settings, console: Console
) -> int:
    """Send every running campaign until SIGTERM; any number may run at once."""
    stop = asyncio.Event()
    install_stop_handlers(stop, console)
    metrics = EngineMetrics()
    metrics.serve(settings.engine.metrics_port)
    engine = build_engine(store, settings, stop=stop, metrics=metrics)
    console.print(
        f"worker {engine.worker} running; metrics on "
        f"127.0.0.1:{settings.engine.metrics_port}/metrics"
    )
    progress = await engine.run(until_idle=args.until_idle)
    console.print(f"worker stopped: {progress.by_status}")
    return 0
