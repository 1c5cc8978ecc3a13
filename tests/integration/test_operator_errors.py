"""What a new operator meets at each door with a wrong setting or input: one clear line."""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from mailer.console.app import create_app
from mailer.core.settings import Settings
from mailer.db import DatabaseUnreachable
from tests.api_client import api_client, make_key
from tests.cli_run import run_cli
from tests.console_setup import console_settings
from tests.engine_setup import KEYS, TEMPLATES


def _elsewhere(dsn: str, *, database: str, password: str) -> str:
    parts = urlsplit(dsn)
    user = parts.username or "postgres"
    netloc = f"{user}:{password}@{parts.hostname}:{parts.port or 5432}"
    return urlunsplit(parts._replace(netloc=netloc, path=f"/{database}"))


@pytest.mark.parametrize("argv", [("db", "migrate"), ("topics", "list"), ("console", "serve")])
async def test_a_database_that_does_not_exist_is_named_without_a_traceback_or_the_password(
    monkeypatch: pytest.MonkeyPatch, server_dsn: str, argv: tuple[str, ...]
) -> None:
    url = _elsewhere(server_dsn, database="no_such_database_here", password="s3cret-pw")
    code, printed = await run_cli(monkeypatch, url, *argv)
    assert code == 2
    assert "Traceback" not in printed
    assert "database.url" in printed
    assert "DATABASE_URL" in printed
    assert 'database "no_such_database_here" does not exist' in printed
    assert "s3cret-pw" not in printed


@pytest.mark.parametrize("argv", [("topics", "list"), ("contacts", "show", "ana@example.com")])
async def test_a_database_never_migrated_says_to_run_db_migrate_instead_of_a_traceback(
    monkeypatch: pytest.MonkeyPatch, empty_db_url: str, argv: tuple[str, ...]
) -> None:
    code, printed = await run_cli(monkeypatch, empty_db_url, *argv)
    assert code == 2
    assert "Traceback" not in printed
    assert "not migrated" in printed
    assert "mailer db migrate" in printed


@pytest.mark.parametrize("slug", ["Bad Slug!", "x" * 64, "_leading", "rappels-été"])
async def test_topics_add_refuses_a_slug_the_schema_cannot_hold_naming_the_rule(
    monkeypatch: pytest.MonkeyPatch, db_url: str, slug: str
) -> None:
    code, printed = await run_cli(monkeypatch, db_url, "topics", "add", slug)
    assert code == 2
    assert "Traceback" not in printed
    assert "topic slug" in printed
    assert "lowercase letters, digits" in printed
    code, listed = await run_cli(monkeypatch, db_url, "topics", "list")
    assert code == 0
    assert slug[:10] not in listed


@pytest.mark.parametrize(
    ("option", "name", "why"),
    [("--name", "Promotions " * 20, "at most 100"), ("--name-fr", "Rappels\x1b[2J", "control")],
)
async def test_topics_add_refuses_a_name_recipients_could_not_read_as_one_line(
    monkeypatch: pytest.MonkeyPatch, db_url: str, option: str, name: str, why: str
) -> None:
    code, printed = await run_cli(monkeypatch, db_url, "topics", "add", "promotions", option, name)
    assert code == 2
    assert "Traceback" not in printed
    assert option in printed
    assert why in printed
    code, listed = await run_cli(monkeypatch, db_url, "topics", "list")
    assert "promotions" not in listed


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (("consents", "expiring", "--within", "99999999999d"), "--within"),
        (("consents", "expiring", "--within", "3000000d"), "--within"),
        (("transactional", "report", "--since", "99999999999w"), "--since"),
    ],
)  # fmt: skip
async def test_a_huge_duration_is_refused_naming_the_option_instead_of_an_overflow(
    monkeypatch: pytest.MonkeyPatch, db_url: str, argv: tuple[str, ...], option: str
) -> None:
    code, printed = await run_cli(monkeypatch, db_url, *argv)
    assert code == 2
    assert "Traceback" not in printed
    assert option in printed
    assert "100 years" in printed
    code, listed = await run_cli(monkeypatch, db_url, "api-keys", "list")
    assert "dms" not in listed


