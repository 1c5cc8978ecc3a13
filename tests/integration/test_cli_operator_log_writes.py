"""The CLI's other writes (forms, webhooks enable|disable|replay, operators add, hygiene purge,
topics) each leave one operator-log line as actor_kind 'cli', and where their store call takes
the logged write's connection, a log line that cannot be written undoes the change."""

from __future__ import annotations

import getpass
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from mailer.core.addresses import address_hash
from tests.cli_run import run_cli

pytestmark = pytest.mark.timeout(120)

FR = "J'accepte de recevoir l'infolettre du Garage Tremblay par courriel."
FR_2 = FR + " Je peux me désabonner en tout temps."
IDENTITY = {
    "MAILER_FORMS_BUSINESS_NAME": "Garage Tremblay Automobiles",
    "MAILER_FORMS_POSTAL_ADDRESS": "2450, boulevard Laurier, Québec (Québec)  G1V 2L1",
    "MAILER_FORMS_CONTACT": "+1 418-555-0142",
}
FORM_ADD = ("forms", "add", "infolettre", "--source", "Site web", "--locale", "fr", "--text-fr", FR)
REFUSER = """CREATE FUNCTION refuse_log() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN RAISE EXCEPTION 'operator log unavailable'; END $$"""
REFUSE_LOG = (
    "CREATE TRIGGER refuse_log BEFORE INSERT ON operator_log "
    "FOR EACH ROW EXECUTE FUNCTION refuse_log()"
)
Line = tuple[str, str, str, str | None, str | None]


@pytest.fixture(autouse=True)
def identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """The business a form names (CASL s.6(2)(a)): without it no form is created."""
    for name, value in IDENTITY.items():
        monkeypatch.setenv(name, value)


async def _log(conn: asyncpg.Connection) -> list[Line]:
    rows = await conn.fetch(
        "SELECT actor_kind, actor_id, action, object_kind, object_id FROM operator_log ORDER BY id"
    )
    return [tuple(r) for r in rows]


async def _dormant_contact(conn: asyncpg.Connection) -> int:
    """A contact without consent, inactive for two years: `hygiene purge` erases it."""
    email, long_ago = "dormant@example.com", datetime.now(UTC) - timedelta(days=730)
    return int(
        await conn.fetchval(
            "INSERT INTO contacts (email, email_hash, last_activity_at, created_at) "
            "VALUES ($1, $2, $3, $3) RETURNING id",
            email,
            address_hash(email),
            long_ago,
        )
    )


async def _granted_contact(monkeypatch: pytest.MonkeyPatch, db_url: str, tmp_path: Path) -> None:
    """An imported contact whose consent is a webhook event (contact.consent.granted)."""
    csv = tmp_path / "contacts.csv"
    csv.write_text(
        "email,consent,consent_source,consent_date\na@example.com,express,web,2026-01-05\n"
    )
    code, out = await run_cli(monkeypatch, db_url, "contacts", "import", str(csv))
    assert code == 0, out


async def test_each_cli_write_leaves_one_log_line_naming_the_os_user_and_the_object(
    conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch, db_url: str, tmp_path: Path
) -> None:
    me = getpass.getuser()
    await _dormant_contact(conn)

    async def logs(*argv: str) -> list[Line]:
        """What `mailer ARGV` added to the operator log."""
        before = len(await _log(conn))
        code, out = await run_cli(monkeypatch, db_url, *argv)
        assert code == 0, out
        return (await _log(conn))[before:]

    hook = (
        "webhooks",
        "add",
        "https://crm.example.com/hook",
        "--events",
        "contact.consent.granted",
    )
    assert await logs(*hook) == [("cli", me, "webhook.add", "webhook", "1")]
    await _granted_contact(monkeypatch, db_url, tmp_path)  # an event the replay sends again
    assert await logs("topics", "add", "service") == [
        ("cli", me, "topic.upsert", "topic", "service")
    ]
    assert await logs(*FORM_ADD) == [("cli", me, "form.add", "form", "infolettre")]
    reword = ("forms", "text", "infolettre", "--locale", "fr", FR_2)
    assert await logs(*reword) == [("cli", me, "form.text", "form", "infolettre")]
    assert await logs(*reword) == []  # worded so already: no version, nothing changed
    assert await logs("forms", "disable", "infolettre") == [
        ("cli", me, "form.disable", "form", "infolettre")
    ]
    assert await logs("webhooks", "disable", "1") == [
        ("cli", me, "webhook.disable", "webhook", "1")
    ]
    assert await logs("webhooks", "disable", "1") == []  # already off
    assert await logs("webhooks", "enable", "1") == [("cli", me, "webhook.enable", "webhook", "1")]
    assert await logs("webhooks", "replay", "1", "--since", "2000-01-01") == [
        ("cli", me, "webhook.replay", "webhook", "1")
    ]
    assert await logs("operators", "add", "ada@example.com", "--role", "sender") == [
        ("cli", me, "operator.add", "operator", "ada@example.com")
    ]
    purged = await logs("hygiene", "purge", "--inactive", "12m", "--yes")
    purge_id = await conn.fetchval("SELECT id FROM privacy_log WHERE action = 'purge'")
    assert purged == [("cli", me, "hygiene.purge", "privacy_log", str(purge_id))]
    details = await conn.fetch(
        "SELECT action, detail->>'via', coalesce(detail->>'version', detail->>'queued',"
        " detail->>'contacts') FROM operator_log"
        " WHERE action IN ('webhook.replay', 'form.text', 'hygiene.purge') ORDER BY id"
    )
    assert [tuple(r) for r in details] == [
        ("form.text", "cli", "2"),  # the new version
        ("webhook.replay", "cli", "1"),  # events queued again
        ("hygiene.purge", "cli", "1"),  # contacts erased
    ]


