"""`mailer …` commands that change something are in the operator log as actor_kind 'cli',
the OS user who ran them, committed with the change (a refused command logs nothing), and
the auditor's export shows them beside the API's and the console's."""

from __future__ import annotations

import csv
import getpass
import io
import zipfile
from pathlib import Path

import asyncpg
import pytest

from mailer.core.addresses import address_hash
from tests.cli_run import run_cli
from tests.engine_setup import TEMPLATES

pytestmark = pytest.mark.timeout(120)
SLUG = "service-reminder-2024-10"


async def _cli_log(conn: asyncpg.Connection) -> list[tuple[str, str, str, str | None]]:
    rows = await conn.fetch(
        "SELECT actor_kind, actor_id, action, object_id FROM operator_log ORDER BY id"
    )
    return [(r["actor_kind"], r["actor_id"], r["action"], r["object_id"]) for r in rows]


async def test_the_cli_writes_are_logged_as_the_os_user_with_the_change_and_exported(
    conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch, db_url: str, tmp_path: Path
) -> None:
    me = getpass.getuser()

    async def cli(*argv: str) -> str:
        code, out = await run_cli(monkeypatch, db_url, *argv)
        assert code == 0, out
        return out

    await conn.execute("INSERT INTO topics (slug, name) VALUES ('service', 'Service')")
    await cli("campaign", "create", str(TEMPLATES / "service_reminder.toml"))
    await cli("campaign", "cancel", SLUG)
    dnc = tmp_path / "dnc.csv"
    dnc.write_text("email\nzoe@example.com\nnot-an-address\n", encoding="utf-8")
    await cli("suppress", "import", str(dnc), "--reason", "registry")
    await cli("contacts", "erase", "zoe@example.com", "--yes")
    out = await cli("api-keys", "create", "dms", "--scopes", "contacts:read")
    prefix = out.split("key ", 1)[1].split(" ", 1)[0]
    await cli("api-keys", "revoke", prefix)
    await cli("webhooks", "add", "https://crm.example.com/hook", "--events", "contact.unsubscribed")
    await cli("operators", "add", "ada@example.com", "--role", "sender")
    assert await _cli_log(conn) == [
        ("cli", me, "campaign.create", SLUG),
        ("cli", me, "campaign.cancel", SLUG),
        ("cli", me, "suppressions.import", None),
        ("cli", me, "contacts.erase", address_hash("zoe@example.com").hex()),
        ("cli", me, "api_key.create", prefix),
        ("cli", me, "api_key.revoke", prefix),
        ("cli", me, "webhook.add", "1"),
        ("cli", me, "operator.add", "ada@example.com"),
    ]
    detail = await conn.fetchrow(
        "SELECT detail->>'added' AS added, detail->>'rejected' AS rejected, detail->>'via' AS via"
        " FROM operator_log WHERE action = 'suppressions.import'"
    )
    assert detail is not None
    assert tuple(detail) == ("1", "1", "cli")

    # The auditor's export of the campaign: who created and cancelled it, from a terminal.
    bundle_path = tmp_path / "audit.zip"
    await cli("audit", "export", "--campaign", SLUG, "--out", str(bundle_path))
    with zipfile.ZipFile(bundle_path) as bundle:
        rows = list(csv.DictReader(io.StringIO(bundle.read(f"{SLUG}-operator-log.csv").decode())))
    assert [(r["actor_kind"], r["actor_id"], r["action"]) for r in rows] == [
        ("cli", me, "campaign.cancel"),
        ("cli", me, "campaign.create"),
    ]


async def test_a_refused_cli_write_changes_nothing_and_logs_nothing(
    conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch, db_url: str
) -> None:
    await conn.execute("INSERT INTO topics (slug, name) VALUES ('service', 'Service')")
    code, _ = await run_cli(
        monkeypatch, db_url, "campaign", "create", str(TEMPLATES / "service_reminder.toml")
    )
    assert code == 0
    code, _ = await run_cli(monkeypatch, db_url, "campaign", "cancel", SLUG)
    assert code == 0
    before = await _cli_log(conn)
    code, out = await run_cli(monkeypatch, db_url, "campaign", "pause", SLUG)  # cancelled
    assert code != 0, out
    code, out = await run_cli(monkeypatch, db_url, "webhooks", "add", "ftp://nope", "--events",
                              "contact.*")  # fmt: skip
    assert code != 0, out
    assert await _cli_log(conn) == before
    assert await conn.fetchval("SELECT status FROM campaigns WHERE slug = $1", SLUG) == "cancelled"


async def test_a_logged_cli_write_finishes_with_a_pool_of_one_connection(
    conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch, db_url: str
) -> None:
    # The write's transaction holds a connection while the command reads on another.
    monkeypatch.setenv("MAILER_DATABASE_POOL_MAX", "1")
    await conn.execute("INSERT INTO topics (slug, name) VALUES ('service', 'Service')")
    for argv in (
        ("campaign", "create", str(TEMPLATES / "service_reminder.toml")),
        ("campaign", "pause", SLUG),
        ("campaign", "cancel", SLUG),
    ):
        code, out = await run_cli(monkeypatch, db_url, *argv)
        assert code in (0, 1, 2), out  # refused or done, never waiting for ever
    assert [a for _, _, a, _ in await _cli_log(conn)][:1] == ["campaign.create"]
