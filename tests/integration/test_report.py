"""Campaign reports: the figures add up to the ledger, whatever order events, folds and
open transactions come in; the renderings are exact, self-contained and round-trip."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import random
import re
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from rich.console import Console

from mailer.commands.campaign_views import campaign_report
from mailer.core.addresses import address_hash
from mailer.core.settings import Settings
from mailer.demo.stores import Stores
from mailer.report import figures as report
from mailer.report import html
from mailer.report.document import figures_from_json, render_json
from mailer.report.figures import Engagement, HourFigures, ReportFigures
from mailer.report.html import render_html
from mailer.report.terminal import render_rich

AT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
# The hostile link checks escaping; the others are ordinary tracked links.
URLS = (
    "https://garage.example/rdv?car=rav4&slot=1",
    "http://garage.example/promo",
    'https://evil.example/?q="><script>alert(1)</script>',
)
# Final and in-flight states of a frozen audience of 40, as the engine leaves them.
STATES = (
    ["sent"] * 26
    + ["deferred"] * 2
    + ["bounced"] * 3
    + ["failed"] * 1
    + ["skipped"] * 3
    + ["uncertain"] * 2
    + ["queued"] * 1
    + ["claimed"] * 1
    + ["sending"] * 1
)

Event = tuple[datetime, str, int, int | None, bool]  # occurred_at, kind, delivery, link, machine


@dataclass(frozen=True)
class World:
    campaign_id: int
    slug: str
    deliveries: list[int]  # ids, in STATES order
    links: list[int]


async def build_world(stores: Stores, conn: asyncpg.Connection, slug: str = "spring") -> World:
    """A frozen campaign: 40 eligible contacts, 8 excluded, deliveries in every state.

    Its opt-in topic keeps other worlds' contacts out of its audience.
    """
    topic = await stores.contacts.topic_upsert(slug, f"News {slug}", default_subscribed=False)
    for i in range(48):
        email = f"{slug}{i}@example.com"
        cid = await conn.fetchval(
            "INSERT INTO contacts (email, email_hash) VALUES ($1, $2) RETURNING id",
            email,
            address_hash(email),
        )
        await conn.execute(
            "INSERT INTO contact_topics (contact_id, topic_id, subscribed, source)"
            " VALUES ($1, $2, true, 'test')",
            cid,
            topic,
        )
        if i < 40:  # the others have no consent on record
            await conn.execute(
                "INSERT INTO consents (contact_id, channel, action, kind, source, obtained_at) "
                "VALUES ($1, 'email', 'grant', 'express', 'Salon E-commerce Paris', $2)",
                cid,
                AT - timedelta(days=30),
            )
    campaign = await stores.campaigns.campaign_insert_minimal(slug, topic)
    await stores.campaigns.freeze_audience(campaign, AT)
    ids = [
        r["id"]
        for r in await conn.fetch(
            "SELECT id FROM deliveries WHERE campaign_id = $1 ORDER BY id", campaign
        )
    ]
    await conn.execute(
        """
        UPDATE deliveries d
        SET status = s.status,
            skip_reason = CASE s.status WHEN 'skipped' THEN
                              (ARRAY['cancelled', 'consent_withdrawn'])[1 + s.n % 2] END,
            smtp_code = CASE s.status WHEN 'bounced' THEN 550 WHEN 'failed' THEN 554
                                      WHEN 'deferred' THEN 451 END
        FROM unnest($1::bigint[], $2::text[]) WITH ORDINALITY AS s (id, status, n)
        WHERE d.id = s.id
        """,
        ids,
        STATES,
    )
    links = await stores.send.links_register(campaign, list(URLS))
    return World(campaign, slug, ids, [links[u] for u in URLS])


async def add_events(conn: asyncpg.Connection, campaign_id: int, events: list[Event]) -> None:
    """Write events the way the tracker does: a batch by COPY, in one transaction."""
    await conn.copy_records_to_table(
        "events",
        records=[
            (at, kind, d, campaign_id, link, machine) for at, kind, d, link, machine in events
        ],
        columns=("occurred_at", "kind", "delivery_id", "campaign_id", "link_id", "machine"),
    )


def some_events(world: World, rng: random.Random, count: int) -> list[Event]:
    """Opens and clicks on sent deliveries: people, proxies and scanners, over two days."""
    sent = [d for d, s in zip(world.deliveries, STATES, strict=True) if s == "sent"]
    out: list[Event] = []
    for _ in range(count):
        at = AT + timedelta(minutes=rng.randrange(0, 48 * 60))
        delivery = rng.choice(sent[:20])  # some deliveries never engage
        if rng.random() < 0.6:
            out.append((at, "open", delivery, None, rng.random() < 0.4))
        else:
            out.append((at, "click", delivery, rng.choice(world.links), rng.random() < 0.25))
    return out


# ---------------------------------------------------------------- the ledger, counted plainly


def engagement(row: asyncpg.Record | None) -> Engagement:
    if row is None:
        return Engagement()
    return Engagement(row["human"], row["machine"], row["unique_all"], row["unique_human"])


# The plain count of one group of events: what the rollups must agree with.
ENGAGEMENT = """
    SELECT {key}, count(*) FILTER (WHERE NOT machine) AS human,
           count(*) FILTER (WHERE machine) AS machine,
           count(DISTINCT delivery_id) AS unique_all,
           count(DISTINCT delivery_id) FILTER (WHERE NOT machine) AS unique_human
    FROM events WHERE campaign_id = $1 {where} GROUP BY 1
