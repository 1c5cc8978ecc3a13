"""An operator's journeys through the console in a real browser (Debian's Chromium through
Playwright): log in, create the sample campaign (lint fails without a postal address, then
passes), follow an exclusion reason to the contact's explanation, launch after a
confirmation that repeats the audience count, watch progress live, pause, resume, read the
report. axe-core finds no WCAG violation on any page, and the CSP blocks nothing we ship."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import asyncpg
import pytest
from aiohttp.test_utils import TestServer
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Page

from mailer.console.accounts import Role
from mailer.console.app import create_app
from mailer.demo.stores import Stores
from tests.browser import CHROMIUM, REQUIRES_BROWSER, async_playwright
from tests.console_setup import (
    PASSWORD,
    console_settings,
    operator,
    small_world,
    templates_with_a_footer_lacking_the_address,
)
from tests.engine_setup import engine_for
from tests.smtp_servers import Faults, smtp_server, wait_until

pytestmark = [
    *REQUIRES_BROWSER,
    pytest.mark.timeout(180),
]
ELIGIBLE = 24


async def no_axe_violations(page: Page) -> None:
    """axe-core's WCAG 2.0/2.1/2.2 A and AA rules on the page as it is now."""
    results = await Axe().run(
        page,
        options={
            "runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21aa", "wcag22aa"]},
            "resultTypes": ["violations"],
        },
    )
    assert results.violations_count == 0, f"{page.url}\n{results.generate_report()}"


