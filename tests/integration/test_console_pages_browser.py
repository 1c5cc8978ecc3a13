"""The intake and integration pages in a real browser (Debian's Chromium through Playwright):
an operator uploads a contacts file with a bad row, watches the import finish (htmx polling),
downloads the rejects; a form, a suppression, a key and an endpoint made through the pages;
axe-core finds no WCAG violation on any of these pages in either language, and the CSP
blocks nothing."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from mailer.console.accounts import Role
from mailer.console.app import create_app
from mailer.demo.stores import Stores
from mailer.transactional.enqueue import enqueue
from mailer.transactional.store import TransactionalStore
from tests.browser import CHROMIUM, REQUIRES_BROWSER, async_playwright
from tests.console_setup import PASSWORD, console_settings, operator
from tests.engine_setup import TEMPLATES
from tests.integration.test_console_browser import no_axe_violations
from tests.lane_setup import PARTS
from tests.lane_setup import TEMPLATES as TX_TEMPLATES

pytestmark = [*REQUIRES_BROWSER, pytest.mark.timeout(240)]

CSV = (
    "email,name,locale,consent,consent_source,consent_date,topics\n"
    "marie@example.com,Marie Côté,fr,express,Salon,2024-09-19,service\n"
    "not-an-address,Bob,en,express,Salon,2024-09-19,service\n"
)


async def test_an_operator_imports_a_file_downloads_its_rejects_and_every_new_page_passes_axe(
    db_url: str, conn: asyncpg.Connection, stores: Stores, tmp_path: Path
) -> None:
    assert CHROMIUM is not None
    await conn.execute("INSERT INTO topics (slug, name) VALUES ('service', 'Service')")
    base_settings = console_settings(db_url, TEMPLATES)
    settings = dataclasses.replace(
        base_settings,
        forms=dataclasses.replace(
            base_settings.forms, business_name="Garage Tremblay",
            postal_address="12 rue Principale, Québec", contact="418 555 0100",
        ),
        transactional=dataclasses.replace(
            base_settings.transactional, templates_dir=str(TX_TEMPLATES)
        ),
    )  # fmt: skip
    await operator(settings, "root@example.com", Role.ADMIN)
    tx = TransactionalStore(stores.pool, TX_TEMPLATES)
    notice = await enqueue(tx, template="parts_received", to="walkin@example.com", data=PARTS,
                           idempotency_key="dms-1", locale=None)  # fmt: skip
    upload = tmp_path / "clients.csv"
    upload.write_text(CSV, encoding="utf-8")
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    blocked: list[str] = []
    try:
        base = str(server.make_url("")).rstrip("/")
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                context = await browser.new_context(accept_downloads=True)
                page = await context.new_page()
                page.on(
                    "console",
                    lambda m: (
                        blocked.append(m.text) if "Content Security Policy" in m.text else None
                    ),
                )
                await page.goto(f"{base}/login")
                await page.fill("#email", "root@example.com")
                await page.fill("#password", PASSWORD)
                await page.click("#login")
                await page.wait_for_selector("#main")

                # Upload: the valid rows go in, the bad one is set aside with its reason.
                await page.goto(f"{base}/imports")
                await no_axe_violations(page)
                await page.fill("#source", "Salon 2024")
                await page.check("#skip_invalid")
                await page.set_input_files("#file", str(upload))
                await page.click("#upload")
                await page.wait_for_selector("#upload-state.ok", timeout=30_000)  # htmx polls
                assert await page.inner_text("#sum-contacts_created") == "1"
                await no_axe_violations(page)
                async with page.expect_download() as waiting:
                    await page.click("#rejects")
                download = await waiting.value
                saved = tmp_path / "rejects.csv"
                await download.save_as(saved)
                rejects = saved.read_text(encoding="utf-8").splitlines()
                assert rejects[0] == "line,reason,fields"
                assert rejects[1].startswith("3,")
                assert "not-an-address" in rejects[1]
                assert (
                    await conn.fetchval(
                        "SELECT name FROM contacts WHERE email = 'marie@example.com'"
                    )
                    == "Marie Côté"
                )

                # A form, a suppression, a key and an endpoint, made through their pages.
                await page.goto(f"{base}/forms")
                await page.fill("#slug", "infolettre")
                await page.fill("#form-source", "Site web")
                await page.fill("#text_en", "Yes, send me the newsletter.")
                await page.click("#create-form")
                await page.wait_for_selector("#texts")
                await page.goto(f"{base}/suppressions")
                await page.fill("#one-email", "pat@example.com")
                await page.fill("#one-source", "phone call")
                await page.click("#suppress")
                await page.wait_for_selector("#notice")
                await page.goto(f"{base}/keys")
                await page.fill("#key-name", "dms")
                await page.check("#scope-1")
                await page.click("#create-key")
                await page.wait_for_selector("#new-key")
                await page.goto(f"{base}/webhooks")
                await page.fill("#hook-url", "https://crm.example.com/hook")
                await page.check("#event-1")
                await page.click("#add-webhook")
                await page.wait_for_selector("#new-secret")

                for lang in ("en", "fr"):
                    await page.goto(f"{base}/")
                    await page.select_option("#lang", lang)
                    await page.click("form[action='/language'] button")
                    await page.wait_for_selector(f"html[lang='{lang}']")
                    for path in (
                        "/imports",
                        "/imports/1",
                        "/forms",
                        "/forms/infolettre",
                        "/suppressions",
                        "/suppressions?email=pat@example.com",
                        "/transactional",
                        f"/transactional/{notice.message_id}",
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
    assert not blocked, blocked