"""
BY_KIND = ENGAGEMENT.format(key="kind", where="")
BY_LINK = ENGAGEMENT.format(key="link_id", where="AND kind = 'click'")


async def assert_matches_ledger(
    conn: asyncpg.Connection, figures: ReportFigures, world: World
) -> None:
    """Every figure of the report equals the same figure counted directly from the tables."""
    c = world.campaign_id
    outcomes = {
        r["status"]: r["n"]
        for r in await conn.fetch(
            "SELECT status, count(*) AS n FROM deliveries WHERE campaign_id = $1 GROUP BY 1", c
        )
    }
    assert {k: v for k, v in figures.outcomes.items() if v} == outcomes
    kinds = {r["kind"]: engagement(r) for r in await conn.fetch(BY_KIND, c)}
    assert figures.opens == kinds.get("open", Engagement())
    assert figures.clicks == kinds.get("click", Engagement())
    per_link = {r["link_id"]: engagement(r) for r in await conn.fetch(BY_LINK, c)}
    assert {x.link_id: x.clicks for x in figures.links} == {
        link: per_link.get(link, Engagement()) for link in world.links
    }
    hours = await conn.fetch(
        "SELECT date_trunc('hour', occurred_at, 'UTC') AS hour,"
        " count(*) FILTER (WHERE kind = 'open' AND NOT machine) AS oh,"
        " count(*) FILTER (WHERE kind = 'open' AND machine) AS om,"
        " count(*) FILTER (WHERE kind = 'click' AND NOT machine) AS ch,"
        " count(*) FILTER (WHERE kind = 'click' AND machine) AS cm "
        "FROM events WHERE campaign_id = $1 GROUP BY 1 ORDER BY 1",
        c,
    )
    assert figures.hourly == tuple(HourFigures(r[0], r[1], r[2], r[3], r[4]) for r in hours)


async def rollup_event_count(conn: asyncpg.Connection, campaign_id: int) -> int:
    """Events already folded into the kept rollups (not counting a report's live tail)."""
    return int(
        await conn.fetchval(
            "SELECT coalesce(sum(human_events + machine_events), 0) FROM report_totals "
            "WHERE campaign_id = $1 AND link_id = 0",
            campaign_id,
        )
    )


async def settle(stores: Stores, conn: asyncpg.Connection, world: World, events: int) -> None:
    """Report until `events` are kept in the rollups, and check none is kept twice.

    Other tests share the cluster: a write transaction of theirs holds the fold's horizon
    (transaction ids are cluster-wide) until it ends; the report stays exact meanwhile.
    """
    deadline = time.monotonic() + 30
    while (kept := await rollup_event_count(conn, world.campaign_id)) < events:
        assert time.monotonic() < deadline, "a transaction elsewhere held the horizon for 30 s"
        await asyncio.sleep(0.05)
        await report.figures(stores.report, world.campaign_id)
    assert kept == events


# ---------------------------------------------------------------- adding up


async def test_the_report_adds_up_to_the_ledger_and_the_frozen_audience(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    world = await build_world(stores, conn)
    await add_events(conn, world.campaign_id, some_events(world, random.Random(1), 300))

    figures = await report.figures(stores.report, world.campaign_id)

    await assert_matches_ledger(conn, figures, world)
    assert figures.audience == {"eligible": 40, "no_consent": 8}
    assert figures.deliveries == 40
    assert figures.adds_up
    assert figures.outcomes["sent"] == 26
    assert figures.outcomes["claimed"] == figures.outcomes["sending"] == 1
    assert figures.outcome_details["bounced"] == {"SMTP 550": 3}
    assert figures.outcome_details["skipped"] == {"consent_withdrawn": 2, "cancelled": 1}
    assert figures.rates()["click_through_rate"] == figures.clicks.unique_all / 26


async def test_each_event_is_folded_once_and_later_events_are_added_even_when_stamped_earlier(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    world = await build_world(stores, conn)
    rng = random.Random(2)
    await add_events(conn, world.campaign_id, some_events(world, rng, 200))
    await settle(stores, conn, world, 200)  # folded: the mark is past these events
    first = await report.figures(stores.report, world.campaign_id)
    second = await report.figures(stores.report, world.campaign_id)
    assert replace(second, generated_at=first.generated_at) == first  # nothing counted twice

    # A batch the tracker kept through an outage arrives late, stamped with the hit's time.
    sent = world.deliveries[0]
    late: list[Event] = [
        (AT - timedelta(hours=1), "open", sent, None, False),
        (AT + timedelta(minutes=1), "click", sent, world.links[2], True),
    ]
    await add_events(conn, world.campaign_id, late + some_events(world, rng, 100))
    again = await report.figures(stores.report, world.campaign_id)

    await assert_matches_ledger(conn, again, world)
    assert again.hourly[0].hour == AT - timedelta(hours=1)  # the late open, in its own hour
    await settle(stores, conn, world, 302)
    await assert_matches_ledger(conn, await report.figures(stores.report, world.campaign_id), world)


async def test_a_machine_only_delivery_becomes_a_unique_human_at_its_first_human_event(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    world = await build_world(stores, conn)
    d = world.deliveries[0]
    await add_events(conn, world.campaign_id, [(AT, "open", d, None, True)] * 3)
    before = await report.figures(stores.report, world.campaign_id)
    assert before.opens == Engagement(0, 3, 1, 0)

    await add_events(conn, world.campaign_id, [(AT, "open", d, None, False)] * 2)
    after = await report.figures(stores.report, world.campaign_id)
    assert after.opens == Engagement(2, 3, 1, 1)


async def test_events_committed_after_the_fold_horizon_are_counted_but_not_kept(
    stores: Stores, conn: asyncpg.Connection, db_url: str
) -> None:
    world = await build_world(stores, conn)
    await add_events(conn, world.campaign_id, some_events(world, random.Random(3), 50))
    # A long transaction elsewhere (an import, say) holds the horizon back.
    other = await asyncpg.connect(db_url)
    try:
        held = other.transaction()
        await held.start()
        await other.fetchval("SELECT pg_current_xact_id()")
        await add_events(conn, world.campaign_id, some_events(world, random.Random(4), 40))

        figures = await report.figures(stores.report, world.campaign_id)
        await assert_matches_ledger(conn, figures, world)
        assert await rollup_event_count(conn, world.campaign_id) <= 50  # the 40 stay a tail
        await held.commit()
    finally:
        await other.close()

    await assert_matches_ledger(conn, await report.figures(stores.report, world.campaign_id), world)
    await settle(stores, conn, world, 90)


async def test_a_tracker_batch_still_uncommitted_during_a_report_is_counted_once_it_commits(
    stores: Stores, conn: asyncpg.Connection, db_url: str
) -> None:
    world = await build_world(stores, conn)
    tracker = await asyncpg.connect(db_url)
    try:
        batch = tracker.transaction()
        await batch.start()
        await add_events(tracker, world.campaign_id, some_events(world, random.Random(5), 30))
        await add_events(conn, world.campaign_id, some_events(world, random.Random(6), 20))

        during = await report.figures(stores.report, world.campaign_id)
        assert during.opens.events + during.clicks.events == 20
        await batch.commit()
    finally:
        await tracker.close()

    after = await report.figures(stores.report, world.campaign_id)
    assert after.opens.events + after.clicks.events == 50
    await assert_matches_ledger(conn, after, world)


async def test_any_interleaving_of_batches_open_transactions_and_reports_adds_up(
    stores: Stores, conn: asyncpg.Connection, db_url: str
) -> None:
    tracker = await asyncpg.connect(db_url)
    try:
        for seed in range(8):
            rng = random.Random(seed)
            world = await build_world(stores, conn, slug=f"run{seed}")
            pending: list[asyncpg.transaction.Transaction] = []
            for _ in range(10):
                step = rng.random()
                if step < 0.4:
                    await add_events(conn, world.campaign_id, some_events(world, rng, 15))
                elif step < 0.55 and not pending:
                    pending.append(tracker.transaction())
                    await pending[-1].start()
                    await add_events(tracker, world.campaign_id, some_events(world, rng, 15))
                elif step < 0.7 and pending:
                    await pending.pop().commit()
                else:
                    figures = await report.figures(stores.report, world.campaign_id)
                    await assert_matches_ledger(conn, figures, world)
            while pending:
                await pending.pop().commit()
            await assert_matches_ledger(
                conn, await report.figures(stores.report, world.campaign_id), world
            )
    finally:
        await tracker.close()


async def test_concurrent_reports_of_one_campaign_never_count_an_event_twice(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    world = await build_world(stores, conn)
    await add_events(conn, world.campaign_id, some_events(world, random.Random(7), 400))

    results = await asyncio.gather(
        *(report.figures(stores.report, world.campaign_id) for _ in range(4))
    )

    for figures in results:
        await assert_matches_ledger(conn, figures, world)
    assert await rollup_event_count(conn, world.campaign_id) <= 400
    await settle(stores, conn, world, 400)


async def test_a_report_reads_folded_events_from_the_rollups_not_from_the_events_table(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    world = await build_world(stores, conn)
    await add_events(conn, world.campaign_id, some_events(world, random.Random(8), 100))
    await settle(stores, conn, world, 100)
    before = await report.figures(stores.report, world.campaign_id)
    # As when an old month's partition is detached: the report keeps its figures.
    await conn.execute("DELETE FROM events")

    after = await report.figures(stores.report, world.campaign_id)
    assert (after.opens, after.clicks, after.links, after.hourly) == (
        before.opens,
        before.clicks,
        before.links,
        before.hourly,
    )


# ---------------------------------------------------------------- opt-outs and complaints


async def withdraw(
    conn: asyncpg.Connection,
    world: World,
    contact: int,
    channel: str,
    *,
    method: str,
    reason: str | None = None,
    topic: int | None = None,
) -> None:
    """A withdraw row as the tracker writes it: evidence names the delivery and campaign."""
    delivery = await conn.fetchval(
        "SELECT id FROM deliveries WHERE campaign_id = $1 AND contact_id = $2",
        world.campaign_id,
        contact,
    )
    evidence = {
        "delivery_id": delivery,
        "campaign_id": world.campaign_id,
        "method": method,
        "reason": reason,
    }
    await conn.execute(
        "INSERT INTO consents (contact_id, channel, action, topic_id, source, obtained_at,"
        " evidence) VALUES ($1, $2, 'withdraw', $3, $4, now(), $5)",
        contact,
        channel,
        topic,
        method,
        json.dumps(evidence),
    )


async def test_unsubscribes_count_each_person_once_by_scope_method_and_reason(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    world = await build_world(stores, conn)
    other = await build_world(stores, conn, slug="autumn")
    contacts = [
        r["contact_id"]
        for r in await conn.fetch(
            "SELECT contact_id FROM deliveries WHERE campaign_id = $1 ORDER BY id",
            world.campaign_id,
        )
    ]
    # A digital opt-out writes one row per digital channel: still one person.
    for channel in ("email", "sms"):
        await withdraw(conn, world, contacts[0], channel, method="one-click")
    await withdraw(conn, world, contacts[1], "email", method="form", reason="Too many emails")
    await withdraw(conn, world, contacts[2], "email", method="form", reason="Too many emails")
    topic = await conn.fetchval("SELECT topic_id FROM campaigns WHERE id = $1", world.campaign_id)
    await withdraw(conn, world, contacts[3], "email", method="preference centre", topic=topic)
    other_contact = await conn.fetchval(
        "SELECT contact_id FROM deliveries WHERE campaign_id = $1 LIMIT 1", other.campaign_id
    )
    await withdraw(conn, other, other_contact, "email", method="one-click")

    u = (await report.figures(stores.report, world.campaign_id)).unsubscribes

    assert u.people == 4
    assert u.by_scope == {"email": 3, "sms": 1, "topic": 1}
    assert u.by_method == {"form": 2, "one-click": 1, "preference centre": 1}
    assert u.reasons == {"Too many emails": 2}


async def test_complaints_are_attributed_through_the_delivery_or_campaign_they_name(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    world = await build_world(stores, conn)
    other = await build_world(stores, conn, slug="autumn")
    details = [
        {"delivery_id": world.deliveries[0]},  # an ARF report matched by VERP
        {"campaign_id": world.campaign_id},
        {"delivery_id": other.deliveries[0]},  # another campaign's
        {"delivery_id": "not a number"},  # free-form detail must not break the report
    ]
    for i, detail in enumerate(details):
        await conn.execute(
            "INSERT INTO suppressions (email_hash, scope, channel, reason, source, detail)"
            " VALUES ($1, 'channel', 'email', 'complaint', 'arf', $2)",
            address_hash(f"complainer{i}@example.com"),
            json.dumps(detail),
        )

    assert (await report.figures(stores.report, world.campaign_id)).complaints == 2


# ---------------------------------------------------------------- renderings


@pytest.fixture
async def figures(stores: Stores, conn: asyncpg.Connection) -> ReportFigures:
    world = await build_world(stores, conn)
    await add_events(conn, world.campaign_id, some_events(world, random.Random(9), 250))
    return await report.figures(stores.report, world.campaign_id)


def test_the_html_page_is_self_contained_and_lists_tracked_links_only_as_text(
    figures: ReportFigures,
) -> None:
    page = render_html(figures)

    assert "<svg" in page
    assert "<polyline" in page
    assert "<rect" in page
    assert not re.search(r"<(script|img|link|iframe|object|embed|a)\b", page, re.IGNORECASE)
    assert not re.search(r"\b(src|href|action)\s*=|url\(|@import", page, re.IGNORECASE)
    for url in URLS:
        assert f"<td>{html._e(url)}</td>" in page
    # Outside the listed links, the page names no address to fetch anything from.
    stripped = page
    for url in URLS:
        stripped = stripped.replace(html._e(url), "")
    assert not re.search(r"(https?:)?//[a-z0-9]", stripped, re.IGNORECASE)
    assert "default-src 'none'" in page


def test_the_json_output_round_trips_to_the_same_figures(figures: ReportFigures) -> None:
    text = render_json(figures)
    assert figures_from_json(text) == figures
    data = json.loads(text)
    assert data["totals"] == {"deliveries": 40, "eligible": 40, "excluded": 8, "adds_up": True}
    assert data["rates"]["bounce_rate"] == 3 / 29


def test_the_terminal_report_shows_outcomes_engagement_and_links(figures: ReportFigures) -> None:
    console = Console(record=True, width=160)
    console.print(render_rich(figures))
    text = console.export_text()

    for title in ("Audience", "Deliveries", "Opens and clicks", "Links", "Unsubscribes"):
        assert title in text
    assert re.search(r"sent\s+│\s+26\s+│\s+65\.0%", text)
    assert URLS[2] in text  # shown as text, markup and all
    assert f"{figures.opens.unique_human:,}" in text


async def test_the_report_command_prints_json_and_writes_the_html_page(
    stores: Stores,
    conn: asyncpg.Connection,
    tmp_path: Path,
    settings: Settings,
    printed: io.StringIO,
) -> None:
    world = await build_world(stores, conn)
    page = tmp_path / "spring.html"
    args = argparse.Namespace(campaign=world.slug, html=str(page), json=True)

    assert await campaign_report(args, settings) == 0

    document = json.loads(printed.getvalue())
    assert document["slug"] == "spring"
    assert document["outcomes"]["sent"] == 26
    assert page.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


async def test_the_report_command_names_an_unknown_campaign(
    settings: Settings, printed: io.StringIO
) -> None:
    args = argparse.Namespace(campaign="nope", html=None, json=False)
    assert await campaign_report(args, settings) == 2
    assert "no campaign 'nope'" in printed.getvalue()


# ---------------------------------------------------------------- pure parts


def test_the_timeline_fills_silent_hours_and_widens_its_buckets_to_fit() -> None:
    hours = [
        HourFigures(AT, opens_human=1),
        HourFigures(AT + timedelta(hours=3), clicks_machine=2),
        HourFigures(AT + timedelta(hours=5), opens_machine=4),
    ]
    step, points = report.timeline(hours, 10)
    assert step == timedelta(hours=1)
    assert [p.opens_human + p.opens_machine for p in points] == [1, 0, 0, 0, 0, 4]

    step, points = report.timeline(hours, 3)
    assert step == timedelta(hours=2)
    assert points == [
        HourFigures(AT, 1, 0, 0, 0),
        HourFigures(AT + timedelta(hours=2), 0, 0, 0, 2),
        HourFigures(AT + timedelta(hours=4), 0, 4, 0, 0),
    ]
    assert report.timeline([], 10) == (timedelta(hours=1), [])


def test_a_report_with_fewer_deliveries_than_eligible_contacts_says_it_does_not_add_up(
    figures: ReportFigures,
) -> None:
    broken = replace(figures, audience={"eligible": 41})
    assert not broken.adds_up
    assert "40 deliveries for 41 eligible contacts" in render_html(broken)
