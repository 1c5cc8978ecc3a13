"""The campaign file: parsing and validation (mailer.campaigns.campaign_file)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from mailer.campaigns.campaign_file import from_mapping, load, parse
from mailer.campaigns.definition import CampaignFileError
from mailer.core.consent import Channel, Policy

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"

MINIMAL = """
slug = "spring-news"
name = "Spring news"
topic = "newsletter"
template = "service_reminder"
subject = "Hello {{ contact.name }}"
from_name = "Garage Tremblay Automobiles"
from_address = "news@garage-tremblay.example"

[sender]
business_name = "Garage Tremblay Automobiles"
postal_address = "2450, boulevard Laurier, Québec (Québec)  G1V 2L1"
phone = "+1 418-555-0142"
"""


def problems_of(text: str, templates_dir: Path | None = TEMPLATES) -> list[str]:
    with pytest.raises(CampaignFileError) as caught:
        parse(text, templates_dir=templates_dir)
    return caught.value.problems


def without(text: str, line_start: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith(line_start))


def test_the_sample_service_reminder_campaign_parses_with_its_fields() -> None:
    definition = load(TEMPLATES / "service_reminder.toml", TEMPLATES)
    assert definition.slug == "service-reminder-2024-10"
    assert definition.template == "service_reminder"
    assert definition.locales == ("fr", "en")
    assert definition.timezone == "America/Toronto"
    assert definition.sender.business_name == "Garage Tremblay Automobiles"
    assert "Québec" in definition.sender.postal_address
    assert definition.sender.phone
    assert set(definition.subject) == {"fr", "en"}
    assert definition.throttle.rate == 20.0
    assert definition.throttle.concurrency == 4
    assert definition.sample.attributes["next_service"] == "2024-10-15"  # TOML date -> ISO


def test_a_minimal_file_gets_the_documented_defaults() -> None:
    definition = parse(MINIMAL, templates_dir=TEMPLATES)
    assert definition.channel is Channel.EMAIL
    assert definition.policy is Policy.CASL
    assert definition.kind == "regular"
    assert definition.tracking is True
    assert definition.locales == ("en",)
    assert definition.timezone == "UTC"
    assert definition.reply_to is None
    assert definition.schedule is None
    assert definition.subject == {"en": "Hello {{ contact.name }}"}


def test_a_missing_postal_address_is_refused_naming_the_field() -> None:
    assert "sender.postal_address: required" in problems_of(without(MINIMAL, "postal_address"))


def test_a_missing_business_name_is_refused_naming_the_field() -> None:
    assert "sender.business_name: required" in problems_of(without(MINIMAL, "business_name"))


def test_a_missing_sender_table_is_refused_naming_the_field() -> None:
    text = MINIMAL.split("[sender]")[0]
    assert any(p.startswith("sender: required") for p in problems_of(text))


def test_a_sender_without_phone_email_or_web_is_refused() -> None:
    problems = problems_of(without(MINIMAL, "phone"))
    assert "sender: one contact method required (phone, email or web)" in problems


def test_an_unknown_template_is_refused_naming_the_field() -> None:
    problems = problems_of(MINIMAL.replace('"service_reminder"', '"no_such_template"'))
    assert any(p.startswith("template: unknown template") for p in problems)


def test_a_template_name_with_a_path_in_it_is_refused_without_looking_it_up() -> None:
    problems = problems_of(MINIMAL.replace('"service_reminder"', '"../etc/passwd"'))
    assert [p for p in problems if p.startswith("template:")] == [
        "template: '../etc/passwd' is not valid (a template name without suffix)"
    ]


def test_the_template_check_is_skipped_without_a_templates_folder() -> None:
    text = MINIMAL.replace('"service_reminder"', '"made_up"')
    assert parse(text, templates_dir=None).template == "made_up"


def test_an_unknown_field_is_refused_rather_than_ignored() -> None:
    text = MINIMAL.replace("[sender]", "trackign = false\n[sender]")
    assert problems_of(text) == ["trackign: unknown field"]


def test_every_problem_is_reported_at_once() -> None:
    text = without(without(MINIMAL, "postal_address"), "from_address")
    problems = problems_of(text.replace('slug = "spring-news"', 'slug = "Spring News"'))
    assert len(problems) == 3
    assert {p.split(":")[0] for p in problems} == {"slug", "from_address", "sender.postal_address"}


def test_a_subject_table_must_cover_every_locale() -> None:
    text = MINIMAL.replace('subject = "Hello {{ contact.name }}"', 'locales = ["fr", "en"]')
    text += '\n[subject]\nfr = "Bonjour"\n'
    assert "subject.en: required: every listed locale needs a subject" in problems_of(text)


def test_a_subject_with_a_line_break_is_refused() -> None:
    text = MINIMAL.replace('"Hello {{ contact.name }}"', '"Hello\\r\\nBcc: x@example.com"')
    assert "subject.en: must be one line without control characters" in problems_of(text)


def test_a_subject_with_a_template_syntax_error_is_refused() -> None:
    text = MINIMAL.replace('"Hello {{ contact.name }}"', '"Hello {{ contact.name "')
    assert any(p.startswith("subject.en: template syntax error") for p in problems_of(text))


def test_a_from_name_with_a_line_break_is_refused() -> None:
    text = MINIMAL.replace('from_name = "Garage', 'from_name = "Bcc: x\\nGarage')
    assert "from_name: must not contain line breaks or control characters" in problems_of(text)


def test_a_locale_without_footer_wording_is_refused() -> None:
    text = MINIMAL.replace("[sender]", 'locales = ["de"]\n[sender]')
    assert any(p.startswith("locales: 'de' has no footer wording") for p in problems_of(text))


def test_a_schedule_needs_an_offset() -> None:
    text = MINIMAL.replace("[sender]", "schedule = 2024-10-01T09:00:00\n[sender]")
    assert any(p.startswith("schedule:") for p in problems_of(text))


def test_a_schedule_with_an_offset_is_kept_as_an_aware_datetime() -> None:
    text = MINIMAL.replace("[sender]", "schedule = 2024-10-01T09:00:00-04:00\n[sender]")
    expected = datetime(2024, 10, 1, 9, tzinfo=timezone(timedelta(hours=-4)))
    assert parse(text, templates_dir=TEMPLATES).schedule == expected


def test_only_email_campaigns_are_accepted() -> None:
    text = MINIMAL.replace("[sender]", 'channel = "sms"\n[sender]')
    assert "channel: sms campaigns are not supported; only email is sent" in problems_of(text)


def test_an_invalid_segment_is_refused_naming_the_field() -> None:
    text = MINIMAL.replace("[sender]", 'segment = "attributes.x = = 1"\n[sender]')
    assert any(p.startswith("segment:") for p in problems_of(text))


def test_an_invalid_from_address_is_refused() -> None:
    problems = problems_of(MINIMAL.replace("news@garage-tremblay.example", "not an address"))
    assert any(p.startswith("from_address: not a valid address") for p in problems)


def test_an_unknown_time_zone_is_refused() -> None:
    text = MINIMAL.replace("[sender]", 'timezone = "Mars/Olympus"\n[sender]')
    assert any(p.startswith("timezone:") for p in problems_of(text))


def test_throttle_overrides_must_be_positive() -> None:
    text = MINIMAL + "\n[throttle]\nrate = 0\nconcurrency = -1\n"
    problems = problems_of(text)
    assert any(p.startswith("throttle.rate:") for p in problems)
    assert any(p.startswith("throttle.concurrency:") for p in problems)


def test_invalid_toml_is_reported_as_such() -> None:
    assert problems_of("slug = ")[0].startswith("not valid TOML")


def test_the_stored_definition_reads_back_to_an_equal_definition() -> None:
    definition = load(TEMPLATES / "service_reminder.toml", TEMPLATES)
    text = MINIMAL.replace("[sender]", "schedule = 2024-10-01T09:00:00Z\n[sender]")
    scheduled = parse(text, templates_dir=TEMPLATES)
    assert scheduled.schedule == datetime(2024, 10, 1, 9, tzinfo=UTC)
    for original in (definition, scheduled):
        assert from_mapping(original.to_json(), templates_dir=TEMPLATES) == original


def test_the_stored_definition_keeps_the_sender_identity_under_sender() -> None:
    stored = load(TEMPLATES / "service_reminder.toml", TEMPLATES).to_json()
    assert stored["sender"]["business_name"] == "Garage Tremblay Automobiles"
    assert "phone" in stored["sender"]
