"""Sign-up form rules without I/O: rate limits, proof-of-work, timing, words, model checks."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime

import pytest
from altcha import v1

from mailer.core.settings import ConfigError, load
from mailer.forms import abuse
from mailer.forms.model import FormError, check_locales, check_origin, check_text, text_sha256
from mailer.forms.wording import form_history_line

KEY = b"k" * 32


def test_a_prefix_gets_its_limit_per_window_then_again_once_the_window_slides() -> None:
    limiter = abuse.PrefixLimiter(limit=2, window_s=60, tracked=100)
    assert [limiter.allow("203.0.113.0/24", now=t) for t in (0, 1, 2)] == [True, True, False]
    assert limiter.allow("198.51.100.0/24", now=3)  # another network is not held back
    assert not limiter.allow("203.0.113.0/24", now=59)
    assert limiter.allow("203.0.113.0/24", now=61)  # the first accept left the window


def test_the_limiter_remembers_a_bounded_number_of_prefixes() -> None:
    limiter = abuse.PrefixLimiter(limit=1, window_s=60, tracked=100)
    for i in range(10_000):
        limiter.allow(f"10.{i // 256}.{i % 256}.0/24", now=0)
    assert len(limiter) == 100


def test_a_proof_of_work_solution_counts_only_for_its_own_form() -> None:
    challenge = abuse.pow_challenge(KEY, "infolettre")
    solution = v1.solve_challenge(
        str(challenge["challenge"]),
        str(challenge["salt"]),
        "SHA-256",
        int(str(challenge["maxNumber"])),
    )
    assert solution is not None
    payload = base64.b64encode(
        json.dumps({**challenge, "number": solution.number}).encode()
    ).decode()
    assert abuse.pow_ok(KEY, "infolettre", payload)
    assert not abuse.pow_ok(KEY, "autre", payload)
    assert not abuse.pow_ok(b"x" * 32, "infolettre", payload)
    assert not abuse.pow_ok(KEY, "infolettre", "not base64!")
    assert not abuse.pow_ok(KEY, "infolettre", None)


def test_the_equaliser_follows_the_median_of_mailed_answers() -> None:
    equaliser = abuse.Equaliser(initial_s=0.01)
    for seconds in (0.03, 0.03, 0.03, 5.0, 0.03):
        equaliser.observe(seconds)
    assert equaliser.typical_s == pytest.approx(0.03)  # one stall does not count
    assert equaliser.remaining(0.01, jitter=0.5) == pytest.approx(0.02)
    assert equaliser.remaining(1.0, jitter=0.5) == 0.0


def test_honeypot() -> None:
    assert abuse.honeypot_tripped("http://spam.example")
    assert not abuse.honeypot_tripped("")
    assert not abuse.honeypot_tripped(None)


def test_a_form_grant_reads_as_plain_words_in_both_languages() -> None:
    evidence = {
        "form": {"source": "Site web — infolettre"},
        "request": {"at": "2026-12-07T14:00:00+00:00"},
        "confirmation": {"at": "2026-12-07T14:05:00+00:00"},
    }
    at = datetime(2026, 12, 7, 14, 5, tzinfo=UTC)
    assert form_history_line(evidence, at, "en", UTC) == (
        "You subscribed on 7 December 2026 via the form 'Site web — infolettre'"
        " and confirmed by email the same day."
    )
    later = {**evidence, "confirmation": {"at": "2026-12-09T08:00:00+00:00"}}
    assert form_history_line(later, at, "fr", UTC) == (
        "Vous vous êtes abonné le 7 décembre 2026 par le formulaire « Site web — infolettre »"
        " et l'avez confirmé par courriel le 9 décembre 2026."
    )
    single = {**evidence, "confirmation": None}
    assert form_history_line(single, at, "en", UTC) == (
        "You subscribed on 7 December 2026 via the form 'Site web — infolettre'."
    )
    assert form_history_line({"delivery_id": 1}, at, "en", UTC) is None


def test_form_definitions_are_checked_naming_the_option() -> None:
    assert check_locales(["fr", " en", "fr"]) == ("fr", "en")
    with pytest.raises(FormError, match="--locale"):
        check_locales(["de"])
    assert check_origin("https://WWW.Garage.example/") == "https://www.garage.example"
    with pytest.raises(FormError, match="--origin"):
        check_origin("javascript:alert(1)")
    with pytest.raises(FormError, match="control characters"):
        check_text("J'accepte\x00", "fr")
    # The hash is of the UTF-8 bytes as stored: what anyone can recompute from the text.
    assert text_sha256("é") == hashlib.sha256("é".encode()).digest()


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("MAILER_FORMS_IP_POLICY", "half", "forms.ip_policy"),
        ("MAILER_FORMS_PENDING_DAYS", "0", "forms.pending_days"),
        ("MAILER_FORMS_IP_PREFIX_LIMIT", "0", "forms.ip_prefix_limit"),
        ("MAILER_FORMS_FORM_TOKEN_MAX_AGE_S", "5", "forms.form_token_max_age_s"),
        ("MAILER_FORMS_MAIL_INTERVAL_HOURS", "-1", "forms.mail_interval_hours"),
    ],
)
def test_a_bad_forms_setting_stops_the_start_naming_it(
    variable: str, value: str, named: str
) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load(environ={variable: value})
