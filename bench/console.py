"""Console benchmark: page latency (p50/p99) against the same data as bare JSON, same run.

Builds contacts with bench/audience.py's synthetic ledger (every consent kind, withdrawals,
suppressions, topic opt-outs), freezes a campaign's audience into deliveries, marks half of
them sent (a campaign "running"), then asks the console for its dashboard, campaign,
audience and contact pages, logged in, through a real HTTP server on loopback; and, in the
same run against the same data, JSON endpoints that call the same store functions without
session, templates or middlewares; and the operator API of #19 (`mailer api serve`'s app)
for the campaign status and the contact story. The difference is what the console itself
costs: session lookup, security headers, Jinja2.

    DATABASE_URL=… python bench/console.py [--contacts 1000000] [--recipients 100000]
                                          [--requests 40]

--recipients 0 keeps the campaign's whole eligible audience (714,312 of 1 M contacts).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestServer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.audience import AT, SETUP  # noqa: E402
from bench.scratch import create_database, drop_database, server_dsn  # noqa: E402
from mailer.api.app import create_app as create_api_app  # noqa: E402
from mailer.api.store import ApiStore  # noqa: E402
from mailer.campaigns.store import CampaignStore  # noqa: E402
from mailer.campaigns.store import Q as CAMPAIGN_SQL  # noqa: E402
from mailer.console.accounts import Role  # noqa: E402
from mailer.console.app import create_app  # noqa: E402
from mailer.console.enrolment import add_operator  # noqa: E402
from mailer.console.store import ConsoleStore  # noqa: E402
from mailer.console.web import CONSOLE, requires  # noqa: E402
from mailer.core.addresses import address_hash  # noqa: E402
from mailer.core.settings import load  # noqa: E402
from mailer.db import connect  # noqa: E402

PASSWORD = "bench password 1234"  # noqa: S105 - a scratch database's operator


def json_routes(app: web.Application) -> None:
    """The pages' data as JSON, from the same store calls, with no session or template."""

    def reply(data: Any) -> web.Response:
        return web.Response(text=json.dumps(data, default=str), content_type="application/json")

    @requires(None)
    async def dashboard(request: web.Request) -> web.Response:
        c = request.app[CONSOLE]
        campaigns = await c.campaigns.campaigns_overview(finished=5, finished_counts=False)
        recent = await c.reports.recent_activity(datetime.now(UTC) - timedelta(hours=24))
        return reply({"campaigns": [vars_of(x) for x in campaigns], "recent": vars_of(recent)})

    @requires(None)
    async def campaign(request: web.Request) -> web.Response:
        c = request.app[CONSOLE]
        row = await c.campaigns.campaign_by_slug(request.match_info["slug"])
        assert row is not None
        return reply(
            {"status": row.status, "counts": await c.campaigns.campaign_status_counts(row.id)}
        )

    @requires(None)
    async def audience(request: web.Request) -> web.Response:
        c = request.app[CONSOLE]
        spec = await c.campaigns.campaign_spec(request.match_info["slug"])
        assert spec is not None
        lines = await c.campaigns.audience_breakdown(spec, datetime.now(UTC))
        return reply([vars_of(line) for line in lines])

    @requires(None)
    async def contact(request: web.Request) -> web.Response:
        c = request.app[CONSOLE]
        email = request.match_info["email"]
        story = await c.contacts.contact_story(email, address_hash(email))
        assert story is not None
        assert story.contact is not None
        deliveries = await c.reports.contact_deliveries(story.contact.id, None, 26)
        events = await c.reports.contact_activity(story.contact.id, None, 26)
        return reply(
            {
                "ledger": [vars_of(x) for x in story.ledger],
                "deliveries": [vars_of(x) for x in deliveries],
                "events": [vars_of(x) for x in events],
            }
        )

    @requires(None)
    async def sla(request: web.Request) -> web.Response:
        c = request.app[CONSOLE]
        return reply(await c.compliance.unsubscribe_sla(None))

    app.router.add_get("/json/dashboard", dashboard)
    app.router.add_get("/json/campaigns/{slug}", campaign)
    app.router.add_get("/json/campaigns/{slug}/audience", audience)
    app.router.add_get("/json/contacts/{email}", contact)
    app.router.add_get("/json/sla", sla)


def vars_of(value: Any) -> dict[str, Any]:
    return {name: getattr(value, name) for name in value.__slots__}


async def timings(session: aiohttp.ClientSession, url: str, n: int) -> list[float]:
    spent = []
    for _ in range(n):
        t = time.perf_counter()
        async with session.get(url) as response:
            assert response.status == 200, (url, response.status, await response.text())
            await response.read()
        spent.append((time.perf_counter() - t) * 1000)
    return spent


