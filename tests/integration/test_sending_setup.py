"""The sending setup as `mailer campaign check`, `preview` and `send` judge it (issue 13, items 5
and 11): one-click unsubscribe needs an https tracker, the return path must align with the
From domain, and the engine greets relays with a real name. Driven through the CLI, with
settings from the environment, against real Postgres and a real SMTP server."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import os
import socket
from pathlib import Path

import asyncpg
import pytest

from mailer.campaigns.deliverability import aligned, one_click_allowed
from mailer.commands.main import main
from mailer.core.settings import RelaySettings, load
from mailer.send.smtp import Relay
from tests.smtp_servers import smtp_server

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
SLUG = "service-reminder-2024-10"
HTTPS = "https://t.garage-tremblay.example"
CONTACTS = (
    "email,name,locale,consent,consent_source,consent_date,topics,last_activity,"
    "attr.vehicle,attr.next_service,attr.mileage\n"
    "marie@example.com,Marie Tremblay,fr,express,Salon,2012-09-19,service,2024-09-01,"
    "Toyota RAV4 2019,2024-10-15,48200\n"
)


@pytest.fixture
def cli(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A database holding the sample campaign (draft) and one contact, made through the CLI."""
    for name in [n for n in os.environ if n.startswith("MAILER_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("MAILER_TOKEN_KEYS", "1:" + base64.b64encode(b"k" * 32).decode())
    monkeypatch.chdir(tmp_path)  # preview writes its .eml here
    (tmp_path / "contacts.csv").write_text(CONTACTS, encoding="utf-8")
    assert main(["topics", "add", "service", "--name", "Service reminders"]) == 0
    assert main(["contacts", "import", "contacts.csv"]) == 0
    assert main(["campaign", "create", str(TEMPLATES / "service_reminder.toml")]) == 0
    capsys.readouterr()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Exit code and everything printed, with rich's line wrapping undone."""
    code = main(list(argv))
    printed = capsys.readouterr()
    return code, " ".join((printed.out + printed.err).split())


@pytest.mark.usefixtures("cli")
def test_check_passes_a_campaign_whose_tracker_is_https_without_a_word_about_setup(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MAILER_TRACKER_BASE_URL", HTTPS)
    code, out = run(capsys, "campaign", "check", SLUG)
    assert code == 0, out
    assert "warning:" not in out
    assert "setup:" not in out


@pytest.mark.usefixtures("cli")
def test_check_fails_a_campaign_whose_tracker_is_plain_http_across_a_network(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MAILER_TRACKER_BASE_URL", "http://t.garage-tremblay.example")
    code, out = run(capsys, "campaign", "check", SLUG)
    assert code == 1
    assert "setup: tracker.base_url: http://t.garage-tremblay.example is not https" in out
    assert "List-Unsubscribe-Post" in out


@pytest.mark.usefixtures("cli")
def test_send_refuses_a_campaign_whose_tracker_is_plain_http_and_freezes_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], db_url: str
) -> None:
    monkeypatch.setenv("MAILER_TRACKER_BASE_URL", "http://t.garage-tremblay.example")
    with smtp_server() as (port, handler):
        monkeypatch.setenv("MAILER_SMTP_PORT", str(port))
        code, out = run(capsys, "campaign", "send", SLUG, "--no-metrics")
    assert code == 2
    assert "tracker.base_url" in out
    assert "does not start" in out
    assert handler.messages == []
    assert asyncio.run(fetchval(db_url, "SELECT count(*) FROM deliveries")) == 0
    assert asyncio.run(fetchval(db_url, "SELECT status FROM campaigns")) == "draft"


@pytest.mark.usefixtures("cli")
def test_check_only_warns_about_a_loopback_tracker_as_the_demo_uses(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The embedded default is http://127.0.0.1:8080.
    code, out = run(capsys, "campaign", "check", SLUG)
    assert code == 0, out
    assert "warning: tracker.base_url: http://127.0.0.1:8080 is a loopback address" in out
    assert "setup:" not in out


@pytest.mark.usefixtures("cli")
@pytest.mark.parametrize(
    ("domain", "warned"),
    [
        ("mailer.localhost", True),  # the old default: aligns with nothing
        ("bounces.example.net", True),
        ("bounce.garage-tremblay.example", False),  # same organisational domain: relaxed
    ],
)
def test_check_warns_when_the_return_path_does_not_align_with_the_from_domain(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], domain: str, warned: bool
) -> None:
    monkeypatch.setenv("MAILER_TRACKER_BASE_URL", HTTPS)
    monkeypatch.setenv("MAILER_SENDER_DOMAIN", domain)
    code, out = run(capsys, "campaign", "check", SLUG)
    assert code == 0, out
    expected = (
        f"warning: sender.domain: the return path bounces+…@{domain} does not align "
        "with the From domain garage-tremblay.example"
    )
    assert (expected in out) is warned


@pytest.mark.usefixtures("cli")
def test_preview_says_why_its_message_has_no_one_click_header(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("MAILER_TRACKER_BASE_URL", "http://t.garage-tremblay.example")
    code, out = run(
        capsys, "campaign", "preview", SLUG, "--to", "marie@example.com", "--out", "m.eml"
    )
    assert code == 0, out
    assert "setup: tracker.base_url: http://t.garage-tremblay.example is not https" in out
    message = email.message_from_bytes((tmp_path / "m.eml").read_bytes(), policy=email.policy.SMTP)
    assert "List-Unsubscribe-Post" not in message
    assert str(message["List-Unsubscribe"]).startswith("<http://t.garage-tremblay.example/u/")


@pytest.mark.usefixtures("cli")
def test_by_default_the_return_path_and_message_id_are_on_the_from_domain(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("MAILER_TRACKER_BASE_URL", HTTPS)
    code, out = run(
        capsys, "campaign", "preview", SLUG, "--to", "marie@example.com", "--out", "m.eml"
    )
    assert code == 0, out
    message = email.message_from_bytes((tmp_path / "m.eml").read_bytes(), policy=email.policy.SMTP)
    assert str(message["Message-ID"]).endswith("@garage-tremblay.example>")
    assert "@garage-tremblay.example?subject=unsubscribe>" in str(message["List-Unsubscribe"])
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


@pytest.mark.usefixtures("cli")
def test_the_engine_greets_the_relay_with_the_configured_ehlo_name(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MAILER_TRACKER_BASE_URL", HTTPS)
    monkeypatch.setenv("MAILER_SMTP_HELO_NAME", "mta1.garage-tremblay.example")
    monkeypatch.setenv("MAILER_ENGINE_RENDER_PROCESSES", "0")
    with smtp_server() as (port, handler):
        monkeypatch.setenv("MAILER_SMTP_PORT", str(port))
        code, out = run(capsys, "campaign", "send", SLUG, "--no-metrics")
    assert code == 0, out
    assert [(m.rcpt, m.helo) for m in handler.messages] == [
        ("marie@example.com", "mta1.garage-tremblay.example")
    ]
    # The return path is on the From domain too (sender.domain unset).
    assert handler.messages[0].mail_from.endswith("@garage-tremblay.example")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"MAILER_SENDER_DOMAIN": "mail.garage-tremblay.example"}, "mail.garage-tremblay.example"),
        ({}, None),  # neither set: this machine's FQDN, whatever it is
    ],
)
async def test_without_a_helo_name_the_engine_greets_as_the_sender_domain_else_the_fqdn(
    env: dict[str, str], expected: str | None
) -> None:
    settings = load(environ=env)
    with smtp_server() as (port, handler):
        relay_settings = RelaySettings(port=port, connections=1, timeout_s=5)
        relay = Relay(relay_settings, None, settings.helo_name(relay_settings))
        try:
            await relay.send("bounces@example.org", "a@example.com", b"Subject: x\r\n\r\nx\r\n")
        finally:
            await relay.close()
    assert handler.messages[0].helo == (expected or socket.getfqdn())


@pytest.mark.usefixtures("cli")
def test_a_helo_name_that_is_not_a_host_name_stops_the_command_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MAILER_SMTP_HELO_NAME", "mta 1")
    code, out = run(capsys, "campaign", "check", SLUG)
    assert code == 2
    assert "configuration error: smtp.helo_name: 'mta 1' is not a host name" in out


@pytest.mark.parametrize(
    ("url", "one_click"),
    [
        ("https://t.example.com", True),
        ("http://t.example.com", False),
        ("http://127.0.0.1:8080", True),
        ("http://127.8.0.1", True),
        ("http://[::1]:8080", True),
        ("http://demo.localhost", True),
        ("http://localhost.example.com", False),  # only looks local
    ],
)
def test_one_click_is_claimed_only_over_https_or_on_loopback(url: str, one_click: bool) -> None:
    assert one_click_allowed(url) is one_click


@pytest.mark.parametrize(
    ("domain", "from_domain", "expected"),
    [
        ("bounce.shop.co.uk", "shop.co.uk", True),
        ("other.co.uk", "shop.co.uk", False),  # co.uk is a public suffix, not an organisation
        ("Mail.Garage-Tremblay.example", "garage-tremblay.example", True),
        ("mailer.localhost", "garage-tremblay.example", False),
    ],
)
def test_alignment_compares_organisational_domains(
    domain: str, from_domain: str, expected: bool
) -> None:
    assert aligned(domain, from_domain) is expected


async def fetchval(db_url: str, sql: str) -> object:
    connection = await asyncpg.connect(db_url)
    try:
        return await connection.fetchval(sql)
    finally:
        await connection.close()
