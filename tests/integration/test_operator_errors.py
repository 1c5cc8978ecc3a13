"""What a new operator meets at each door with a wrong setting or input: one clear line."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.cli_run import run_cli


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
    ("argv", "option"),
    [
        (("consents", "expiring", "--within", "99999999999d"), "--within"),
        (("consents", "expiring", "--within", "3000000d"), "--within"),
        (("transactional", "report", "--since", "99999999999w"), "--since"),
        (("api-keys", "create", "dms", "--scopes", "contacts:read", "--expires", "9999999999d"),
         "--expires"),
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