async def until_shown(session: aiohttp.ClientSession, url: str, marker: str) -> float:
    """Seconds from the first request until the page shows `marker` (as htmx polls it)."""
    t = time.perf_counter()
    while True:
        async with session.get(url) as response:
            if marker in await response.text():
                return time.perf_counter() - t
        await asyncio.sleep(0.1)


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument(
        "--recipients",
        type=int,
        default=100_000,
        help="deliveries of the running campaign (the issue's 100,000); 0 = its whole audience",
    )
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument(
        "--explain",
        action="store_true",
        help="print EXPLAIN (ANALYZE, BUFFERS) of the per-state counts before the timings",
    )
    args = parser.parse_args()
    dsn = server_dsn()
    url = await create_database(dsn, "bench_console")
    try:
        conn = await asyncpg.connect(url)
        started = time.perf_counter()
        for statement in SETUP:
            await (
                conn.execute(statement, args.contacts)
                if "$1" in statement
                else conn.execute(statement)
            )
        topic = await conn.fetchval("SELECT id FROM topics WHERE slug = 'topic1'")
        settings = load(
            environ={
                "DATABASE_URL": url,
                "MAILER_TOKEN_KEYS": "1:" + "a" * 44,
                # The API's per-key rate limit would answer 429 to a benchmark loop.
                "MAILER_API_RATE_PER_KEY": "1000000",
                "MAILER_API_RATE_BURST": "1000000",
            }
        )
        async with connect(url, max_size=4) as pool:
            store = CampaignStore(pool, audience_parts=2)
            campaign = await store.campaign_insert_minimal("bench1", topic)
            frozen = await store.freeze_audience(campaign, AT)
            await add_operator(
                ConsoleStore(pool), settings, "bench@example.com", Role.VIEWER,
                password=PASSWORD, actor="bench",
            )  # fmt: skip
        recipients = frozen.added
        if 0 < args.recipients < frozen.added:
            # The campaign: 100,000 recipients out of the 1 M contacts. The audience
            # is frozen whole (as a launch does); its rows past the first N (by id) become an
            # earlier campaign's, finished and sent, so the table holds history as it would
            # (and the planner sees the running campaign as the part of it that it is).
            earlier = await conn.fetchval(
                "INSERT INTO campaigns (slug, name, topic_id, definition, status, started_at,"
                " finished_at) SELECT 'bench0', 'earlier', topic_id, definition, 'done',"
                " now() - interval '30 days', now() - interval '29 days' FROM campaigns"
                " WHERE id = $1 RETURNING id",
                campaign,
            )
            await conn.execute(
                "UPDATE deliveries SET campaign_id = $3, status = 'sent' WHERE campaign_id = $1"
                " AND id > (SELECT id FROM deliveries WHERE campaign_id = $1 ORDER BY id"
                " OFFSET $2 - 1 LIMIT 1)",
                campaign,
                args.recipients,
                earlier,
            )
            recipients = args.recipients
        await conn.execute("UPDATE campaigns SET status = 'running' WHERE id = $1", campaign)
        await conn.execute(
            "UPDATE deliveries SET status = 'sent' WHERE campaign_id = $1 AND id % 2 = 0", campaign
        )
        # The ledger's history as it would be: each row recorded when obtained (not all
        # today), so "the last 24 hours" holds a day's opt-outs, not every one ever made.
        # (A scratch database: the append-only trigger is bypassed for this one rewrite.)
        await conn.execute("SET session_replication_role = replica")
        await conn.execute("UPDATE consents SET recorded_at = obtained_at")
        await conn.execute("RESET session_replication_role")
        # Opens on a fifth of the sent messages (a third by machines), so the contact page
        # has events to list; the contact shown is one of those readers.
        await conn.execute(
            "INSERT INTO events (occurred_at, kind, delivery_id, campaign_id, machine)"
            " SELECT now() - (id % 1000) * interval '1 minute', 'open', id, campaign_id,"
            " id % 3 = 0 FROM deliveries WHERE campaign_id = $1 AND status = 'sent'"
            " AND id % 5 = 0",
            campaign,
        )
        await conn.execute("VACUUM ANALYZE")
        built = time.perf_counter() - started
        if args.explain:
            # What the dashboard and the campaign page wait on: the running campaign's
            # deliveries counted by state, per campaign and for the dashboard's list.
            for name, params in (
                ("campaign_status_counts", (campaign,)),
                ("campaigns_overview", (5, False)),  # as the dashboard asks
            ):
                plan = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + CAMPAIGN_SQL(name), *params)
                print(f"-- {name}\n" + "\n".join(row[0] for row in plan))
            # The same count with the claim's index as it was before it carried the state
            # (rolled back: the timings below use the migrated index).
            trial = conn.transaction()
            await trial.start()
            try:
                await conn.execute("DROP INDEX deliveries_claimable_idx")
                await conn.execute(
                    "CREATE INDEX deliveries_claimable_idx ON deliveries"
                    " (campaign_id, next_attempt_at, id) WHERE status IN ('queued', 'deferred')"
                )
                await conn.execute("ANALYZE deliveries")
                for _ in range(2):
                    plan = await conn.fetch(
                        "EXPLAIN (ANALYZE, BUFFERS) " + CAMPAIGN_SQL("campaign_status_counts"),
                        campaign,
                    )
                print("-- campaign_status_counts, index without the state\n"
                      + "\n".join(row[0] for row in plan))  # fmt: skip
            finally:
                await trial.rollback()
        load_now = os.getloadavg()[0]
        print(f"data built in {built:.0f} s; load average {load_now:.1f} as the timings start")
        contact = await conn.fetchval(
            "SELECT c.email FROM contacts c JOIN deliveries d ON d.contact_id = c.id"
            " WHERE d.status = 'sent' AND d.id % 5 = 0 ORDER BY d.id OFFSET 100 LIMIT 1"
        )
        await conn.close()

        app = create_app(settings)
        json_routes(app)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        base = str(server.make_url("")).rstrip("/")
        # The operator API of #19 on the same data: its campaign status and contact story.
        async with connect(url, max_size=1) as pool:
            _, key = await ApiStore(pool).key_create(
                "bench", ["campaigns:read", "contacts:read"], None
            )
        api_server = TestServer(create_api_app(settings, dispatch_webhooks=False), host="127.0.0.1")
        await api_server.start_server()
        api_base = str(api_server.make_url("")).rstrip("/")
        try:
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
                async with session.get(f"{base}/login") as page:
                    csrf = (await page.text()).split('name="csrf" value="')[1].split('"')[0]
                form = {"email": "bench@example.com", "password": PASSWORD, "csrf": csrf}
                async with session.post(f"{base}/login", data=form) as response:
                    assert response.status == 200
                # The slow reads run in the background (console/background.py): how long
                # until the dashboard has its unsubscribe-SLA verdict and the live audience
                # its counts, from a cold start; then the pages as operators then see them.
                ready = {
                    "sla": await until_shown(session, f"{base}/", "Unsubscribe SLA checked"),
                    "audience": await until_shown(
                        session, f"{base}/campaigns/bench1/audience?live=1", 'id="reasons"'
                    ),
                }
                pages = {
                    "dashboard": ("/", "/json/dashboard", args.requests),
                    "campaign": ("/campaigns/bench1", "/json/campaigns/bench1", args.requests),
                    "audience": (
                        "/campaigns/bench1/audience",
                        "/json/campaigns/bench1",
                        args.requests,
                    ),
                    "audience live": (
                        "/campaigns/bench1/audience?live=1",
                        "/json/campaigns/bench1/audience",
                        max(5, args.requests // 8),
                    ),
                    "contact": (f"/contacts/{contact}", f"/json/contacts/{contact}", args.requests),
                    "sla check": ("/", "/json/sla", max(5, args.requests // 8)),
                }
                results = {}
                for name, (page_path, json_path, n) in pages.items():
                    await timings(session, base + page_path, 2)  # warm: plans, connections
                    await timings(session, base + json_path, 2)
                    results[name] = (
                        await timings(session, base + page_path, n),
                        await timings(session, base + json_path, n),
                        n,
                    )
                queries = dict(app[CONSOLE].queries_by_route)
            api = {}
            headers = {"Authorization": f"Bearer {key}"}
            async with aiohttp.ClientSession(headers=headers) as session:
                for name, path in (
                    ("campaign", "/api/v1/campaigns/bench1"),
                    ("contact", f"/api/v1/contacts/{contact}"),
                ):
                    await timings(session, api_base + path, 2)
                    api[name] = await timings(session, api_base + path, args.requests)
        finally:
            await server.close()
            await api_server.close()
    finally:
        await drop_database(dsn, url)

    print(
        f"\nconsole pages over {args.contacts:,} contacts, a running campaign of "
        f"{recipients:,} deliveries (half sent); data built in {built:.0f} s; "
        f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    print(f"{'page':12}{'n':>5}{'p50 ms':>9}{'p99 ms':>9}{'JSON p50':>10}{'JSON p99':>10}"
          f"{'p99/JSON':>10}{'queries':>9}{'p99<=300':>10}")  # fmt: skip
    for name, (html, data, n) in results.items():
        route = {"audience live": "audience", "sla check": "dashboard"}.get(name, name)
        print(
            f"{name:12}{n:>5}{p(html, 0.5):>9.1f}{p(html, 0.99):>9.1f}{p(data, 0.5):>10.1f}"
            f"{p(data, 0.99):>10.1f}{p(html, 0.99) / p(data, 0.99):>10.2f}"
            f"{queries.get(route, 0):>9}{'yes' if p(html, 0.99) <= 300 else 'NO':>10}"
        )
    print(
        f"background reads ready after a cold start: SLA verdict {ready['sla']:.2f} s, "
        f"live audience {ready['audience']:.2f} s"
    )
    for name, spent in api.items():
        print(f"API {name:8}{len(spent):>5}{p(spent, 0.5):>9.1f}{p(spent, 0.99):>9.1f}")
    print(
        f"(p99 of {args.requests} requests is their maximum but one; audience live: fewer; "
        "the frozen audience page is compared with the campaign's JSON, the live one with "
        "audience_breakdown's (computed in the background, the page shows the last result); "
        "sla check: the dashboard page against unsubscribe_sla's JSON)"
    )


if __name__ == "__main__":
    asyncio.run(main())
