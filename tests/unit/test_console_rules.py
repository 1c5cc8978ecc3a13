"""The console's pure rules: who the client is behind proxies, roles, words, tokens."""

from __future__ import annotations

import ipaddress

import pytest

from mailer.console.accounts import Role, hash_password, password_problem, verify_password
from mailer.console.app import client_of
from mailer.console.sessions import _safe_next
from mailer.console.wording import _WORDS, pick, translator
from mailer.core.settings import ConfigError, load

PROXY = [ipaddress.ip_network("10.0.0.0/8")]


def test_forwarded_headers_are_believed_only_from_a_trusted_proxy() -> None:
    assert client_of("203.0.113.5", "198.51.100.1", "https", PROXY) == ("203.0.113.5", None)
    assert client_of("10.0.0.2", "198.51.100.1", "https", PROXY) == ("198.51.100.1", "https")


def test_the_client_is_the_rightmost_address_that_is_not_one_of_our_proxies() -> None:
    # The client wrote "1.1.1.1" itself; our proxies appended the real one, then themselves.
    chain = "1.1.1.1, 198.51.100.7, 10.0.0.9"
    assert client_of("10.0.0.2", chain, "http", PROXY) == ("198.51.100.7", "http")
    assert client_of("10.0.0.2", None, "gopher", PROXY) == ("10.0.0.2", None)


def test_roles_are_ordered_and_parsed_by_name() -> None:
    assert Role.ADMIN > Role.SENDER > Role.VIEWER
    assert Role.parse("Sender") is Role.SENDER
    with pytest.raises(ValueError, match="unknown role 'boss'"):
        Role.parse("boss")


def test_passwords_are_hashed_with_argon2id_and_short_ones_refused() -> None:
    stored = hash_password("a long enough secret")
    assert stored.startswith("$argon2id$")
    assert verify_password(stored, "a long enough secret")
    assert not verify_password(stored, "a long enough secreT")
    assert not verify_password(None, "anything")  # no account: same work, no success
    assert password_problem("short") == "too_short"
    assert password_problem("a long enough secret", "another") == "mismatch"


def test_after_login_the_browser_goes_only_to_a_path_on_this_site() -> None:
    assert _safe_next("/campaigns?x=1") == "/campaigns?x=1"
    for target in ("https://evil.example/", "//evil.example/x", "javascript:alert(1)", None):
        assert _safe_next(target) == "/"


def test_every_word_exists_in_english_and_french_and_the_browser_language_is_picked() -> None:
    assert all(en and fr for en, fr in _WORDS.values())
    assert translator("fr")("dashboard") == "Tableau de bord"
    assert translator("en")("launch_confirm", count="3") == "Send this campaign to 3 contacts now?"
    assert pick("de-DE,fr-CA;q=0.8,en;q=0.5") == "fr"
    assert pick(None) == "en"


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("MAILER_CONSOLE_TRUSTED_PROXIES", "10.0.0.0/8,not-an-ip", "console.trusted_proxies"),
        ("MAILER_CONSOLE_IDLE_MINUTES", "0", "console.idle_minutes"),
        ("MAILER_CONSOLE_BASE_URL", "console.example.com", "console.base_url"),
        ("MAILER_CONSOLE_LOCKOUT_MAX_SECONDS", "1", "console.lockout_max_seconds"),
        # Below the first lockout (30 s): a lock would outlast the memory of its cause.
        (
            "MAILER_CONSOLE_LOGIN_FAILURE_WINDOW_SECONDS",
            "10",
            "console.login_failure_window_seconds",
        ),
        ("MAILER_CONSOLE_PAGE_WAIT_MS", "-1", "console.page_wait_ms"),
        ("MAILER_CONSOLE_AUDIENCE_MAX_AGE_SECONDS", "0", "console.audience_max_age_seconds"),
        ("MAILER_CONSOLE_SLA_MAX_AGE_SECONDS", "0", "console.sla_max_age_seconds"),
    ],
)
def test_a_bad_console_setting_stops_the_start_and_is_named(
    variable: str, value: str, named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        load(environ={variable: value})


def test_every_exclusion_reason_and_lint_element_has_its_french_wording() -> None:
    from mailer.campaigns.lint import CAMPAIGN_ELEMENTS, LintProblem
    from mailer.console import wording
    from mailer.core.consent import Kind, Reason

    assert all(wording.reason_text(r.value, "fr") for r in Reason)
    assert wording.reason_text("no_consent", "en") == "no consent on record"
    assert wording.reason_text("not-a-reason", "fr") == ""
    for element in CAMPAIGN_ELEMENTS:
        line = wording.lint_text(LintProblem(Kind.EXPRESS, "fr", "text", element), "fr")
        assert "missing" not in line
    failed = LintProblem(None, "en", "render", "template", "does not render: 'x' is undefined")
    assert wording.lint_text(failed, "en") == str(failed)
    assert wording.lint_text(failed, "fr") == (
        "sans consentement (CAN-SPAM), en, rendu : le gabarit ne s'affiche pas ('x' is undefined)"
    )


def test_the_console_background_and_lockout_window_settings_are_read() -> None:
    console = load(
        environ={
            "MAILER_CONSOLE_LOGIN_FAILURE_WINDOW_SECONDS": "45",
            "MAILER_CONSOLE_PAGE_WAIT_MS": "150",
            "MAILER_CONSOLE_AUDIENCE_MAX_AGE_SECONDS": "20",
        }
    ).console
    assert (console.login_failure_window_seconds, console.page_wait_ms) == (45, 150)
    assert console.audience_max_age_seconds == 20
