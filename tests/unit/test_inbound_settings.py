"""[inbound] and [guard] settings: read, defaulted, and refused with the setting's name."""

from __future__ import annotations

import pytest

from mailer.core.settings import ConfigError, load
from mailer.inbound.guard import judge
from mailer.inbound.store import CampaignRates


def test_defaults_follow_the_providers_published_limits() -> None:
    settings = load(environ={})
    assert settings.guard.max_hard_bounce_rate == 0.05
    assert settings.guard.max_complaint_rate == 0.001
    assert (settings.inbound.soft_bounce_limit, settings.inbound.soft_bounce_days) == (3, 30)
    assert settings.inbound.mailboxes == ("postmaster", "abuse", "fbl")


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("MAILER_INBOUND_TLS_CERT_FILE", "cert.pem", "inbound.tls_cert_file/tls_key_file"),
        ("MAILER_INBOUND_PORT", "0", "inbound.port"),
        ("MAILER_INBOUND_SOFT_BOUNCE_LIMIT", "0", "inbound.soft_bounce_limit"),
        ("MAILER_INBOUND_SNS_CERT_HOST", "sns.(", "inbound.sns_cert_host"),
        ("MAILER_INBOUND_CLASSIFY_PROCESSES", "-1", "inbound.classify_processes"),
        ("MAILER_GUARD_MAX_COMPLAINT_RATE", "0", "guard.max_complaint_rate"),
        ("MAILER_GUARD_MIN_SAMPLE", "zero", "guard.min_sample"),
    ],
)
def test_a_bad_inbound_or_guard_setting_stops_with_its_name(
    variable: str, value: str, named: str
) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.").replace("/", "/")):
        load(environ={variable: value})


def test_the_guard_judges_only_past_its_minimum_sample_and_complaints_first() -> None:
    guard = load(environ={"MAILER_GUARD_MIN_SAMPLE": "100"}).guard
    few = CampaignRates(1, "c", {}, sent=99, bounced=50, complaints=50)
    assert judge(few, guard) is None
    both = CampaignRates(1, "c", {}, sent=1000, bounced=60, complaints=2)
    verdict = judge(both, guard)
    assert verdict is not None
    assert (verdict.reason, verdict.count, verdict.sent) == ("complaint_rate", 2, 1000)
    lenient = CampaignRates(
        1, "c", {"max_complaint_rate": 0.01}, sent=1000, bounced=50, complaints=2
    )
    assert judge(lenient, guard) is None  # 0.2 % < 1 %, and 5 % bounces is not over 5 %
