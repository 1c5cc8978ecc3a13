"""Real Postgres for every test: one cluster per session, a migrated template
database built once, and a fresh database cloned from it for each test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from mailer.demo import pgcluster
from mailer.store import Store


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
        async with Store.open(_with_database(server_dsn, name), max_size=2) as store:
            await store.migrate()
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
async def store(db_url: str) -> AsyncIterator[Store]:
    async with Store.open(db_url, max_size=4) as opened:
        yield opened


@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection for assertions about what landed in the tables."""
    connection = await asyncpg.connect(db_url)
    try:
        yield connection
    finally:
        await connection.close()
