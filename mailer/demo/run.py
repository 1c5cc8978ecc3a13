"""`make demo`: the whole product end to end on embedded defaults, in under a minute.

A private Postgres (started by make), ~2,000 sample contacts with a realistic
consent mix imported twice (the second import changes nothing), registry and
earlier-unsubscribe suppression lists, the sample service reminder sent
through the real engine with throttling to a local SMTP sink that keeps each
message as an .eml file, simulated readers (people and machines) opening,
clicking and unsubscribing through the real tracker over HTTP, and the
campaign report. Safe to run again: each run is a new campaign.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import secrets
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web
from rich.console import Console
from rich.table import Table

from mailer.campaigns import deliverability, lifecycle
from mailer.campaigns.limits import RenderLimits
from mailer.campaigns.store import CampaignStore
from mailer.contacts import imports
from mailer.contacts.csvfile import Defaults
from mailer.contacts.store import ContactStore
from mailer.core.settings import Settings
from mailer.db import connect
from mailer.db.migrations import migrate
from mailer.demo import notices as notices_flow
from mailer.demo import operators, relay, signups
from mailer.demo.readers import machines, people, read_mailbox
from mailer.demo.samples import (
    TOPICS,
    first_email,
    write_sample_contacts,
    write_sample_registry,
    write_unsubscribed,
)
from mailer.demo.sink import Sink
from mailer.demo.sink import serve as serve_sink
from mailer.inbound.service import InboundService
from mailer.report.figures import figures
from mailer.report.html import render_html
from mailer.report.store import ReportStore
from mailer.report.terminal import render_rich
from mailer.send.metrics import EngineMetrics
from mailer.send.progress import watch_progress
from mailer.send.worker import build_engine, build_lane
from mailer.transactional.store import TransactionalStore
from tracker import app as tracker_app
from tracker.bots import SCANNER_WINDOW_SECONDS

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _token_keys(folder: Path) -> str:
    """The demo's signing key, kept across runs so links in earlier demo mail stay valid."""
    path = folder / "token_keys"
    if not path.exists():
        path.write_text("1:" + base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
        path.chmod(0o600)
    return path.read_text().strip()


def demo_settings(settings: Settings, folder: Path) -> Settings:
    """Embedded defaults pointed at the demo's own sink, tracker and metrics ports."""
    tracker_port, smtp_port, metrics_port = _free_port(), _free_port(), _free_port()
    return dataclasses.replace(
        settings,
        smtp=dataclasses.replace(
            settings.smtp, host="127.0.0.1", port=smtp_port, tls="none", username=""
        ),
        relays=(),
        tracker=dataclasses.replace(
            settings.tracker,
            host="127.0.0.1",
            port=tracker_port,
            base_url=f"http://127.0.0.1:{tracker_port}",
        ),
        engine=dataclasses.replace(settings.engine, metrics_port=metrics_port),
        # `inbound serve` for the bounces the demo's relay sends back.
        inbound=dataclasses.replace(
            settings.inbound, host="127.0.0.1", port=_free_port(), metrics_port=_free_port()
        ),
        # Throttled like a real send, just fast enough for a one-minute demo.
        throttle=dataclasses.replace(
            settings.throttle, global_rate=600.0, default_domain_rate=150.0
        ),
        token_keys=settings.token_keys or _token_keys(folder),
        # The business the sign-up form names (CASL s.6(2)(a)), and the templates of the
        # confirmation mail wherever the demo is run from.
        forms=dataclasses.replace(
            settings.forms,
            business_name=settings.forms.business_name or "Garage Tremblay Automobiles",
            postal_address=settings.forms.postal_address
            or "2450, boulevard Laurier, Québec (Québec)  G1V 2L1, Canada",
            contact=settings.forms.contact or "+1 418-555-0142",
        ),
        transactional=dataclasses.replace(
            settings.transactional, templates_dir=str(TEMPLATES / "transactional")
        ),
    )


async def run(settings: Settings, folder: Path, console: Console, *, contacts: int = 2000) -> int:
    """Run the whole product once; return the process exit code."""
    started = time.monotonic()
    folder.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - a CLI step, nothing else runs
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_folder = folder / "runs" / stamp
    mailbox = run_folder / "mail"
    settings = demo_settings(settings, folder)
    now = datetime.now(UTC)
    contacts_csv, registry, unsubscribed = (
        folder / "contacts.csv",
        folder / "registry.txt",
        folder / "unsubscribed.txt",
    )
    write_sample_contacts(contacts_csv, contacts, now)
    write_sample_registry(registry, contacts_csv)
    write_unsubscribed(unsubscribed, contacts_csv)
    db = settings.database
    async with connect(db.url, min_size=1, max_size=db.pool_max) as pool:
        console.rule("1. contacts and consent")
        applied = await migrate(pool)
        console.print(f"schema: {len(applied)} migration(s) applied")
        await _load_contacts(
            ContactStore(pool), settings, console, contacts_csv, registry, unsubscribed
        )
        campaigns = CampaignStore(pool, audience_parts=db.audience_parts)

        sink = Sink(mailbox)
        refused: list[tuple[str, bytes]] = []  # the DSNs the "relay" will send back

        def next_hop(mail_from: str, rcpts: list[str], data: bytes) -> None:
            for rcpt in rcpts:
                if (said := relay.verdict(rcpt)) is not None:
                    refused.append((mail_from, relay.dsn(mail_from, rcpt, data, *said)))

        sink.on_message = next_hop
        smtp = await serve_sink(sink, "127.0.0.1", settings.smtp.port)
        inbound = InboundService(settings, pool)
        await inbound.start()
        runner = web.AppRunner(tracker_app.create_app(settings), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", settings.tracker.port).start()
        try:
            console.rule("2. the campaign")
            slug = f"service-reminder-demo-{stamp}"
            campaign_id, definition = await lifecycle.create(
                campaigns, TEMPLATES / "service_reminder.toml", TEMPLATES, slug=slug
            )
            # The demo's loopback tracker is warned about, as `campaign check` would.
            for finding in deliverability.check(settings, definition):
                console.print(f"[yellow]warning:[/] {finding}", highlight=False)
            launched = await lifecycle.launch(
                campaigns, slug, datetime.now(UTC), RenderLimits.from_settings(settings.engine)
            )
            counts = launched.freeze.counts
            console.print(
                f"[bold]{slug}[/]: lint passed, audience frozen: "
                f"{counts.get('eligible', 0):,} eligible; excluded "
                + ", ".join(f"{k} {v:,}" for k, v in counts.items() if k != "eligible")
            )
            metrics = EngineMetrics()
            metrics.serve(settings.engine.metrics_port)
            engine = build_engine(pool, settings, metrics=metrics, only_campaigns={campaign_id})
            # The worker's transactional lane beside it: "parts received" notices enqueued
            # while the campaign sends go out ahead of it, on a connection of their own.
            lane = build_lane(pool, settings, engine)
            lane_run = asyncio.create_task(lane.run())
            notices_store = TransactionalStore(pool, TEMPLATES / "transactional")
            task = asyncio.create_task(engine.run(until_idle=True))
            notices = asyncio.create_task(
                notices_flow.send_notices(
                    notices_store,
                    sink,
                    contacts_csv,
                    unsubscribed,
                    console,
                    task,
                    # A third of the way through the campaign.
                    after_messages=max(1, counts.get("eligible", 0) // 3),
                )
            )
            await watch_progress(campaigns, campaign_id, task, console)
            await task
            notice_ids = await notices
            await notices_flow.wait_sent(notices_store, notice_ids, console)
            lane.stop.set()
            await lane_run

            console.rule("3. readers, through the tracker")
            readers = read_mailbox(mailbox)
            bots = await machines(readers)
            # People read later than scanners: past the tracker's scanner window.
            await asyncio.sleep(SCANNER_WINDOW_SECONDS + 0.5)
            humans = await people(readers)
            console.print(
                f"{len(readers):,} messages in the mailbox; machines: {dict(bots.hits)}; "
                f"people: {dict(humans.hits)}"
            )
            # What the readers did, beside the messages: the events the ledger must hold.
            (run_folder / "readers.json").write_text(
                json.dumps(
                    {
                        "machines": bots.hits,
                        "people": humans.hits,
                        "failures": bots.failures + humans.failures,
                    },
                    indent=2,
                )
            )

            console.rule("4. bounces and a mailto unsubscribe, through inbound serve")
            await _inbound(inbound, refused, mailbox, console)

            console.rule("5. a sign-up form: visitors subscribe and confirm by email")
            await signups.run(pool, settings, run_folder, console)
        finally:
            await runner.cleanup()  # flushes the tracker's event buffer
            await inbound.stop()
            smtp.close()
            await smtp.wait_closed()

        console.rule("6. the report")
        report_file = run_folder / "report.html"
        await _report(ReportStore(pool), campaign_id, report_file, console)

        console.rule("7. the operator API and a webhook")
        await operators.api_and_webhook(pool, settings, console)
        console.rule("8. the console")
        await operators.console_tour(pool, settings, folder, slug, console)
    elapsed = time.monotonic() - started
    console.rule(f"done in {elapsed:.0f} s")
    console.print(f"messages (.eml):   {mailbox}/ ({sink.count:,} files)")
    console.print(f"report:            {report_file}")
    console.print(
        f"tracker (stopped): {settings.tracker.base_url}  — run it with "
        "[bold]mailer tracker serve[/]"
    )
    console.print(
        f"metrics (stopped): http://127.0.0.1:{settings.engine.metrics_port}/metrics, "
        f"{settings.tracker.base_url}/metrics and "
        f"http://127.0.0.1:{settings.inbound.metrics_port}/metrics (inbound); "
        "dashboards in config/grafana/"
    )
    console.print(
        f"try: [bold].venv/bin/mailer contacts explain {first_email(contacts_csv)} "
        f"--campaign {slug}[/]"
    )
    console.print("and:  [bold].venv/bin/mailer transactional report --since 1d[/]")
    return 0


async def _load_contacts(
    store: ContactStore,
    settings: Settings,
    console: Console,
    contacts_csv: Path,
    registry: Path,
    unsubscribed: Path,
) -> None:
    for slug, name_fr, name_en, default in TOPICS:
        await store.topic_upsert(slug, name_en, "", default, names={"fr": name_fr, "en": name_en})
    table = Table("import", "rows", "created", "updated", "ledger rows added")
    for label in ("contacts.csv", "contacts.csv again (changes nothing)"):
        r = (
            await imports.import_contacts(
                store,
                contacts_csv,
                Defaults(),
                default_locale=settings.imports.default_locale,
                skip_invalid=False,
            )
        ).result
        table.add_row(
            label,
            f"{r.rows_read:,}",
            f"{r.contacts_created:,}",
            f"{r.contacts_updated:,}",
            f"{r.consents_added:,}",
        )
    console.print(table)
    dnc, _ = await imports.import_suppressions(
        store,
        registry,
        reason="registry",
        scope="global",
        channel=None,
        topic_id=None,
        source="National Do Not Contact List (sample)",
    )
    unsub, _ = await imports.import_suppressions(
        store,
        unsubscribed,
        reason="unsubscribe",
        scope="channel",
        channel="email",
        topic_id=None,
        source="previous ESP unsubscribe export",
    )
    console.print(
        f"suppressions: {dnc.rows_valid} do-not-contact registry entries, "
        f"{unsub.rows_valid} earlier email unsubscribes"
    )


async def _report(store: ReportStore, campaign_id: int, html: Path, console: Console) -> None:
    found = await figures(store, campaign_id)
    console.print(render_rich(found))
    html.write_text(render_html(found), encoding="utf-8")  # noqa: ASYNC240


async def _inbound(
    service: InboundService, refused: list[tuple[str, bytes]], mailbox: Path, console: Console
) -> None:
    """The relay's DSNs and one reader's mailto, over SMTP to inbound serve; then processed."""
    sent = await relay.send(service.port, refused)
    # One reader writes to the List-Unsubscribe mailto instead of clicking (RFC 2369).
    mailto = next((r.mailto for r in reversed(read_mailbox(mailbox)) if r.mailto), None)
    if mailto is not None:
        note = (
            f"From: reader@example.org\r\nTo: {mailto}\r\nSubject: unsubscribe\r\n"
            f"Message-ID: <demo-mailto-{time.time_ns()}@example.org>\r\n\r\nunsubscribe\r\n"
        )
        await relay.send(service.port, [(mailto, note.encode())], mail_from="reader@example.org")
    for _ in range(300):  # processed within a few batches; 30 s at most
        if not (await service.store.kind_counts()).get("pending"):
            break
        await asyncio.sleep(0.1)
    counts = service.processor.counts
    console.print(
        f"the relay reported {sent} refusals after accepting the messages; inbound serve "
        f"processed: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    )
