"""DKIM from the command line: `campaign preview` signs; a bad DKIM setting exits 2 naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailer.commands.main import main
from mailer.core.settings import load
from tests.dkim_setup import dns_stub, ed25519_pem, rsa_pem, signatures, verify_each, write_key
from tests.engine_setup import KEYS, TEMPLATES

FROM_DOMAIN = "garage-tremblay.example"
CONTACTS = (
    "email,name,locale,consent,consent_source,consent_date,"
    "attr.vehicle,attr.next_service,attr.mileage\n"
    "marie@example.com,Marie Tremblay,fr,express,Salon E-commerce Paris,2012-09-19,"
    "Toyota RAV4 2019,2026-12-01,48200\n"
)


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Only what these tests set reaches load."""
    monkeypatch.delenv("MAILER_CONFIG", raising=False)
    monkeypatch.setenv("MAILER_TOKEN_KEYS", KEYS)
    return monkeypatch


def run(*argv: str) -> int:
    return main(list(argv))


def test_campaign_preview_writes_a_message_whose_signatures_verify(
    environment: pytest.MonkeyPatch, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    environment.setenv("DATABASE_URL", db_url)
    environment.setenv("MAILER_SENDER_DKIM_SELECTOR", "s2024")
    environment.setenv("MAILER_SENDER_DKIM_KEY_FILE", write_key(tmp_path, "rsa.pem", rsa_pem()))
    environment.setenv("MAILER_SENDER_DKIM_ED25519_SELECTOR", "ed2024")
    environment.setenv(
        "MAILER_SENDER_DKIM_ED25519_KEY_FILE", write_key(tmp_path, "ed.pem", ed25519_pem())
    )
    contacts = tmp_path / "contacts.csv"
    contacts.write_text(CONTACTS, encoding="utf-8")
    out = tmp_path / "preview.eml"
    assert run("topics", "add", "service", "--name", "Service reminders") == 0
    assert run("contacts", "import", str(contacts)) == 0
    assert run("campaign", "create", str(TEMPLATES / "service_reminder.toml")) == 0
    slug = "service-reminder-2024-10"
    assert run("campaign", "preview", slug, "--to", "marie@example.com", "--out", str(out)) == 0
    data = out.read_bytes()
    keys = load().dkim_keys
    assert verify_each(data, dns_stub(keys, FROM_DOMAIN)) == [True, True]
    assert [t["s"] for t in signatures(data)] == ["s2024", "ed2024"]
    printed = " ".join(capsys.readouterr().out.split())
    assert f"DKIM-signed as d={FROM_DOMAIN}: s=s2024 (rsa-sha256), s=ed2024 (ed25519-sha256)" in (
        printed
    )


def configuration_error(capsys: pytest.CaptureFixture[str]) -> str:
    assert run("campaign", "preview", "any", "--to", "marie@example.com") == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return " ".join(captured.err.split())


def test_a_key_file_that_does_not_exist_stops_the_command_with_exit_2_naming_the_setting(
    environment: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    environment.setenv("MAILER_SENDER_DKIM_SELECTOR", "s2024")
    environment.setenv("MAILER_SENDER_DKIM_KEY_FILE", str(tmp_path / "missing.pem"))
    message = configuration_error(capsys)
    assert (
        "configuration error: sender.dkim_key_file (from MAILER_SENDER_DKIM_KEY_FILE): cannot read"
    ) in message


def test_a_file_that_is_not_a_private_key_stops_the_command_naming_the_setting(
    environment: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    environment.setenv("MAILER_SENDER_DKIM_SELECTOR", "s2024")
    environment.setenv(
        "MAILER_SENDER_DKIM_KEY_FILE", write_key(tmp_path, "k.pem", b"not a key at all\n")
    )
    message = configuration_error(capsys)
    assert "sender.dkim_key_file (from MAILER_SENDER_DKIM_KEY_FILE):" in message
    assert "is not a PEM private key" in message


def test_a_selector_without_a_key_stops_the_command_naming_the_missing_setting(
    environment: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    environment.setenv("MAILER_SENDER_DKIM_SELECTOR", "s2024")
    environment.delenv("MAILER_SENDER_DKIM_KEY_FILE", raising=False)
    message = configuration_error(capsys)
    assert "configuration error: sender.dkim_key_file: not set while sender.dkim_selector" in (
        message
    )