@pytest.mark.parametrize(
    "argv",
    [
        ("consents", "expiring", "--within", "30d", "--at", "garbage"),
        ("campaign", "audience", "spring", "--at", "2026-13-01"),
        ("contacts", "explain", "ana@example.com", "--campaign", "spring", "--at", "tomorrow"),
    ],
)
async def test_an_at_option_that_is_not_a_time_is_refused_naming_it(
    monkeypatch: pytest.MonkeyPatch, db_url: str, argv: tuple[str, ...]
) -> None:
    code, printed = await run_cli(monkeypatch, db_url, *argv)
    assert code == 2
    assert "Traceback" not in printed
    assert "--at:" in printed
    assert "ISO 8601" in printed


BAD_WEBHOOK_URLS = [
    "http://[::1",  # an IPv6 address never closed
    "http://127.0.0.1:99999/hook",  # no such port: every attempt would fail for 72 hours
    "http://127.0.0.1:8999/a b",
    "http://127.0.0.1:8999/a\r\nX-Injected: 1",
]


@pytest.mark.parametrize("url", BAD_WEBHOOK_URLS)
async def test_webhooks_add_refuses_a_url_no_request_can_reach_naming_the_url(
    monkeypatch: pytest.MonkeyPatch, db_url: str, conn: asyncpg.Connection, url: str
) -> None:
    code, printed = await run_cli(
        monkeypatch, db_url, "webhooks", "add", url, "--events", "contact.unsubscribed"
    )
    assert code == 2
    assert "Traceback" not in printed
    assert "url:" in printed
    assert await conn.fetchval("SELECT count(*) FROM webhook_endpoints") == 0


async def test_the_api_answers_a_bad_webhook_url_with_422_not_500(
    settings: Settings, conn: asyncpg.Connection
) -> None:
    key = await make_key(settings, "webhooks:manage")
    async with api_client(settings) as api:
        for url in BAD_WEBHOOK_URLS:
            hook = {"url": url, "events": ["contact.unsubscribed"]}
            answer = await api.call("POST", "/api/v1/webhooks", key, hook)
            assert answer.status == 422, (url, answer.body)
            assert "url" in str(answer.body)
    assert await conn.fetchval("SELECT count(*) FROM webhook_endpoints") == 0


async def test_a_nul_character_in_any_json_body_is_a_422_naming_the_field_not_a_500(
    settings: Settings, conn: asyncpg.Connection
) -> None:
    # JSON allows "\u0000"; Postgres text and jsonb do not. A website relaying a form field
    # with one must get an answer it can act on, and nothing may be half-written.
    key = await make_key(
        settings, "contacts:write", "consents:write", "transactional:send", "webhooks:manage"
    )
    bodies = [
        ("/api/v1/contacts", {"contacts": [{"email": "a@example.com", "name": "A\x00B"}]},
         "/contacts/0/name"),
        ("/api/v1/consents", {"email": "b@example.com", "action": "grant", "kind": "express",
                              "source": "web", "obtained_at": "2026-03-02T10:15:00Z",
                              "evidence": {"ip\x00": "203.0.113.7"}}, "/evidence/ip\x00"),
        ("/api/v1/contacts/c@example.com/opt-out", {"source": "SMS\x00STOP"}, "/source"),
        ("/api/v1/transactional", {"template": "parts_received", "to": "d@example.com",
                                   "data": {"order": "\x00"}}, "/data/order"),
        ("/api/v1/webhooks", {"url": "http://127.0.0.1/\x00",
                              "events": ["contact.unsubscribed"]}, "/url"),
    ]  # fmt: skip
    async with api_client(settings) as api:
        for path, body, pointer in bodies:
            answer = await api.call("POST", path, key, body)
            assert answer.status == 422, (path, answer.body)
            assert [e["pointer"] for e in answer.body["errors"]] == [pointer]
    written = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM contacts) AS contacts,"
        " (SELECT count(*) FROM consents) AS consents,"
        " (SELECT count(*) FROM transactional_messages) AS notices,"
        " (SELECT count(*) FROM webhook_endpoints) AS endpoints"
    )
    assert written is not None
    assert dict(written) == {"contacts": 0, "consents": 0, "notices": 0, "endpoints": 0}


