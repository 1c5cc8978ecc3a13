"""The dashboard: running and scheduled campaigns with live progress (Server-Sent Events),
the last 24 hours of opt-outs, bounces and complaints, and alerts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from aiohttp_sse import sse_response

from mailer.campaigns.rows import CampaignOverview
from mailer.compliance.privacy import sla_breached, sla_line
from mailer.console.accounts import Role
from mailer.console.web import HEADERS, console_of, operator_of, render, requires
from mailer.console.wording import translator
from mailer.core.reputation import describe
from mailer.webhooks.store import Endpoint, WebhookStore

PROGRESS_EVERY_S = 1.0  # one small query per open dashboard per second
ACTIVE = ("running", "paused", "scheduled")


def alerts_of(
    campaigns: list[CampaignOverview],
    endpoints: list[Endpoint],
    sla: Mapping[str, Any] | None = None,
) -> list[str]:
    """What needs the operator: an opt-out not honoured in time (the audit's unsubscribe-SLA
    rule and line), campaigns the reputation guard paused, uncertain deliveries, webhook
    endpoints disabled after their retry window."""
    found = [sla_line(sla)] if sla is not None and sla_breached(sla) else []
    found += [
        f"webhook {e.url} disabled: {e.disabled_why or 'failing'} (`mailer webhooks enable`)"
        for e in endpoints
        if e.disabled_at is not None
    ]
    for c in campaigns:
        if c.pause_reason:
            found.append(f"{c.slug}: {describe(c.pause_reason)}")
        if c.counts.get("uncertain"):
            found.append(f"{c.slug}: {c.counts['uncertain']} uncertain deliveries")
    return found


@requires(Role.VIEWER)
async def dashboard(request: web.Request) -> web.Response:
    console = console_of(request)
    # The finished ones only for their alerts (uncertain deliveries): not counted whole.
    campaigns = await console.campaigns.campaigns_overview(finished=5, finished_counts=False)
    recent = await console.reports.recent_activity(datetime.now(UTC) - timedelta(hours=24))
    endpoints = await WebhookStore(console.pool).endpoints_disabled()
    # Every opt-out against every later delivery: seconds at millions of rows, so it runs
    # in the background and the page shows the last verdict (with its age while refreshing).
    sla = await console.sla.get("all", lambda: console.compliance.unsubscribe_sla(None))
    active = [c for c in campaigns if c.status in ACTIVE]
    return render(
        request,
        "dashboard.html",
        active=active,
        recent=recent,
        alerts=alerts_of(campaigns, endpoints, sla.value),
        sla=sla,
        rates={},
    )


@requires(Role.VIEWER)
async def progress_events(request: web.Request) -> web.StreamResponse:
    """`progress` events: the active campaigns' rows (or one campaign's), as HTML for htmx."""
    console = console_of(request)
    only = request.query.get("campaign")
    t = translator(operator_of(request).locale)
    template = console.jinja.get_template("_progress.html")
    before: dict[str, tuple[float, int]] = {}
    # The session was checked when the stream opened; the stream ends with the session's
    # absolute lifetime, and at most after one idle period (the browser's EventSource then
    # reconnects through the session check, so a logged-out browser stops receiving).
    limits = console.settings.console
    ends = min(
        time.monotonic() + limits.idle_minutes * 60.0,
        time.monotonic()
        + limits.absolute_hours * 3600.0
        - (datetime.now(UTC) - operator_of(request).logged_in_at).total_seconds(),
    )
    async with sse_response(request, headers=HEADERS) as stream:
        while stream.is_connected() and time.monotonic() < ends:
            campaigns = await console.campaigns.campaigns_overview(finished=0)
            now = time.monotonic()
            shown = [c for c in campaigns if (c.slug == only if only else c.status in ACTIVE)]
            rates = {}
            for c in shown:
                if c.slug in before:
                    then, done = before[c.slug]
                    rates[c.slug] = max(0.0, (c.done - done) / max(now - then, 1e-3))
                before[c.slug] = (now, c.done)
            html = template.render(t=t, active=shown, rates=rates)
            await stream.send(html.replace("\n", " "), event="progress")
            await asyncio.sleep(PROGRESS_EVERY_S)
    return stream


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/", dashboard, name="dashboard")
    router.add_get("/events/progress", progress_events, name="progress_events")
