"""The unsubscribe link of a sent transactional message works (CASL s.6(2)(c), s.11; RFC 8058),
and it is an unsubscribe from commercial mail: a later recall still goes, saying why."""

from __future__ import annotations

import json
import re
from email import message_from_bytes, policy
from urllib.parse import urlsplit

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from mailer.core.addresses import address_hash
from mailer.core.settings import DatabaseSettings, Settings, TrackerSettings
from mailer.demo.stores import Stores
from mailer.transactional.enqueue import enqueue
from tests.engine_setup import KEYS
from tests.lane_setup import PARTS, RECALL, lane_for, lane_settings, transactional_store
from tests.smtp_servers import smtp_server
from tracker.app import create_app

ONE_CLICK = {
    "data": b"List-Unsubscribe=One-Click",
    "headers": {"Content-Type": "application/x-www-form-urlencoded"},
}


def tracker_settings(db_url: str) -> Settings:
    return Settings(
        database=DatabaseSettings(url=db_url, pool_min=1, pool_max=2),
        tracker=TrackerSettings(base_url="http://127.0.0.1"),
        token_keys=KEYS,
    )


async def sent_unsubscribe_path(stores: Stores) -> str:
    """Send the queued notice through the lane; the path of its List-Unsubscribe https link."""
    with smtp_server() as (port, sink):
        await lane_for(stores, lane_settings(port)).run(until_idle=True)
    message = message_from_bytes(sink.messages[0].data, policy=policy.default)
    match = re.match(r"<([^>]+)>", message["List-Unsubscribe"])
    assert match is not None
    return urlsplit(match[1]).path


async def test_the_unsubscribe_link_of_a_sent_notice_unsubscribes_from_commercial_mail_only(
    stores: Stores, conn: asyncpg.Connection, db_url: str
) -> None:
    store = transactional_store(stores)
    await enqueue(store, template="parts_received", to="marie@example.com", data=PARTS)
    path = await sent_unsubscribe_path(stores)
    client: TestClient[web.Request, web.Application]
    async with TestClient(TestServer(create_app(tracker_settings(db_url)))) as client:
        page = await client.get(path)
        html = await page.text()
        assert page.status == 200
        assert "Garage Tremblay Automobiles" in html
        assert 'value="topic"' not in html  # a notice is about no topic one could leave
        done = await client.post(path, **ONE_CLICK)  # type: ignore[arg-type]
        assert done.status == 200
    suppressions = await conn.fetch("SELECT channel, reason FROM suppressions ORDER BY channel")
    assert [tuple(s) for s in suppressions] == [("email", "unsubscribe"), ("sms", "unsubscribe")]
    # An opt-out from commercial mail: a safety recall still goes, and says why.
    recall = await enqueue(store, template="safety_recall", to="marie@example.com", data=RECALL)
    assert recall.accepted
    assert recall.note is not None
    assert "unsubscribed from this channel" in recall.note


async def test_an_unsubscribe_from_a_notice_is_recorded_as_that_notice_not_as_a_campaign_delivery(
    stores: Stores, conn: asyncpg.Connection, db_url: str
) -> None:
    # Notices and campaign deliveries are numbered by separate sequences: recorded as
    # "delivery_id", notice 1 would read as campaign delivery 1 (the audit export joins on it).
    store = transactional_store(stores)
    sent = await enqueue(store, template="parts_received", to="marie@example.com", data=PARTS)
    path = await sent_unsubscribe_path(stores)
    client: TestClient[web.Request, web.Application]
    async with TestClient(TestServer(create_app(tracker_settings(db_url)))) as client:
        done = await client.post(path, **ONE_CLICK)  # type: ignore[arg-type]
        assert done.status == 200
    ledger = await conn.fetch("SELECT evidence FROM consents WHERE action = 'withdraw'")
    details = await conn.fetch("SELECT detail FROM suppressions")
    assert ledger
    assert details
    for text in [r["evidence"] for r in ledger] + [r["detail"] for r in details]:
        evidence = json.loads(text)  # this connection has no json codec
        assert evidence["transactional_id"] == sent.message_id
        assert "delivery_id" not in evidence
    # What `contacts show` prints for each suppression.
    story = await stores.contacts.contact_story(
        "marie@example.com", address_hash("marie@example.com")
    )
    assert story is not None
    assert {held.evidence() for held in story.suppressions} == {
        f"transactional message {sent.message_id}"
    }
