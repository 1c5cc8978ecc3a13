"""The console's rejects files keep the addresses of rows never imported for 30 days (GDPR
art. 5(1)(e)): one rule (console.sql: uploads_rejects_expire), applied by both of its paths,
the console's upkeep and each new upload, to the same files."""

from __future__ import annotations

import asyncio
import gzip
import re
from pathlib import Path

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from mailer.console.app import create_app
from mailer.core.settings import Settings
from mailer.db.queries import parse
from tests.console_pages import SENDER, as_, settings_, upload_form, upload_id_of, wait_for_upload

pytestmark = pytest.mark.timeout(120)
__all__ = ["settings_"]
ROOT = Path(__file__).resolve().parents[2]
HEADER = "email,consent,consent_source,consent_date\n"
REJECTS = gzip.compress(b"line,reason,fields\n2,bad,x@example.com\n")


async def _rejects_file(conn: asyncpg.Connection, name: str, age_days: int) -> int:
    return int(
        await conn.fetchval(
            "INSERT INTO console_uploads (kind, file_name, operator_email, state, rejects_gz,"
            " finished_at) VALUES ('contacts', $1, $2, 'refused', $3,"
            " now() - $4 * interval '1 day') RETURNING id",
            name,
            SENDER,
            REJECTS,
            age_days,
        )
    )


async def _kept(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        "SELECT file_name FROM console_uploads WHERE rejects_gz IS NOT NULL ORDER BY file_name"
    )
    return [r["file_name"] for r in rows]


def test_the_retention_of_rejects_files_is_written_in_one_query() -> None:
    """Every statement that drops rejects files by age is uploads_rejects_expire."""
    expiring = {
        name
        for path in ROOT.glob("mailer/**/*.sql")
        for name, sql in parse(path.read_text(encoding="utf-8"), str(path)).items()
        if re.search(r"rejects_gz\s*=\s*NULL", sql) and "interval" in sql
    }
    assert expiring == {"uploads_rejects_expire"}


async def test_the_upkeep_and_a_new_upload_drop_the_same_expired_rejects_files(
    settings_: Settings, conn: asyncpg.Connection
) -> None:
    await conn.execute("INSERT INTO topics (slug, name) VALUES ('service', 'Service')")
    await _rejects_file(conn, "a-31-days.csv", 31)
    await _rejects_file(conn, "b-29-days.csv", 29)
    async with TestClient(TestServer(create_app(settings_))) as console:
        # The upkeep's first round, at start.
        for _ in range(100):
            if await _kept(conn) == ["b-29-days.csv"]:
                break
            await asyncio.sleep(0.05)
        assert await _kept(conn) == ["b-29-days.csv"]
        # Its next rejects round is an hour away: now only an upload drops them.
        await _rejects_file(conn, "c-31-days.csv", 31)
        csrf = await as_(console, SENDER)
        body = HEADER + "marie@example.com,express,Salon,2024-09-19\n"
        response = await console.post(
            "/imports", data=upload_form(csrf, body.encode(), "c.csv"), allow_redirects=False
        )
        assert response.status == 303, await response.text()
        await wait_for_upload(console, upload_id_of(response.headers["Location"]))
        assert await _kept(conn) == ["b-29-days.csv"]
