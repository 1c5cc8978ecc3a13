"""Real Postgres for every test: one cluster per session, a migrated template
database built once, and a fresh database cloned from it for each test."""

from __future__ import annotations

import base64
import io
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from mailer.commands.console import console
from mailer.core.settings import Settings, load
from mailer.db import connect
from mailer.db.migrations import migrate
from mailer.demo import pgcluster
from mailer.demo.stores import Stores, open_stores


def _with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


@pytest.fixture(scope="session")
def server_dsn() -> str:
    """DATABASE_URL when set, else the private cluster (started on demand)."""
    return os.environ.get("DATABASE_URL") or pgcluster.ensure().dsn


@pytest.fixture(scope="session")
async def template_db(server_dsn: str) -> AsyncIterator[str]:
    name = f"mailer_tpl_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        async with connect(_with_database(server_dsn, name), max_size=2) as pool:
            await migrate(pool)
        # A template must have no open connections when it is cloned.
        yield name
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@asynccontextmanager
async def _scratch_database(
    server_dsn: str, prefix: str, template: str | None = None
) -> AsyncIterator[str]:
    """A database created for one test (from `template` if given), dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    clause = f' TEMPLATE "{template}"' if template else ""
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"{clause}')
        yield _with_database(server_dsn, name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def db_url(server_dsn: str, template_db: str) -> AsyncIterator[str]:
    """A fresh, migrated database of its own for one test."""
    async with _scratch_database(server_dsn, "mailer_t", template_db) as url:
        yield url


@pytest.fixture
async def empty_db_url(server_dsn: str) -> AsyncIterator[str]:
    """A database with no schema at all, for migration tests."""
    async with _scratch_database(server_dsn, "mailer_e") as url:
        yield url


@pytest.fixture
async def stores(db_url: str) -> AsyncIterator[Stores]:
    """Every role's store on a pool of the test's database."""
    async with open_stores(db_url, max_size=4) as opened:
        yield opened


@pytest.fixture
def settings(db_url: str) -> Settings:
    """Default settings on the test's database, with a token key (for command handlers)."""
    return load(
        environ={
            "DATABASE_URL": db_url,
            "MAILER_TOKEN_KEYS": "1:" + base64.b64encode(b"k" * 32).decode(),
        }
    )


@pytest.fixture
def printed(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """What the commands print (their shared rich console), 200 columns wide."""
    out = io.StringIO()
    monkeypatch.setattr(console, "_file", out)
    monkeypatch.setattr(console, "_width", 200)
    return out


@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection for assertions about what landed in the tables."""
    connection = await asyncpg.connect(db_url)
    try:
        yield connection
    finally:
        await connection.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """tests/unit is marked `unit` (no Postgres, no network), tests/integration `integration`."""
    for item in items:
        folder = item.path.parent.name
        if folder in ("unit", "integration"):
            item.add_marker(getattr(pytest.mark, folder))
        if folder == "unit" and "server_dsn" in getattr(item, "fixturenames", ()):
            raise pytest.UsageError(f"{item.nodeid} needs Postgres: move it to tests/integration")
