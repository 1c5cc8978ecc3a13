"""Scratch databases for benchmarks: created and migrated on the server DATABASE_URL names."""

from __future__ import annotations

import os
import sys
import uuid
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from mailer.db import connect
from mailer.db.migrations import migrate


def server_dsn() -> str:
    """The Postgres server the benchmarks use (DATABASE_URL, as `make bench` sets it)."""
    dsn = os.environ.get("DATABASE_URL")
    if not dsn:
        sys.exit("DATABASE_URL is not set (make bench sets it)")
    return dsn


def database_url(dsn: str, name: str) -> str:
    """The same server, another database."""
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


async def create_database(dsn: str, prefix: str) -> str:
    """A new database with the schema migrated; returns its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = database_url(dsn, name)
    async with connect(url, max_size=2) as pool:
        await migrate(pool)
    return url


async def drop_database(dsn: str, url: str) -> None:
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{urlsplit(url).path[1:]}" WITH (FORCE)')
    finally:
        await admin.close()
