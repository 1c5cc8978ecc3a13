"""The transactional page's template checks (`mailer transactional check`) are CPU work: the
console runs them off its event loop, and keeps their result until a template file changes."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from mailer.console.app import create_app
from mailer.core.settings import Settings
from tests.console_pages import VIEWER, as_, settings_
from tests.lane_setup import TEMPLATES

pytestmark = pytest.mark.timeout(120)
__all__ = ["settings_"]


def _with_templates(settings: Settings, folder: Path) -> Settings:
    transactional = dataclasses.replace(settings.transactional, templates_dir=str(folder))
    return dataclasses.replace(settings, transactional=transactional)


async def test_other_requests_are_answered_while_the_template_checks_run(
    settings_: Settings, tmp_path: Path
) -> None:
    folder = tmp_path / "transactional"
    shutil.copytree(TEMPLATES, folder)
    async with TestClient(TestServer(create_app(_with_templates(settings_, folder)))) as client:
        await as_(client, VIEWER)
        done: list[str] = []

        async def visit(path: str) -> None:
            response = await client.get(path)
            assert response.status == 200
            await response.read()
            done.append(path)

        page = asyncio.create_task(visit("/transactional"))
        await asyncio.sleep(0.05)  # the page's check has begun (it takes 100s of ms)
        started = time.perf_counter()
        await visit("/healthz")
        health_ms = (time.perf_counter() - started) * 1000
        await page
        # On the loop, the check held every other request until it ended.
        assert done == ["/healthz", "/transactional"], health_ms


async def test_a_template_changed_on_disk_is_checked_again_on_the_next_visit(
    settings_: Settings, tmp_path: Path
) -> None:
    folder = tmp_path / "transactional"
    shutil.copytree(TEMPLATES, folder)
    async with TestClient(TestServer(create_app(_with_templates(settings_, folder)))) as client:
        await as_(client, VIEWER)
        page = await (await client.get("/transactional")).text()
        assert 'id="check-parts_received"><span class="ok">' in page
        html = folder / "parts_received.html"
        html.write_text(html.read_text(encoding="utf-8") + "{% if %}", encoding="utf-8")
        later = time.time() + 5  # a modification time that differs whatever the clock's grain
        os.utime(html, (later, later))
        page = await (await client.get("/transactional")).text()
        assert 'id="check-parts_received"><ul class="sample error">' in page