@pytest.mark.parametrize("content", [b"\xff\xfeslug = 'x'\n", b'slug = "x"\nname = "caf\xe9"\n'])
async def test_a_campaign_file_that_is_not_utf8_is_refused_naming_its_line(
    monkeypatch: pytest.MonkeyPatch, db_url: str, tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "spring.toml"
    path.write_bytes(content)  # as a Windows editor saves it (UTF-16, Windows-1252)
    code, printed = await run_cli(monkeypatch, db_url, "campaign", "create", str(path))
    assert code == 2
    assert "Traceback" not in printed
    assert "not UTF-8" in printed
    newlines = content.count(b"\n")  # the bad byte is on the file's last line
    assert f"line {newlines}:" in printed


async def test_a_report_page_that_cannot_be_written_is_an_error_naming_html(
    monkeypatch: pytest.MonkeyPatch, db_url: str, tmp_path: Path
) -> None:
    campaign = str(TEMPLATES / "service_reminder.toml")
    assert (await run_cli(monkeypatch, db_url, "topics", "add", "service"))[0] == 0
    assert (await run_cli(monkeypatch, db_url, "campaign", "create", campaign))[0] == 0
    slug = "service-reminder-2024-10"
    for target, why in [(tmp_path / "no" / "r.html", "no such folder"), (tmp_path, "directory")]:
        code, printed = await run_cli(
            monkeypatch, db_url, "campaign", "report", slug, "--html", str(target)
        )
        assert code == 2
        assert "Traceback" not in printed
        assert f"--html {target}" in printed
        assert why in printed


@pytest.mark.timeout(60)
@pytest.mark.parametrize("keys", ["garbage", "1:" + "c2hvcnQ=", "x:" + "a" * 44])
@pytest.mark.parametrize("argv", [("tracker", "serve"), ("worker",)])
async def test_a_malformed_or_short_token_key_stops_the_command_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, db_url: str, keys: str, argv: tuple[str, ...]
) -> None:
    monkeypatch.setenv("MAILER_TOKEN_KEYS", keys)
    monkeypatch.setenv("MAILER_ENGINE_METRICS_PORT", "0")
    code, printed = await run_cli(monkeypatch, db_url, *argv)
    assert code == 2
    assert "Traceback" not in printed
    assert "tokens.keys: " in printed
    assert "c2hvcnQ" not in printed  # never the secret itself


@pytest.mark.timeout(60)
async def test_a_metrics_port_already_taken_stops_send_and_worker_before_anything_starts(
    monkeypatch: pytest.MonkeyPatch, db_url: str, conn: asyncpg.Connection
) -> None:
    # A second worker on the machine, or `campaign send` beside a running worker.
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    monkeypatch.setenv("MAILER_ENGINE_METRICS_PORT", str(taken.getsockname()[1]))
    monkeypatch.setenv("MAILER_TOKEN_KEYS", KEYS)
    assert (await run_cli(monkeypatch, db_url, "topics", "add", "service"))[0] == 0
    campaign = str(TEMPLATES / "service_reminder.toml")
    assert (await run_cli(monkeypatch, db_url, "campaign", "create", campaign))[0] == 0
    with taken:
        for argv in (("campaign", "send", "service-reminder-2024-10"), ("worker",)):
            code, printed = await run_cli(monkeypatch, db_url, *argv)
            assert code == 2, argv
            assert "Traceback" not in printed
            assert "engine.metrics_port" in printed
    assert await conn.fetchval("SELECT status FROM campaigns") == "draft"


def _closed_port() -> int:
    """A port of 127.0.0.1 nobody listens on (bound, then let go)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("argv", [("topics", "list"), ("console", "serve")])
async def test_a_database_nobody_listens_for_is_one_line_naming_the_setting_and_the_address(
    monkeypatch: pytest.MonkeyPatch, argv: tuple[str, ...]
) -> None:
    url = f"postgresql://mailer:s3cret-pw@127.0.0.1:{_closed_port()}/mailer"
    code, printed = await run_cli(monkeypatch, url, *argv)
    assert code == 2
    assert "Traceback" not in printed
    assert "cannot connect to Postgres (database.url or DATABASE_URL" in printed
    assert "127.0.0.1:" in printed
    assert "s3cret-pw" not in printed


async def test_the_console_app_does_not_start_on_a_database_nobody_listens_for() -> None:
    # The app factory's own start (what `mailer console serve` runs, and any host of the app).
    url = f"postgresql://mailer:s3cret-pw@127.0.0.1:{_closed_port()}/mailer"
    app = create_app(console_settings(url, TEMPLATES))
    with pytest.raises(DatabaseUnreachable) as refused:
        async with TestServer(app):
            pass
    said = str(refused.value)
    assert said.startswith("cannot connect to Postgres (database.url or DATABASE_URL: 127.0.0.1:")
    assert "as mailer" in said
    assert "s3cret-pw" not in said
