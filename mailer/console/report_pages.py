"""The report across campaigns: the figures of every campaign started in a period, their
total, and the same table as CSV. The figures are the campaign report's (mailer/report)."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime, time, timedelta

from aiohttp import web

from mailer.console.accounts import Role
from mailer.console.web import console_of, render, requires
from mailer.core.spreadsheet import csv_writer
from mailer.report.across import table, total

MAX_CAMPAIGNS = 50  # each costs one fold statement: the page stays within its query budget
DEFAULT_DAYS = 30


def _period(request: web.Request) -> tuple[date, date]:
    """`?from=YYYY-MM-DD&to=YYYY-MM-DD`, both days included; by default the last 30 days."""
    today = datetime.now(UTC).date()
    try:
        until = date.fromisoformat(request.query.get("to") or today.isoformat())
        since = date.fromisoformat(
            request.query.get("from") or (until - timedelta(days=DEFAULT_DAYS - 1)).isoformat()
        )
    except ValueError:
        raise web.HTTPBadRequest(text="from and to: dates as YYYY-MM-DD") from None
    if since > until:
        raise web.HTTPBadRequest(text="from: must not be after to")
    return since, until


@requires(Role.VIEWER)
async def reports_page(request: web.Request) -> web.StreamResponse:
    since, until = _period(request)
    start = datetime.combine(since, time(), UTC)
    end = datetime.combine(until + timedelta(days=1), time(), UTC)
    lines = await console_of(request).reports.across_campaigns(start, end, MAX_CAMPAIGNS + 1)
    more, lines = len(lines) > MAX_CAMPAIGNS, lines[:MAX_CAMPAIGNS]
    head, rows = table(lines)
    if request.match_info.get("format") == ".csv":
        out = io.StringIO()
        writer = csv_writer(out)  # cells starting = + - @ neutralised (OWASP)
        writer.writerow(["campaigns started", since.isoformat(), until.isoformat()])
        writer.writerow(head)
        writer.writerows(rows)
        name = f"campaigns-{since.isoformat()}-{until.isoformat()}.csv"
        return web.Response(
            text=out.getvalue(),
            content_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    return render(
        request,
        "reports.html",
        since=since,
        until=until,
        head=head,
        rows=rows,
        more=more,
        limit=MAX_CAMPAIGNS,
        total=total(lines),
        count=len(lines),
    )


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/reports{format:(\\.csv)?}", reports_page, name="reports")