async def test_a_cli_write_whose_log_line_fails_is_undone(
    conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch, db_url: str, tmp_path: Path
) -> None:
    dormant = await _dormant_contact(conn)
    for argv in (
        FORM_ADD,
        ("webhooks", "add", "https://crm.example.com/hook", "--events", "contact.consent.granted"),
        ("webhooks", "add", "https://erp.example.com/hook", "--events", "contact.consent.granted"),
        ("webhooks", "disable", "2"),
    ):
        code, out = await run_cli(monkeypatch, db_url, *argv)
        assert code == 0, out
    await _granted_contact(monkeypatch, db_url, tmp_path)
    # Endpoint 1 missed the event (as if added later): a replay would queue it.
    await conn.execute("DELETE FROM webhook_deliveries WHERE endpoint_id = 1")
    await conn.execute(REFUSER)
    await conn.execute(REFUSE_LOG)

    async def undone(argv: tuple[str, ...], state: Callable[[], Awaitable[object]]) -> None:
        """`mailer ARGV` fails on its log line and leaves `state` as it was."""
        before = await state()
        with pytest.raises(asyncpg.RaiseError, match="operator log unavailable"):
            await run_cli(monkeypatch, db_url, *argv)
        assert await state() == before, argv

    async def value(sql: str, *args: object) -> object:
        return await conn.fetchval(sql, *args)

    forms = "SELECT count(*) FROM forms"
    await undone(
        ("forms", "add", "ventes", "--source", "Site", "--text-en", FR), lambda: value(forms)
    )
    texts = "SELECT max(version) FROM form_texts"
    await undone(("forms", "text", "infolettre", "--locale", "fr", FR_2), lambda: value(texts))
    enabled = "SELECT disabled_at FROM forms"
    await undone(("forms", "disable", "infolettre"), lambda: value(enabled))
    off = "SELECT array_agg(disabled_at IS NULL ORDER BY id) FROM webhook_endpoints"
    await undone(("webhooks", "disable", "1"), lambda: value(off))
    await undone(("webhooks", "enable", "2"), lambda: value(off))
    queued = "SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = 1"
    await undone(("webhooks", "replay", "1", "--since", "2000-01-01"), lambda: value(queued))
    operators = "SELECT count(*) FROM operators"
    await undone(
        ("operators", "add", "ada@example.com", "--role", "sender"), lambda: value(operators)
    )
    erased = "SELECT erased_at FROM contacts WHERE id = $1"
    await undone(("hygiene", "purge", "--inactive", "12m", "--yes"), lambda: value(erased, dormant))
    assert await value("SELECT count(*) FROM privacy_log") == 0


async def test_a_topic_whose_log_line_fails_is_not_written(
    conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch, db_url: str
) -> None:
    await conn.execute(REFUSER)
    await conn.execute(REFUSE_LOG)
    with pytest.raises(asyncpg.RaiseError, match="operator log unavailable"):
        await run_cli(monkeypatch, db_url, "topics", "add", "service")
    assert await conn.fetchval("SELECT count(*) FROM topics") == 0
