"""Fixtures and helpers for the tests of the console's intake and integration pages."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from mailer.console.accounts import Role
from mailer.console.app import create_app
from mailer.console.web import CONSOLE
from mailer.core.settings import Settings
from tests.console_setup import Client, console_settings, csrf_of, log_in, operator
from tests.engine_setup import TEMPLATES

SENDER, VIEWER, ADMIN = "ada@example.com", "vic@example.com", "root@example.com"


@pytest.fixture
async def settings_(db_url: str) -> Settings:
    settings = console_settings(db_url, TEMPLATES)
    await operator(settings, SENDER, Role.SENDER)
    await operator(settings, VIEWER, Role.VIEWER)
    await operator(settings, ADMIN, Role.ADMIN)
    return settings


@pytest.fixture
async def client(settings_: Settings) -> AsyncIterator[Client]:
    async with TestClient(TestServer(create_app(settings_))) as c:
        yield c


async def as_(client: Client, email: str) -> str:
    """Log in as `email`; the CSRF token of the session."""
    return await log_in(client, email)


def queries(client: Client, route: str) -> int:
    """Statements the last request of `route` ran (the session's lookup included)."""
    return client.app[CONSOLE].queries_by_route[route]


def upload_form(csrf: str | None, content: bytes, name: str, **fields: str) -> aiohttp.FormData:
    """A multipart form as a browser sends it: the CSRF field first, the file last."""
    form = aiohttp.FormData()
    if csrf is not None:
        form.add_field("csrf", csrf)
    for key, value in fields.items():
        form.add_field(key, value)
    # A file object, as aiohttp streams it (raw bytes are for small bodies).
    form.add_field("file", io.BytesIO(content), filename=name, content_type="text/csv")
    return form


async def wait_for_upload(client: Client, upload_id: int) -> str:
    """The import's status block once it has finished."""
    for _ in range(600):  # 30 s at most: a loaded machine; returns once it has finished
        text = await (await client.get(f"/imports/{upload_id}/status")).text()
        if 'hx-trigger="every 1s"' not in text:
            return text
        await asyncio.sleep(0.05)
    raise AssertionError(f"upload {upload_id} still running")


def upload_id_of(location: str) -> int:
    found = re.fullmatch(r"/imports/(\d+)", location)
    assert found, location
    return int(found.group(1))


__all__ = ["csrf_of"]
