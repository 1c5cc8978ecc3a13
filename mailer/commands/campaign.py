"""The operator's sending commands: create, lint, preview, send (with a progress bar),
pause / resume / cancel, resend-uncertain, and the long-running worker; the commands that
only read a campaign (list, status, audience, report) are in campaign_views.py.

Signal handling follows mailer/send/worker.py: a first SIGTERM/SIGINT stops
gracefully, a second one cancels.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mailer.campaigns import deliverability, lifecycle, lint
from mailer.campaigns.limits import RenderLimits
from mailer.campaigns.preview import PreviewError, compose_preview
from mailer.campaigns.store import CampaignStore
from mailer.commands.campaign_views import (
    campaign_audience,
    campaign_list,
    campaign_report,
    print_status,
    status,
    uncertain_explained,
)
from mailer.commands.console import console, err, open_pool, stop_on_signals
from mailer.commands.oplog import logged_write
from mailer.contacts.store import ContactStore
from mailer.core.settings import Settings
from mailer.core.tokens import Keyring
from mailer.inbound.guard import guard_for, guarded
from mailer.inbound.metrics import GuardMetrics
from mailer.send.metrics import EngineMetrics
from mailer.send.progress import watch_progress
from mailer.send.store import SendStore
from mailer.send.worker import build_engine, build_lane, lane_pool, run_with_lane

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


async def create(args: argparse.Namespace, settings: Settings) -> int:
    async with open_pool(settings) as pool:
        async with logged_write(pool, "campaign.create", "campaign") as w:
            campaign_id, definition = await lifecycle.create(
                CampaignStore(pool), Path(args.file), Path(args.templates), conn=w.conn
            )
            w.object_id = definition.slug
        console.print(f"campaign [bold]{definition.slug}[/] created (id {campaign_id}, draft)")
        return 0


async def check(args: argparse.Namespace, settings: Settings) -> int:
    """Lint the rendered samples and the sending setup; 1 when either must be fixed first."""
    async with open_pool(settings) as pool:
        store = CampaignStore(pool)
        limits = RenderLimits.from_settings(settings.engine)
        problems = await lifecycle.check(store, args.campaign, limits)
        _, definition = await lifecycle.load_definition(store, args.campaign)
    _print_lint(problems)
    findings = deliverability.check(settings, definition)
    print_findings(findings)
    return 1 if problems or any(f.fatal for f in findings) else 0


def print_findings(findings: list[deliverability.Finding]) -> None:
    """Sending-setup findings: fatal ones in red (the campaign does not start), else warnings."""
    for finding in findings:
        label = "[red]setup:[/]" if finding.fatal else "[yellow]warning:[/]"
        console.print(f"{label} {finding}", highlight=False)


def _print_lint(problems: list[lint.LintProblem]) -> None:
    if not problems:
        console.print(
            "[green]lint: every sample carries sender, address, consent sentence, "
            "unsubscribe and preference links[/]"
        )
    for problem in problems:
        console.print(f"[red]lint:[/] {problem}", highlight=False)


async def preview(args: argparse.Namespace, settings: Settings) -> int:
    """Write the exact message one contact would get, without sending or recording anything."""
    async with open_pool(settings) as pool:
        campaigns = CampaignStore(pool)
        row, definition = await lifecycle.load_definition(campaigns, args.campaign)
        record = await ContactStore(pool).contact_rule_inputs(args.to.strip().lower())
        if record is None:
            console.print(f"[red]error:[/] no contact {args.to}")
            return 2
        campaign = await SendStore(pool).campaign_for_engine(row.id)
        keyring = Keyring.from_spec(settings.require_token_keys())
        limits = RenderLimits.from_settings(settings.engine)
        try:
            # The engine's time and size limits (in this process: no memory cap).
            composed, composer = compose_preview(
                campaign.content, record, keyring, settings, datetime.now(UTC), limits=limits
            )
        except PreviewError as exc:
            console.print(f"[red]error:[/] {exc}", highlight=False)
            return 2
        out = Path(args.out or f"{args.campaign}-{record.email}.eml")
        out.write_bytes(composed.data)  # noqa: ASYNC240 - one small file, a CLI step
        console.print(f"wrote {out} ({len(composed.data):,} bytes, sha256 {composed.sha256[:16]}…)")
        if composer.dkim is None:
            console.print("not DKIM-signed: no [sender] dkim_selector, the relay must sign")
        else:
            signatures = ", ".join(f"s={k.selector} ({k.algorithm})" for k in composer.dkim.keys)
            console.print(f"DKIM-signed as d={composer.dkim.domain}: {signatures}", highlight=False)
        _print_lint(await lifecycle.check(campaigns, args.campaign, limits))
        print_findings(deliverability.check(settings, definition))
        return 0


async def send(args: argparse.Namespace, settings: Settings) -> int:
    """Launch (lint, freeze) and send in this process, with a progress bar, until nothing is due."""
    async with open_pool(settings) as pool:
        campaigns = CampaignStore(pool, audience_parts=settings.database.audience_parts)
        _, definition = await lifecycle.load_definition(campaigns, args.campaign)
        print_findings(deliverability.check(settings, definition))
        lifecycle.sending_setup(settings, args.campaign, definition)  # a fatal one: refused
        metrics = EngineMetrics()
        # Before the launch: a taken port must not leave the campaign running unwatched.
        if not serve_metrics(metrics, 0 if args.no_metrics else settings.engine.metrics_port):
            return 2
        limits = RenderLimits.from_settings(settings.engine)
        async with logged_write(pool, "campaign.send", "campaign", args.campaign) as w:
            launched = await lifecycle.launch(
                campaigns, args.campaign, datetime.now(UTC), limits, conn=w.conn
            )
            w.detail["added"] = launched.freeze.added
        counts = launched.freeze.counts
        console.print(
            f"audience frozen: {counts.get('eligible', 0):,} eligible, "
            + ", ".join(f"{k} {v:,}" for k, v in counts.items() if k != "eligible")
        )
        if launched.status == "scheduled":
            console.print("scheduled: a `mailer worker` will start it at its time")
            return 0
        stop = asyncio.Event()
        engine = build_engine(
            pool, settings, stop=stop, metrics=metrics, only_campaigns={launched.campaign_id}
        )
        guard = guard_for(pool, settings, GuardMetrics(metrics.registry))
        with stop_on_signals(stop, console):
            run = asyncio.create_task(guarded(engine.run(until_idle=True), guard, stop))
            await watch_progress(campaigns, launched.campaign_id, run, console)
            await run
        return await print_status(pool, args.campaign)


async def transition(args: argparse.Namespace, settings: Settings, target: str) -> int:
    verb = {"paused": "pause", "running": "resume", "cancelled": "cancel"}.get(target, target)
    async with open_pool(settings) as pool:
        async with logged_write(pool, f"campaign.{verb}", "campaign", args.campaign) as w:
            await lifecycle.transition(CampaignStore(pool), args.campaign, target, conn=w.conn)
        console.print(f"{args.campaign}: {target}")
        return 0


async def resend_uncertain(args: argparse.Namespace, settings: Settings) -> int:
    """Queue the uncertain deliveries again, once the operator saw how many and said --yes."""
    async with open_pool(settings) as pool:
        store = CampaignStore(pool)
        spec = await store.campaign_spec(args.campaign)
        if spec is None:
            console.print(f"[red]error:[/] no campaign {args.campaign!r}")
            return 2
        count = (await store.campaign_status_counts(spec.id)).get("uncertain", 0)
        if not count:
            console.print(f"{args.campaign}: no uncertain deliveries, nothing to resend")
            return 0
        console.print(f"[yellow]{uncertain_explained(count, args.campaign)}[/]")
        if not args.yes:
            console.print(
                f"Nothing resent. `mailer campaign resend-uncertain {args.campaign} --yes` "
                f"queues these {count:,} deliveries again."
            )
            return 1
        async with logged_write(pool, "campaign.resend_uncertain", "campaign", args.campaign) as w:
            resent = await store.resend_uncertain(spec.id, w.conn)
            w.detail["resent"] = resent
        console.print(f"{resent:,} uncertain deliveries queued again")
        return 0


def serve_metrics(metrics: EngineMetrics, port: int) -> bool:
    """Expose /metrics on engine.metrics_port; False (said) when the port is taken."""
    try:
        metrics.serve(port)
    except OSError as exc:
        # A second worker on this machine, or `campaign send` beside a running worker.
        err.print(
            f"[red]error:[/] engine.metrics_port {port}: {exc.strerror}; give each worker "
            "on a machine its own (MAILER_ENGINE_METRICS_PORT), or 0 for none"
            " (campaign send: --no-metrics)",
            highlight=False,
        )
        return False
    return True


async def worker(args: argparse.Namespace, settings: Settings) -> int:
    """Send every running campaign until SIGTERM; any number may run at once."""
    async with open_pool(settings) as pool, lane_pool(settings) as own:
        stop = asyncio.Event()
        metrics = EngineMetrics()
        if not serve_metrics(metrics, settings.engine.metrics_port):
            return 2
        engine = build_engine(pool, settings, stop=stop, metrics=metrics)
        # The reputation guard runs wherever campaigns are sent, not only beside `inbound
        # serve`: first-hop bounces are in the ledger the engine writes.
        guard = guard_for(pool, settings, GuardMetrics(metrics.registry))
        # Transactional messages go out beside campaigns, ahead of them (mailer/send/lane.py),
        # on connections of their own, to Postgres as to the relays.
        lane = build_lane(own, settings, engine)
        with stop_on_signals(stop, console):
            console.print(
                f"worker {engine.worker} running; metrics on "
                f"127.0.0.1:{settings.engine.metrics_port}/metrics"
            )
            progress = await guarded(
                run_with_lane(engine, lane, until_idle=args.until_idle), guard, stop
            )
        console.print(f"worker stopped: {progress.by_status}")
        return 0


def register(sub: Any) -> None:
    campaign = sub.add_parser("campaign", help="campaigns").add_subparsers(
        dest="cmp", required=True
    )
    new = campaign.add_parser("create", help="create a draft campaign from a campaign file")
    new.add_argument("file")
    new.add_argument("--templates", default=str(TEMPLATES), help="templates folder")
    new.set_defaults(handler=create)
    campaign.add_parser("list", help="every campaign and its state").set_defaults(
        handler=campaign_list
    )
    for name, help_text, handler in (
        ("check", "render for a sample of each consent kind and report missing elements", check),
        ("status", "deliveries by state, from the ledger", status),
        (
            "resend-uncertain",
            "queue again the deliveries left uncertain by a crash (some may arrive twice)",
            resend_uncertain,
        ),
    ):
        cmd = campaign.add_parser(name, help=help_text)
        cmd.add_argument("campaign")
        cmd.set_defaults(handler=handler)
        if handler is resend_uncertain:
            cmd.add_argument(
                "--yes",
                action="store_true",
                help="resend them (without it: only say how many, and what it risks)",
            )
    for name, target in (("pause", "paused"), ("resume", "running"), ("cancel", "cancelled")):
        cmd = campaign.add_parser(name, help=f"{name} a campaign (takes effect within one batch)")
        cmd.add_argument("campaign")
        cmd.set_defaults(handler=functools.partial(transition, target=target))
    prev = campaign.add_parser("preview", help="write the exact message a contact would get")
    prev.add_argument("campaign")
    prev.add_argument("--to", required=True, help="the contact's address")
    prev.add_argument("--out", help="where to write the .eml (default CAMPAIGN-EMAIL.eml)")
    prev.set_defaults(handler=preview)
    snd = campaign.add_parser("send", help="lint, freeze the audience and send, with progress")
    snd.add_argument("campaign")
    snd.add_argument("--no-metrics", action="store_true", help="do not serve /metrics")
    snd.set_defaults(handler=send)
    rep = campaign.add_parser("report", help="deliveries, opens, clicks, opt-outs")
    rep.add_argument("campaign")
    rep.add_argument("--html", metavar="FILE", help="also write a self-contained HTML page")
    rep.add_argument("--json", action="store_true", help="print JSON instead of tables")
    rep.set_defaults(handler=campaign_report)
    aud = campaign.add_parser("audience", help="eligible count and exclusions by reason")
    aud.add_argument("campaign")
    aud.add_argument("--at", help="send time (ISO 8601, default now)")
    aud.set_defaults(handler=campaign_audience)

    wrk = sub.add_parser("worker", help="send running campaigns until SIGTERM")
    wrk.add_argument(
        "--until-idle", action="store_true", help="exit once nothing is due and nothing in flight"
    )
    wrk.set_defaults(handler=worker)
