"""An opt-out stops even a message already claimed: the last check is made right before MAIL FROM.

Issue 15: ten contacts whose rows a worker had claimed (waiting for a throttled domain's
tokens) one-click-unsubscribed; the tracker answered 200 — and all ten still got the campaign.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from mailer.core.settings import DatabaseSettings, Settings, TrackerSettings
from mailer.core.tokens import Keyring, Purpose, Token
from mailer.demo.stores import Stores
from tests.engine_setup import KEYS, add_contacts, engine_for, sample_campaign, settings_for
from tests.smtp_servers import Faults, smtp_server, wait_until
from tracker.app import create_app

Client = TestClient[web.Request, web.Application]


def one_click_path(delivery_id: int) -> str:
    """The List-Unsubscribe URL's path of a delivery, as the engine signs it."""
    token = Keyring.from_spec(KEYS).sign(
        Token(Purpose.UNSUBSCRIBE, delivery_id, None, int(time.time()))
    )
    return f"/u/{token}"


def received_none(recipients: list[str], rows: list[asyncpg.Record]) -> bool:
    return set(recipients).isdisjoint(r["email"] for r in rows)


async def test_contacts_claimed_and_waiting_for_a_throttled_domain_who_opt_out_are_never_sent(
    stores: Stores, conn: asyncpg.Connection, db_url: str, tmp_path: Path
) -> None:
    emails = await add_contacts(conn, 30, domains=("slow.example",))
    # The campaign holds the domain to 5 msg/s: the claimed batch waits for tokens.
    await sample_campaign(stores, {"rate = 20.0": "rate = 5.0"}, tmp_path)
    tracker_settings = Settings(
        database=DatabaseSettings(url=db_url, pool_min=1, pool_max=2),
        tracker=TrackerSettings(base_url="http://127.0.0.1"),
        token_keys=KEYS,
    )
    # The relay takes two messages, then holds every DATA until the opt-outs are in: however
    # slow the machine, the last ten cannot reach their start before the tracker answered
    # (at 5 msg/s alone they had 4 s, the time a loaded machine may take to start the
    # tracker and post ten opt-outs).
    with smtp_server(Faults(hold_after=2)) as (port, sink):
        settings = settings_for(port, batch_size=30)
        # Held messages wait in DATA: a reply timeout longer than any hold here.
        patient = dataclasses.replace(
            settings, smtp=dataclasses.replace(settings.smtp, timeout_s=120.0)
        )
        engine = engine_for(stores, patient)
        run = asyncio.create_task(engine.run())
        await wait_until(lambda: len(sink.recipients) >= 2)
        # The last ten of the batch: claimed by the worker (leased to it), not yet sent.
        waiting = await conn.fetch(
            "SELECT d.id, c.email, d.worker FROM deliveries d JOIN contacts c "
            "ON c.id = d.contact_id ORDER BY d.id DESC LIMIT 10"
        )
        assert {r["worker"] for r in waiting} == {engine.worker}
        assert received_none(sink.recipients, waiting)
        async with Client(TestServer(create_app(tracker_settings))) as tracker:
            for r in waiting:
                response = await tracker.post(
                    one_click_path(r["id"]),
                    data=b"List-Unsubscribe=One-Click",
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                )
                assert response.status == 200  # committed before the answer
        sink.faults.hold_after = None  # the relay takes everything again
        await wait_until(lambda: engine.pending == 0)
        engine.stop.set()
        await run
        received = set(sink.recipients)
    opted_out = {r["email"] for r in waiting}
    assert received.isdisjoint(opted_out)
    assert received == set(emails) - opted_out
    rows = await conn.fetch(
        "SELECT c.email, d.status, d.skip_reason FROM deliveries d "
        "JOIN contacts c ON c.id = d.contact_id WHERE d.status <> 'sent'"
    )
    assert {r["email"]: (r["status"], r["skip_reason"]) for r in rows} == dict.fromkeys(
        opted_out, ("skipped", "unsubscribed_channel")
    )
