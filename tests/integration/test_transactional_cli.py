"""From the outside: `mailer send`, `mailer worker`, `mailer transactional report|show|check`,
`contacts explain --template`, against real Postgres and a real SMTP sink (issue #18)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path

import asyncpg
import pytest

from mailer.core.addresses import address_hash
from tests.cli_run import run_cli
from tests.engine_setup import KEYS
from tests.lane_setup import PARTS, RECALL, TEMPLATES
from tests.smtp_servers import smtp_server


def worker_env(db_url: str, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": db_url,
        "MAILER_SMTP_PORT": str(port),
        "MAILER_TOKEN_KEYS": KEYS,
        "MAILER_ENGINE_METRICS_PORT": "0",
        "MAILER_ENGINE_LEASE_SECONDS": "10",
        "MAILER_TRANSACTIONAL_TEMPLATES_DIR": str(TEMPLATES),
        "MAILER_TRANSACTIONAL_POLL_MS": "50",
    }


async def run_worker_until_idle(db_url: str, port: int) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mailer", "worker", "--until-idle",
        env=worker_env(db_url, port),
        stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    async with asyncio.timeout(60):
        assert await proc.wait() == 0


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILER_TOKEN_KEYS", KEYS)
    monkeypatch.setenv("MAILER_TRANSACTIONAL_TEMPLATES_DIR", str(TEMPLATES))


async def test_send_accepts_then_a_worker_delivers_and_report_and_show_tell_the_story(
    monkeypatch: pytest.MonkeyPatch, db_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    data = tmp_path / "data.json"
    data.write_text(json.dumps(PARTS), encoding="utf-8")
    code, out = await run_cli(
        monkeypatch, db_url, "send", "parts_received", "--to", "walkin@example.com",
        "--data", str(data), "--idempotency-key", "dms-77",
    )  # fmt: skip
    assert code == 0, out
    match = re.search(r"accepted: message (\d+)", out)
    assert match is not None, out
    message_id = int(match[1])
    code, out = await run_cli(
        monkeypatch, db_url, "send", "parts_received", "--to", "walkin@example.com",
        "--data", str(data), "--idempotency-key", "dms-77",
    )  # fmt: skip
    assert code == 0
    assert f"accepted before: message {message_id}" in out
    # A recall to a person who unsubscribed from marketing: sent, and the answer says why.
    await conn.execute(
        "INSERT INTO suppressions (email_hash, scope, channel, reason, source) "
        "VALUES ($1, 'channel', 'email', 'unsubscribe', 'tracker')",
        address_hash("optedout@example.com"),
    )
    recall = tmp_path / "recall.json"
    recall.write_text(json.dumps(RECALL), encoding="utf-8")
    code, out = await run_cli(
        monkeypatch, db_url, "send", "safety_recall", "--to", "optedout@example.com",
        "--data", str(recall),
    )  # fmt: skip
    assert code == 0
    assert "delivered despite: unsubscribed from this channel" in out
    with smtp_server() as (port, sink):
        await run_worker_until_idle(db_url, port)
    assert sorted(sink.recipients) == ["optedout@example.com", "walkin@example.com"]

    code, out = await run_cli(monkeypatch, db_url, "transactional", "report", "--since", "1d")
    assert code == 0
    assert re.search(r"parts_received\s+│\s+transaction\s+│\s+1", out), out
    assert re.search(r"safety_recall\s+│\s+warranty_recall_safety\s+│\s+1", out), out
    assert "sent despite an opt-out" in out
    assert "optedout@example.com" in out
    assert "s.6(6)(c)" in out

    code, out = await run_cli(monkeypatch, db_url, "transactional", "show", str(message_id))
    assert code == 0
    assert "reproduces the bytes sent" in out
    assert "walkin@example.com" in out
    assert "250" in out


async def test_send_refuses_a_hard_bounced_address_and_names_the_rule(
    monkeypatch: pytest.MonkeyPatch, db_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await conn.execute(
        "INSERT INTO suppressions (email_hash, scope, reason, source) "
        "VALUES ($1, 'global', 'hard_bounce', 'inbound')",
        address_hash("dead@example.com"),
    )
    data = tmp_path / "data.json"
    data.write_text(json.dumps(RECALL), encoding="utf-8")
    code, out = await run_cli(
        monkeypatch, db_url, "send", "safety_recall", "--to", "dead@example.com",
        "--data", str(data),
    )  # fmt: skip
    assert code == 1
    assert "refused" in out
    assert "hard_bounced: address hard-bounced" in out


async def test_send_with_bad_data_says_what_is_missing_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, db_url: str, tmp_path: Path
) -> None:
    data = tmp_path / "data.json"
    data.write_text('{"order": "BC-1"}', encoding="utf-8")
    code, out = await run_cli(
        monkeypatch, db_url, "send", "parts_received", "--to", "a@example.com",
        "--data", str(data),
    )  # fmt: skip
    assert code == 2
    assert "data: template parts_received does not render" in out
    assert "Traceback" not in out
    data.write_text("[1, 2", encoding="utf-8")
    code, out = await run_cli(
        monkeypatch, db_url, "send", "parts_received", "--to", "a@example.com",
        "--data", str(data),
    )  # fmt: skip
    assert code == 2
    assert "not JSON" in out


async def test_contacts_explain_answers_for_a_transactional_template(
    monkeypatch: pytest.MonkeyPatch, db_url: str, conn: asyncpg.Connection
) -> None:
    await conn.execute(
        "INSERT INTO suppressions (email_hash, scope, channel, reason, source) "
        "VALUES ($1, 'channel', 'email', 'unsubscribe', 'tracker')",
        address_hash("optedout@example.com"),
    )
    code, out = await run_cli(
        monkeypatch, db_url, "contacts", "explain", "optedout@example.com",
        "--template", "safety_recall",
    )  # fmt: skip
    assert code == 0
    assert "would be sent" in out
    assert "s.6(6)(c)" in out
    assert "delivered despite: unsubscribed from this channel" in out


async def test_transactional_check_lints_a_template_per_its_basis(
    monkeypatch: pytest.MonkeyPatch, db_url: str
) -> None:
    code, out = await run_cli(monkeypatch, db_url, "transactional", "check", "parts_received")
    assert code == 0
    assert "s.6(6)(b)" in out


async def test_erasing_a_person_strips_their_notices_and_skips_the_unsent_ones(
    monkeypatch: pytest.MonkeyPatch, db_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    data = tmp_path / "data.json"
    data.write_text(json.dumps(PARTS), encoding="utf-8")
    code, _ = await run_cli(
        monkeypatch, db_url, "send", "parts_received", "--to", "leaving@example.com",
        "--data", str(data),
    )  # fmt: skip
    assert code == 0
    export = tmp_path / "export.json"
    code, _ = await run_cli(
        monkeypatch, db_url, "contacts", "export", "leaving@example.com", "--out", str(export)
    )
    assert code == 0
    held = json.loads(export.read_text(encoding="utf-8"))
    assert held["tables"]["transactional_messages"][0]["data"] == PARTS
    code, out = await run_cli(
        monkeypatch, db_url, "contacts", "erase", "leaving@example.com", "--yes"
    )
    assert code == 0, out
    assert "1 transactional message(s) stripped of their data" in out
    row = await conn.fetchrow("SELECT status, skip_reason, data::text FROM transactional_messages")
    assert row is not None
    assert (row["status"], row["skip_reason"], row["data"]) == ("skipped", "erased", "{}")
    # And the address, now a hash, is refused: sending would break the erasure.
    code, out = await run_cli(
        monkeypatch, db_url, "send", "parts_received", "--to", "leaving@example.com",
        "--data", str(data),
    )  # fmt: skip
    assert code == 1
    assert "erased" in out


async def test_send_refuses_an_address_the_lane_could_never_send_to_instead_of_accepting_it(
    monkeypatch: pytest.MonkeyPatch, db_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    data = tmp_path / "data.json"
    data.write_text(json.dumps(PARTS), encoding="utf-8")
    code, out = await run_cli(
        monkeypatch, db_url, "send", "parts_received", "--to", "émile@exemple.ca",
        "--data", str(data), "--idempotency-key", "dms-utf8",
    )  # fmt: skip
    assert code == 2
    assert "Traceback" not in out
    assert "to: 'émile@exemple.ca'" in out
    assert "SMTPUTF8" in out
    assert await conn.fetchval("SELECT count(*) FROM transactional_messages") == 0
