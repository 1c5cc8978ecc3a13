"""Outgoing webhooks end to end: changes committed → outbox (same transaction) → dispatcher
→ a real local receiver that verifies every signature with the reference library."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from mailer.core.settings import WebhookSettings
from mailer.demo.stores import Stores
from mailer.optouts.rules import DIGITAL
from mailer.optouts.store import OptOutStore, Withdrawal
from mailer.webhooks.dispatcher import WebhookMetrics, dispatch
from mailer.webhooks.store import WebhookStore
from tests.cli_run import run_cli
from tests.engine_setup import add_contacts, sample_campaign
from tests.webhook_receiver import Receiver, receiving

FAST = WebhookSettings(retry_base_s=0.01, retry_max_s=0.05, poll_s=0.05)
ALL = (
    "contact.unsubscribed,contact.consent.granted,contact.consent.withdrawn,"
    "delivery.bounced,delivery.complained,campaign.paused,campaign.finished"
)


async def add_endpoint(
    monkeypatch: pytest.MonkeyPatch, db_url: str, receiver: Receiver, events: str = ALL
) -> int:
    code, out = await run_cli(
        monkeypatch, db_url, "webhooks", "add", receiver.url, "--events", events
    )
    assert code == 0, out
    found = re.search(r"signing secret: (whsec_\S+)", out)
    assert found is not None, out
    receiver.secret = found.group(1)
    endpoint = re.search(r"endpoint (\d+)", out)
    assert endpoint is not None
    return int(endpoint.group(1))


async def import_contacts(
    monkeypatch: pytest.MonkeyPatch, db_url: str, tmp_path: Path, emails: list[str]
) -> None:
    csv = tmp_path / "contacts.csv"
    lines = ["email,consent,consent_source,consent_date"]
    lines += [f"{e},express,website,2026-01-05" for e in emails]
    csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, out = await run_cli(monkeypatch, db_url, "contacts", "import", str(csv))
    assert code == 0, out


async def opt_out(pool: asyncpg.Pool, contact_id: int) -> None:
    """An opt-out as every door makes one (tracker, inbound, API): mailer.optouts."""
    async with pool.acquire() as conn, conn.transaction():
        changed = await OptOutStore.opt_out(
            conn,
            Withdrawal(
                contact_id=contact_id,
                channels=[c.value for c in DIGITAL],
                topic_ids=(),
                source="test",
                evidence={"why": "test"},
            ),
        )
        assert changed


async def run_until(
    stores: Stores, settings: WebhookSettings, done: Callable[[], Awaitable[bool] | bool]
) -> WebhookMetrics:
    """Run a dispatcher until `done()` (checked every 50 ms; 30 s at most)."""
    metrics = WebhookMetrics(CollectorRegistry())
    stop = asyncio.Event()
    task = asyncio.create_task(dispatch(WebhookStore(stores.pool), settings, metrics, stop))
    try:
        async with asyncio.timeout(30):
            while True:
                answer = done()
                if answer if isinstance(answer, bool) else await answer:
                    break
                assert not task.done(), task
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task
    return metrics


def by_contact(payloads: list[dict[str, Any]]) -> dict[int, list[str]]:
    seen: dict[int, list[str]] = defaultdict(list)
    for p in payloads:
        seen[p["data"]["contact"]["id"]].append(p["type"])
    return dict(seen)


async def test_a_receiver_failing_five_times_gets_every_event_signed_and_in_order_per_contact(
    monkeypatch: pytest.MonkeyPatch, db_url: str, tmp_path: Path, stores: Stores
) -> None:
    async with receiving(Receiver(fail_first=5)) as receiver:
        await add_endpoint(monkeypatch, db_url, receiver)
        emails = [f"p{i}@example.com" for i in range(3)]
        await import_contacts(monkeypatch, db_url, tmp_path, emails)
        ids = [r[0] for r in await stores.pool.fetch("SELECT id FROM contacts ORDER BY id")]
        for contact_id in ids:
            await opt_out(stores.pool, contact_id)
        total = await stores.pool.fetchval("SELECT count(*) FROM webhook_events")
        metrics = await run_until(stores, FAST, lambda: len(receiver.unique) == total)

    withdrawn = ["contact.consent.withdrawn"] * len(DIGITAL)
    expected = ["contact.consent.granted", *withdrawn, "contact.unsubscribed"]
    assert by_contact(receiver.received) == {i: expected for i in ids}
    assert set(receiver.attempts.values()) == {6}  # five 503s, then the 2xx
    assert receiver.forged == 0
    first = receiver.received[0]
    assert first["data"]["contact"]["email"] == "p0@example.com"
    assert first["data"]["source"] == "website"
    assert metrics.deliveries.labels("delivered")._value.get() == total
    assert metrics.deliveries.labels("retry")._value.get() == 5 * total


async def test_nothing_is_written_to_the_outbox_while_no_endpoint_subscribes(
    monkeypatch: pytest.MonkeyPatch, db_url: str, tmp_path: Path, stores: Stores
) -> None:
    await import_contacts(monkeypatch, db_url, tmp_path, ["a@example.com", "b@example.com"])
    contact_id = await stores.pool.fetchval("SELECT min(id) FROM contacts")
    await opt_out(stores.pool, contact_id)
    assert await stores.pool.fetchval("SELECT count(*) FROM webhook_events") == 0


async def test_an_opt_out_rolled_back_leaves_no_event(
    monkeypatch: pytest.MonkeyPatch, db_url: str, tmp_path: Path, stores: Stores
) -> None:
    async with receiving(Receiver()) as receiver:
        await add_endpoint(monkeypatch, db_url, receiver, "contact.unsubscribed")
    await import_contacts(monkeypatch, db_url, tmp_path, ["a@example.com"])
    contact_id = await stores.pool.fetchval("SELECT min(id) FROM contacts")

    async def opt_out_then_fail() -> None:
        async with stores.pool.acquire() as conn, conn.transaction():
            await OptOutStore.opt_out(
                conn, Withdrawal(contact_id, ["email"], (), "test", {}, None, None)
            )
            assert await conn.fetchval("SELECT count(*) FROM webhook_events") == 1
            raise RuntimeError("the change fails after the event was written")

    with pytest.raises(RuntimeError):
        await opt_out_then_fail()
    assert await stores.pool.fetchval("SELECT count(*) FROM webhook_events") == 0


async def test_an_endpoint_failing_for_the_whole_window_is_disabled_then_enabled_and_replayed(
    monkeypatch: pytest.MonkeyPatch, db_url: str, tmp_path: Path, stores: Stores
) -> None:
    async with receiving(Receiver(fail_first=10**6)) as receiver:
        endpoint = await add_endpoint(monkeypatch, db_url, receiver, "contact.consent.granted")
        await import_contacts(monkeypatch, db_url, tmp_path, ["a@example.com"])
        short = dataclasses.replace(FAST, retry_hours=0.5 / 3600)
        webhooks = WebhookStore(stores.pool)

        async def disabled() -> bool:
            return (await webhooks.endpoint_list())[0].disabled_at is not None

        await run_until(stores, short, disabled)
        code, out = await run_cli(monkeypatch, db_url, "webhooks", "list")
        assert "DISABLED" in out
        assert "1 " in out  # the failed event is counted

        receiver.fail_first = 0
        assert (await run_cli(monkeypatch, db_url, "webhooks", "enable", str(endpoint)))[0] == 0
        code, out = await run_cli(
            monkeypatch, db_url, "webhooks", "replay", str(endpoint), "--since", "2000-01-01"
        )
        assert code == 0
        assert "1 event(s) queued again" in out
        await run_until(stores, FAST, lambda: len(receiver.received) == 1)
    assert receiver.received[0]["type"] == "contact.consent.granted"


async def test_bounces_complaints_and_campaign_pauses_reach_the_outbox_with_their_change(
    monkeypatch: pytest.MonkeyPatch, db_url: str, stores: Stores, conn: asyncpg.Connection
) -> None:
    """The engine's first-hop 5xx and inbound's hard DSN both set a delivery `bounced`;
    inbound records complaints; the guard, an operator or the API pauses a campaign: the
    events are written by the same statements (triggers), whoever makes the change."""
    async with receiving(Receiver()) as receiver:
        events = "delivery.bounced,delivery.complained,campaign.paused,campaign.finished"
        await add_endpoint(monkeypatch, db_url, receiver, events)
    await add_contacts(conn, 3)
    campaign_id = await sample_campaign(stores)
    first, second, _ = [
        r[0] for r in await conn.fetch(
            "SELECT id FROM deliveries WHERE campaign_id = $1 ORDER BY id", campaign_id)
    ]  # fmt: skip
    await conn.execute(
        "UPDATE deliveries SET status = 'bounced', smtp_code = 550 WHERE id = $1", first
    )
    await conn.execute("UPDATE deliveries SET status = 'sent' WHERE id = $1", second)
    await conn.execute(
        "INSERT INTO complaints (delivery_id, campaign_id, inbound_id, feedback_type) "
        "VALUES ($1, $2, 1, 'abuse')",
        second,
        campaign_id,
    )
    slug = await conn.fetchval("SELECT slug FROM campaigns WHERE id = $1", campaign_id)
    assert (await run_cli(monkeypatch, db_url, "campaign", "pause", slug))[0] == 0
    rows = await conn.fetch(
        "SELECT type, contact_id, campaign_id, data FROM webhook_events ORDER BY id"
    )
    assert [r["type"] for r in rows] == [
        "delivery.bounced",
        "delivery.complained",
        "campaign.paused",
    ]
    assert rows[0]["campaign_id"] == campaign_id
    assert rows[0]["contact_id"] is not None
    assert rows[1]["contact_id"] is not None
    assert await conn.fetchval("SELECT count(*) FROM webhook_deliveries") == 3
