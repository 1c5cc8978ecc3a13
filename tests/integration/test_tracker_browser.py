"""A person in a real browser (headless Debian Chromium via Playwright) unsubscribes, then
changes their mind in the preference centre; the database shows both."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg
from aiohttp.test_utils import TestServer

from mailer.core.tokens import Purpose
from tests.browser import CHROMIUM, REQUIRES_BROWSER, async_playwright
from tests.integration.test_tracker_app import make_world, settings_for, sign
from tracker.app import create_app

pytestmark = [
    *REQUIRES_BROWSER,
]


async def test_a_person_unsubscribes_then_resubscribes_in_a_real_browser(
    db_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    assert CHROMIUM is not None
    world = await make_world(conn)
    server = TestServer(create_app(settings_for(db_url)), host="127.0.0.1")
    await server.start_server()
    try:
        base = str(server.make_url("")).rstrip("/")
        async with async_playwright() as pw:
            # --no-sandbox: Chromium's sandbox refuses to run as root (CI runs as root).
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                page = await browser.new_page()
                await page.goto(f"{base}/u/{sign(Purpose.UNSUBSCRIBE, world.delivery_id)}")
                assert "marie@example.com is unsubscribing" in await page.inner_text("#who")
                assert await page.is_checked("#scope-digital")  # the default
                await page.check("#scope-email")
                await page.fill("#reason", "Too many emails")
                await page.click("#unsubscribe")
                await page.wait_for_selector("#done")
                await page.screenshot(path=str(tmp_path / "unsubscribed.png"))

                rows = await conn.fetch(
                    "SELECT channel, source, evidence FROM consents WHERE action = 'withdraw'"
                )
                assert [(r["channel"], r["source"]) for r in rows] == [
                    ("email", "unsubscribe page")
                ]
                evidence = json.loads(rows[0]["evidence"])
                assert evidence["reason"] == "Too many emails"
                assert "HeadlessChrome" in evidence["user_agent"]
                assert await conn.fetchval("SELECT count(*) FROM suppressions") == 1

                # The confirmation links to the preference centre: turn email back on, and
                # stop the monthly news instead.
                await page.click("a[href^='/p/']")
                await page.wait_for_selector("#history")
                assert "You subscribed on 19 September 2012 at Salon E-commerce Paris." in (
                    await page.inner_text("#history")
                )
                assert not await page.is_checked("#channel-email")
                await page.check("#channel-email")
                await page.uncheck(f"#topic-{world.topic_id}")
                await page.click("#save")
                await page.wait_for_selector("#saved")
                assert await page.is_checked("#channel-email")
                assert not await page.is_checked(f"#topic-{world.topic_id}")
                await page.screenshot(path=str(tmp_path / "preferences.png"), full_page=True)
            finally:
                await browser.close()
    finally:
        await server.close()

    latest = await conn.fetch(
        "SELECT channel, action, kind, topic_id, source FROM consents"
        " WHERE source = 'preference centre' ORDER BY id"
    )
    assert {tuple(r) for r in latest} == {
        ("email", "grant", "express", None, "preference centre"),
        ("email", "withdraw", None, world.topic_id, "preference centre"),
    }
    left = await conn.fetch("SELECT scope, topic_id, reason FROM suppressions")
    assert [tuple(r) for r in left] == [("topic", world.topic_id, "unsubscribe")]
    assert await conn.fetchval("SELECT enabled FROM contact_channels WHERE channel = 'email'")
