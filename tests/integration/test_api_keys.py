"""API keys from the CLI: printed once, stored as a hash, listed, revoked, expired; every
change in the append-only operator log."""

from __future__ import annotations

import re

import asyncpg
import pytest

from mailer.api.keys import key_hash
from mailer.compliance.store import ComplianceStore, log_operator_action
from mailer.demo.stores import Stores
from tests.cli_run import run_cli

KEY = re.compile(r"mk_[0-9a-f]{8}_[A-Za-z0-9_-]{43}")


async def test_a_created_key_is_printed_once_and_only_its_hash_is_stored(
    monkeypatch: pytest.MonkeyPatch, db_url: str, conn: asyncpg.Connection
) -> None:
    code, out = await run_cli(
        monkeypatch, db_url, "api-keys", "create", "dms", "--scopes", "contacts:write,contacts:read"
    )
    assert code == 0, out
    found = KEY.search(out)
    assert found is not None, out
    row = await conn.fetchrow("SELECT * FROM api_keys")
    assert row is not None
    assert bytes(row["secret_hash"]) == key_hash(found.group(0))
    assert found.group(0) not in str(dict(row))
    assert list(row["scopes"]) == ["contacts:read", "contacts:write"]

    code, out = await run_cli(monkeypatch, db_url, "api-keys", "list")
    assert code == 0
    assert row["prefix"] in out
    assert "active" in out
    assert found.group(0) not in out


async def test_unknown_scopes_are_refused_by_name_and_nothing_is_written(
    monkeypatch: pytest.MonkeyPatch, db_url: str, conn: asyncpg.Connection
) -> None:
    code, out = await run_cli(
        monkeypatch, db_url, "api-keys", "create", "x", "--scopes", "contacts:write,root"
    )
    assert code == 2
    assert "unknown scope(s) root" in out
    assert await conn.fetchval("SELECT count(*) FROM api_keys") == 0


async def test_revoke_and_expire_change_the_listed_state_and_are_logged(
    monkeypatch: pytest.MonkeyPatch, db_url: str, conn: asyncpg.Connection
) -> None:
    for name in ("one", "two"):
        assert (await run_cli(monkeypatch, db_url, "api-keys", "create", name, "--scopes",
                              "campaigns:read"))[0] == 0  # fmt: skip
    assert (await run_cli(monkeypatch, db_url, "api-keys", "revoke", "one"))[0] == 0
    assert (await run_cli(monkeypatch, db_url, "api-keys", "expire", "two"))[0] == 0
    code, out = await run_cli(monkeypatch, db_url, "api-keys", "list")
    assert "revoked" in out
    assert "expired" in out
    assert "active" not in out
    actions = [r[0] for r in await conn.fetch("SELECT action FROM operator_log ORDER BY id")]
    assert actions == [
        "api_key.create",
        "api_key.create",
        "api_key.revoke",
        "api_key.expire",
    ]
    code, out = await run_cli(monkeypatch, db_url, "api-keys", "revoke", "nobody")
    assert code == 2
    assert "no active key" in out


async def test_the_operator_log_is_append_only(stores: Stores, conn: asyncpg.Connection) -> None:
    store = ComplianceStore(stores.pool)
    first = await log_operator_action(
        stores.pool, "operator", "alice", "campaign.pause", "campaign", "spring", {"why": "typo"}
    )
    await store.log_operator_action("api_key", "0123abcd", "contacts.upsert", "contact", "7")
    page = await store.operator_log(limit=10)
    assert [e.action for e in page] == ["contacts.upsert", "campaign.pause"]
    assert page[1].detail == {"why": "typo"}
    assert [e.id for e in await store.operator_log(before=page[0].id)] == [first]
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await conn.execute("UPDATE operator_log SET actor_id = 'mallory'")
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await conn.execute("DELETE FROM operator_log")
