"""A French-speaking person in a real browser (headless Debian Chromium via Playwright) fills
the hosted sign-up form, receives the confirmation mail (a real SMTP sink), opens its link
and confirms; the ledger holds the express grant with the evidence of both steps."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg
from aiohttp.test_utils import TestServer
from axe_playwright_python.async_playwright import Axe

from tests.browser import CHROMIUM, REQUIRES_BROWSER, async_playwright
from tests.signup_setup import FR, confirm_path, deliver_queued, make_form, parsed, signup_settings
from tests.smtp_servers import smtp_server
from tracker.app import create_app

pytestmark = [
    *REQUIRES_BROWSER,
]


async def test_a_person_subscribes_in_french_and_confirms_from_the_mail_in_a_real_browser(
    db_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    assert CHROMIUM is not None
    await make_form(db_url)
    settings = signup_settings(db_url)
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    try:
        base = str(server.make_url("")).rstrip("/")
        async with async_playwright() as pw:
            # --no-sandbox: Chromium's sandbox refuses to run as root (CI runs as root).
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                page = await browser.new_page(locale="fr-CA")
                await page.goto(f"{base}/s/infolettre")  # Accept-Language picks French
                assert await page.inner_text("#consent-text") == FR
                assert "Garage Tremblay Automobiles" in await page.inner_text("#identity")
                # Accessible: every control labelled, the page's language declared (axe-core).
                results = await Axe().run(page)
                serious = [
                    v["id"]
                    for v in results.response["violations"]
                    if v["impact"] in ("serious", "critical")
                ]
                assert serious == [], results.generate_report()
                await page.fill("#email", "Josee.Gagnon@example.com")
                await page.fill("#name", "Josée Gagnon")
                await page.check("#topic-promotions")
                await page.check("#consent")
                await page.click("#subscribe")
                await page.wait_for_selector("#message")
                assert "Consultez votre boîte de réception" in await page.inner_text("#title")
                await page.screenshot(path=str(tmp_path / "sent.png"))

                with smtp_server() as (port, handler):
                    assert await deliver_queued(db_url, settings, port) == 1
                mail = parsed(handler.messages[0].data)
                await page.goto(base + confirm_path(mail))
                assert FR in await page.inner_text("#consent-text")
                assert await conn.fetchval("SELECT count(*) FROM consents") == 0
                await page.click("#confirm")
                await page.wait_for_selector("#message")
                assert "Abonnement confirmé" in await page.inner_text("#title")
                await page.screenshot(path=str(tmp_path / "confirmed.png"))
            finally:
                await browser.close()
    finally:
        await server.close()

    row = await conn.fetchrow(
        "SELECT c.name, c.locale, l.source, l.evidence FROM consents l"
        " JOIN contacts c ON c.id = l.contact_id WHERE l.kind = 'express'"
    )
    assert row is not None
    assert (row["name"], row["locale"], row["source"]) == (
        "Josée Gagnon",
        "fr",
        "Site web — infolettre",
    )
    evidence = json.loads(row["evidence"])
    assert evidence["form"]["text"] == FR
    assert "HeadlessChrome" in evidence["request"]["user_agent"]
    assert "HeadlessChrome" in evidence["confirmation"]["user_agent"]
    assert evidence["request"]["page_url"] == f"{base}/s/infolettre"
    assert evidence["topics"] == ["promotions"]