async def test_an_operator_creates_checks_launches_pauses_resumes_and_reads_the_report(
    db_url: str, conn: asyncpg.Connection, stores: Stores, tmp_path: Path
) -> None:
    assert CHROMIUM is not None
    await small_world(conn, eligible=ELIGIBLE)
    templates = templates_with_a_footer_lacking_the_address(tmp_path)
    # The relay holds every message until the test lets some through, then holds again: the
    # campaign cannot finish before it is paused, however fast or slow the machine (a 2 s delay
    # per message still let it finish first on a loaded CI run).
    with smtp_server(Faults(hold_after=0)) as (port, sink):
        settings = console_settings(db_url, templates, port)
        await operator(settings, "ada@example.com", Role.SENDER)
        server = TestServer(create_app(settings), host="127.0.0.1")
        await server.start_server()
        engine = engine_for(stores, settings)
        worker = asyncio.create_task(engine.run())
        blocked: list[str] = []
        try:
            base = str(server.make_url("")).rstrip("/")
            async with async_playwright() as pw:
                # --no-sandbox: Chromium's sandbox refuses to run as root (CI runs as root).
                browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                try:
                    page = await browser.new_page()
                    page.on(
                        "console",
                        # The console's own pages: the preview frame's CSP is meant to refuse
                        # a plain-http image (the test tracker's pixel).
                        lambda m: (
                            blocked.append(m.text)
                            if "Content Security Policy" in m.text
                            and "/preview.html" not in m.location.get("url", "")
                            else None
                        ),
                    )
                    await page.goto(f"{base}/campaigns/new")
                    assert "/login" in page.url  # not logged in yet
                    await no_axe_violations(page)
                    await page.fill("#email", "ada@example.com")
                    await page.fill("#password", PASSWORD)
                    await page.click("#login")
                    await page.wait_for_selector("#text")  # back where it was going
                    await no_axe_violations(page)

                    # The sample file, loaded into the editor: its lint passes (htmx, live).
                    await page.select_option("#from", "service_reminder")
                    await page.click("#load-sample")
                    await page.wait_for_selector("#lint-ok")
                    text = await page.input_value("#text")
                    # A template whose footer forgets the postal address: refused, and why.
                    await page.fill(
                        "#text",
                        text.replace('template = "service_reminder"', 'template = "no_address"'),
                    )
                    await page.wait_for_selector("#lint-problems")
                    assert "missing postal address" in await page.inner_text("#lint-problems")
                    await no_axe_violations(page)
                    # Back to the shipped template, slower, so progress can be watched.
                    await page.fill("#text", text.replace("rate = 20.0", "rate = 4.0"))
                    await page.wait_for_selector("#lint-ok")
                    await page.click("#create")
                    await page.wait_for_selector("#status")
                    slug = "service-reminder-2024-10"
                    assert page.url.endswith(f"/campaigns/{slug}")
                    assert await page.inner_text("#status") == "draft"
                    await no_axe_violations(page)

                    # Preview as a contact, in English: the HTML in a sandboxed frame.
                    await page.click("#preview-link")
                    await page.fill("#to", "person1@example.com")
                    await page.select_option("#preview-lang", "en")
                    await page.click("#show-preview")
                    await page.wait_for_selector("#preview-html")
                    assert await page.get_attribute("#preview-html", "sandbox") == ""
                    frame = page.frame_locator("#preview-html")
                    assert "2450, boulevard Laurier" in await frame.locator("body").inner_text()
                    await no_axe_violations(page)
                    await page.goto(f"{base}/campaigns/{slug}")

                    # The audience: who is out and why; one of them, explained.
                    await page.click("#audience-link")
                    await page.wait_for_selector("#reasons")
                    await page.screenshot(path=str(tmp_path / "audience.png"), full_page=True)
                    assert await page.inner_text("#eligible") == str(ELIGIBLE)
                    row = page.locator("#reason-no_consent")
                    assert "1" in await row.inner_text()
                    await no_axe_violations(page)
                    await row.locator("a", has_text="nobody@example.org").click()
                    await page.wait_for_selector("#verdict")
                    assert await page.inner_text("#reason") == "no_consent"
                    await no_axe_violations(page)
                    assert await page.inner_text("#verdict") != ""
                    await page.goto(f"{base}/contacts/gone@example.org")
                    await page.wait_for_selector("#suppressions")
                    assert "unsubscribe" in await page.inner_text("#suppressions")
                    await no_axe_violations(page)

                    # Launch: the confirmation repeats the count before anything is frozen.
                    await page.goto(f"{base}/campaigns/{slug}")
                    await page.click("#launch")
                    await page.wait_for_selector("#confirm-text")
                    assert f"to {ELIGIBLE} contacts" in await page.inner_text("#confirm-text")
                    assert await conn.fetchval("SELECT count(*) FROM deliveries") == 0
                    await no_axe_violations(page)
                    await page.click("#confirm-launch")
                    await page.wait_for_selector("#pause")
                    assert await page.inner_text("#status") == "running"

                    # Live: the progress row moves without a reload (SSE through htmx).
                    done = page.locator(f"#progress-{slug} .done")
                    await done.wait_for()
                    first = int(await done.inner_text())
                    sink.faults.hold_after = ELIGIBLE // 4  # a few through, then held again
                    await page.wait_for_function(
                        "([sel, n]) => Number(document.querySelector(sel).textContent) > n",
                        arg=[f"#progress-{slug} .done", first],
                        timeout=40_000,
                    )
                    await no_axe_violations(page)
                    await page.screenshot(path=str(tmp_path / "running.png"), full_page=True)

                    # Pause: sending stops within a batch; resume: it finishes.
                    await page.click("#pause")
                    await page.wait_for_selector("#resume")
                    assert await page.inner_text("#status") == "paused"
                    sink.faults.hold_after = None  # what was in flight at the pause completes
                    await wait_until(lambda: engine.pending == 0)
                    at_pause = len(sink.recipients)
                    await asyncio.sleep(1.0)
                    assert len(sink.recipients) == at_pause < ELIGIBLE
                    await page.click("#resume")
                    await page.wait_for_selector("#pause")
                    await wait_until(lambda: len(sink.recipients) == ELIGIBLE, 90)
                    for _ in range(300):  # outcomes are recorded in batches, just after
                        if (
                            await conn.fetchval(
                                "SELECT count(*) FROM deliveries WHERE status = 'sent'"
                            )
                            == ELIGIBLE
                        ):
                            break
                        await asyncio.sleep(0.1)

                    # The report, with the CLI report's figures.
                    await page.click("#report-link")
                    await page.wait_for_selector("#headline")
                    assert "section-deliveries" in await page.content()
                    sent = await page.inner_text("#section-deliveries")
                    assert re.search(rf"sent\s+{ELIGIBLE}", sent), sent
                    await no_axe_violations(page)
                    await page.screenshot(path=str(tmp_path / "report.png"), full_page=True)

                    # The dashboard, in French.
                    await page.goto(f"{base}/")
                    await page.select_option("#lang", "fr")
                    await page.click("form[action='/language'] button")
                    await page.wait_for_selector("html[lang='fr']")
                    assert "Tableau de bord" in await page.inner_text("h1")
                    await no_axe_violations(page)
                finally:
                    await browser.close()
        finally:
            engine.stop.set()
            await worker
            await server.close()
    assert blocked == []
    actions = [
        r["action"]
        for r in await conn.fetch(
            "SELECT action FROM operator_log WHERE actor_id = 'ada@example.com' ORDER BY id"
        )
    ]
    assert actions == [
        "console.login",
        "campaign.create",
        "campaign.launch",
        "campaign.pause",
        "campaign.resume",
    ]
    assert sorted(sink.recipients) == sorted(f"person{i}@example.com" for i in range(ELIGIBLE))


async def test_every_other_page_has_no_axe_violation_in_either_language(
    db_url: str, conn: asyncpg.Connection, stores: Stores, tmp_path: Path
) -> None:
    assert CHROMIUM is not None
    await small_world(conn)
    settings = console_settings(db_url, templates_with_a_footer_lacking_the_address(tmp_path))
    await operator(settings, "root@example.com", Role.ADMIN)
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    try:
        base = str(server.make_url("")).rstrip("/")
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                page = await browser.new_page()
                await page.goto(f"{base}/login")
                await page.fill("#email", "root@example.com")
                await page.fill("#password", PASSWORD)
                await page.click("#login")
                await page.wait_for_selector("#main")
                for lang in ("en", "fr"):
                    await page.goto(f"{base}/")
                    await page.select_option("#lang", lang)
                    await page.click("form[action='/language'] button")
                    await page.wait_for_selector(f"html[lang='{lang}']")
                    for path in (
                        "/campaigns",
                        "/contacts?q=person",
                        "/contacts/gone@example.org",
                        "/contacts/person1@example.com",
                        "/contacts/person1@example.com/erase",
                        "/reports",
                        "/topics",
                        "/operators",
                        "/keys",
                        "/webhooks",
                    ):
                        await page.goto(base + path)
                        await page.wait_for_selector("h1")
                        await no_axe_violations(page)
            finally:
                await browser.close()
    finally:
        await server.close()
