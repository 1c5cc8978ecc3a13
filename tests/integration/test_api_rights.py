"""A person's data rights and registry uploads through the API, against the CLI's results
for the same operation: export, erasure (logged without the address), and a suppression
file imported all or nothing with its bad lines named."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg
import pytest

from mailer.core.addresses import address_hash
from mailer.core.settings import Settings
from tests.api_client import api_client, make_key
from tests.cli_run import run_cli

PEOPLE = {
    "contacts": [
        {"email": f"{name}@example.com", "name": name.title(), "consent": {
            "kind": "express", "source": "web", "obtained_at": "2026-01-02"}}
        for name in ("ana", "ben")
    ]
}  # fmt: skip


async def test_export_and_erasure_match_the_cli_and_the_log_keeps_no_address(
    settings: Settings, conn: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch, db_url: str, tmp_path: Path,
) -> None:  # fmt: skip
    writer = await make_key(settings, "contacts:write", "contacts:read")
    key = await make_key(settings, "contacts:erase", "contacts:read", name="privacy")
    reader = await make_key(settings, "contacts:read", name="reader")
    async with api_client(settings) as api:
        assert (await api.call("POST", "/api/v1/contacts", writer, PEOPLE)).status == 200
        exported = await api.call("GET", "/api/v1/contacts/Ana@Example.com/export", reader)
        out = tmp_path / "ana.json"
        code, _ = await run_cli(
            monkeypatch, db_url, "contacts", "export", "ana@example.com", "--out", str(out)
        )
        assert code == 0
        from_cli = json.loads(out.read_text(encoding="utf-8"))
        for document in (from_cli, exported.body):
            document.pop("generated_at")
        assert exported.body == from_cli
        assert exported.body["held"] is True
        assert exported.body["tables"]["contacts"][0]["name"] == "Ana"
        refused = await api.call("POST", "/api/v1/contacts/ana@example.com/erase", reader)
        assert refused.status == 403
        # A key that pushes contacts cannot erase them: erasure is a scope of its own.
        pusher = await api.call("POST", "/api/v1/contacts/ana@example.com/erase", writer)
        assert pusher.status == 403
        once = {"Idempotency-Key": "erase-ana"}
        erased = await api.call("POST", "/api/v1/contacts/ana@example.com/erase", key,
                                headers=once)  # fmt: skip
        assert erased.status == 200
        replay = await api.call("POST", "/api/v1/contacts/ana@example.com/erase", key,
                                headers=once)  # fmt: skip
        assert replay.body == erased.body
        assert replay.headers["Idempotent-Replayed"] == "true"
        code, printed = await run_cli(
            monkeypatch, db_url, "contacts", "erase", "ben@example.com", "--yes"
        )
        assert code == 0
        gone = await api.call("GET", "/api/v1/contacts/ana@example.com", reader)
        after = await api.call("GET", "/api/v1/contacts/ana@example.com/export", reader)
    assert gone.body["contact"] is None  # only the hashed suppression is left
    assert after.body["held"] is True  # the hashed suppression and the erasure's record
    assert "Ana" not in json.dumps(after.body)
    # The same erasure by either face: the same lines, one privacy-log row each.
    assert erased.body["contacts"] == 1
    assert erased.body["suppressions"] == 1
    for line in erased.body["lines"][:-1]:  # the last names its own privacy_log row
        assert line in printed
    users = [r["os_user"] for r in await conn.fetch("SELECT os_user FROM privacy_log ORDER BY id")]
    assert users[0].startswith("api:")
    assert len(users) == 2
    log = await conn.fetch(
        "SELECT action, object_id, detail::text FROM operator_log "
        "WHERE action LIKE 'contacts.e%' ORDER BY id"
    )
    assert [r["action"] for r in log] == [
        "contacts.export", "contacts.erase", "contacts.erase", "contacts.export"
    ]  # the CLI's erasure of ben too, by the same hash rule  # fmt: skip
    hashes = {address_hash(a).hex() for a in ("ana@example.com", "ben@example.com")}
    assert {r["object_id"] for r in log} == hashes
    assert not any("ana@" in r["detail"].lower() for r in log)


async def test_a_registry_upload_is_all_or_nothing_with_its_bad_lines_named_like_the_cli(
    settings: Settings, conn: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch, db_url: str, tmp_path: Path,
) -> None:  # fmt: skip
    key = await make_key(settings, "suppressions:write")
    good = b"email\r\na@example.com\r\nB@Example.com\r\n"
    bad = b"email\na@example.com\nnot-an-address\nc@example.com\n@nope\n"
    path = tmp_path / "dnc.csv"
    path.write_bytes(bad)
    async with api_client(settings) as api:
        refused = await api.call("POST", "/api/v1/suppressions/import", key, raw=bad,
                                 content_type="text/csv")  # fmt: skip
        assert refused.status == 422
        assert [e["line"] for e in refused.body["errors"]] == [3, 5]
        assert await conn.fetchval("SELECT count(*) FROM suppressions") == 0
        # The CLI reads the same file with the same reader: the same lines refused.
        code, printed = await run_cli(monkeypatch, db_url, "suppress", "import", str(path))
        assert code == 0
        assert "2 rejected" in printed
        assert await conn.fetchval("SELECT count(*) FROM suppressions") == 2
        no_topic = await api.call("POST", "/api/v1/suppressions/import?scope=topic", key,
                                  raw=good, content_type="text/csv")  # fmt: skip
        assert no_topic.status == 400
        assert no_topic.body["detail"].startswith("topic:")
        once = {"Idempotency-Key": "dnc-2026-03"}
        url = "/api/v1/suppressions/import?source=DNC%202026-03"
        added = await api.call("POST", url, key, raw=good, content_type="text/csv", headers=once)
        again = await api.call("POST", url, key, raw=good, content_type="text/csv", headers=once)
    assert added.body == {"received": 2, "added": 1}  # a@ was suppressed by the CLI already
    assert again.body == added.body
    rows = await conn.fetch("SELECT reason, scope, source FROM suppressions ORDER BY id")
    assert [(r["reason"], r["scope"]) for r in rows] == [("registry", "global")] * 3
    assert rows[-1]["source"] == "DNC 2026-03"
    actions = await conn.fetch("SELECT action FROM operator_log")
    assert [r["action"] for r in actions] == ["suppressions.import"] * 2  # the CLI's, the API's
