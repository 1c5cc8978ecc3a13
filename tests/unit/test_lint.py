"""Compliance lint: a campaign whose messages lack a required element does not start."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from mailer.campaigns.campaign_file import load
from mailer.campaigns.definition import CampaignDefinition, Sample
from mailer.campaigns.lint import LintProblem, lint, sample_inputs
from mailer.campaigns.render import Renderer
from mailer.campaigns.template_set import TemplateSet
from mailer.core.consent import Kind, Policy

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
# The sender identification the layouts include (shared with the transactional layouts).
SENDER_HTML = "transactional/_sender.html"
SENDER_TEXT = "transactional/_sender.txt"


@pytest.fixture(scope="module")
def definition() -> CampaignDefinition:
    return load(TEMPLATES / "service_reminder.toml", TEMPLATES)


def renderer_with(tmp_path: Path, file: str, old: str, new: str) -> Renderer:
    """The sample campaign's templates with one edit to one file."""
    for source in [*TEMPLATES.glob("*.*"), *TEMPLATES.glob("transactional/_sender.*")]:
        if source.suffix in (".html", ".txt"):
            target = tmp_path / source.relative_to(TEMPLATES)
            target.parent.mkdir(exist_ok=True)
            shutil.copy(source, target)
    path = tmp_path / file
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")
    return Renderer(TemplateSet.load(tmp_path, "service_reminder"))


def elements(problems: list[LintProblem], part: str) -> set[str]:
    return {p.element for p in problems if p.part == part}


def test_the_sample_campaign_passes_lint(definition: CampaignDefinition) -> None:
    renderer = Renderer(TemplateSet.load(TEMPLATES, "service_reminder"))
    assert lint(renderer, definition, sample_inputs(definition)) == []


def test_samples_cover_every_consent_kind_in_every_campaign_locale(
    definition: CampaignDefinition,
) -> None:
    samples = sample_inputs(definition)
    assert {(s.consent_kind, s.locale) for s in samples} == {
        (kind, locale) for kind in Kind for locale in ("fr", "en")
    }


def test_a_can_spam_campaign_also_lints_a_contact_without_any_consent(
    definition: CampaignDefinition,
) -> None:
    can_spam = dataclasses.replace(definition, policy=Policy.CAN_SPAM)
    samples = sample_inputs(can_spam)
    assert {s.consent_kind for s in samples} == {*Kind, None}
    renderer = Renderer(TemplateSet.load(TEMPLATES, "service_reminder"))
    assert lint(renderer, can_spam, samples) == []


@pytest.mark.parametrize(
    ("file", "old", "new", "part", "element"),
    [
        (
            "layout.html",
            '<a href="{{ unsubscribe_url }}">{{ footer.unsubscribe }}</a>',
            "",
            "html",
            "unsubscribe_url",
        ),
        (
            "layout.html",
            '<a href="{{ unsubscribe_url }}">{{ footer.unsubscribe }}</a>',
            "<span>{{ unsubscribe_url }}</span>",  # shown as text is not a link
            "html",
            "unsubscribe_url",
        ),
        (
            "layout.html",
            '<a href="{{ preferences_url }}">{{ footer.preferences }}</a>',
            "",
            "html",
            "preferences_url",
        ),
        (SENDER_HTML, "{{ sender.postal_address }}<br>", "", "html", "postal_address"),
        (
            SENDER_TEXT,
            "{{ footer.sent_by }} {{ sender.business_name }}",
            "",
            "text",
            "business_name",
        ),
        ("layout.html", "{{ consent_sentence }}", "", "html", "consent_sentence"),
        (
            "layout.txt",
            "{{ footer.unsubscribe }}{{ footer.colon }} {{ unsubscribe_url }}",
            "",
            "text",
            "unsubscribe_url",
        ),
        (
            "layout.txt",
            "{{ footer.preferences }}{{ footer.colon }} {{ preferences_url }}",
            "",
            "text",
            "preferences_url",
        ),
        (SENDER_TEXT, "{{ sender.postal_address }}", "", "text", "postal_address"),
        ("layout.txt", "{{ consent_sentence }}", "", "text", "consent_sentence"),
    ],
)
def test_lint_refuses_a_campaign_missing_a_required_element(
    tmp_path: Path,
    definition: CampaignDefinition,
    file: str,
    old: str,
    new: str,
    part: str,
    element: str,
) -> None:
    renderer = renderer_with(tmp_path, file, old, new)
    problems = lint(renderer, definition, sample_inputs(definition))
    assert elements(problems, part) == {element}
    # Every kind and every locale is named: the layout serves them all.
    flagged = {(p.kind, p.locale) for p in problems}
    assert flagged == {(kind, locale) for kind in Kind for locale in ("fr", "en")}


def test_lint_refuses_a_footer_without_any_contact_method(
    tmp_path: Path, definition: CampaignDefinition
) -> None:
    phone_only = dataclasses.replace(
        definition, sender=dataclasses.replace(definition.sender, web=None)
    )
    renderer = renderer_with(tmp_path, SENDER_TEXT, "{{ footer.phone }} {{ sender.phone }}", "")
    problems = lint(renderer, phone_only, sample_inputs(phone_only))
    assert elements(problems, "text") == {"contact_method"}
    assert "missing phone, email or web" in str(problems[0])


def test_a_footer_dropped_for_one_kind_only_is_reported_for_that_kind(
    tmp_path: Path, definition: CampaignDefinition
) -> None:
    renderer = renderer_with(
        tmp_path,
        "layout.html",
        "{{ consent_sentence }}",
        "{% if consent.kind != 'implied_inquiry' %}{{ consent_sentence }}{% endif %}",
    )
    problems = lint(renderer, definition, sample_inputs(definition))
    assert {(p.kind, p.locale, p.part, p.element) for p in problems} == {
        (Kind.IMPLIED_INQUIRY, "fr", "html", "consent_sentence"),
        (Kind.IMPLIED_INQUIRY, "en", "html", "consent_sentence"),
    }


def test_a_template_that_does_not_render_for_the_sample_is_reported(
    definition: CampaignDefinition,
) -> None:
    no_attributes = dataclasses.replace(definition, sample=Sample())
    renderer = Renderer(TemplateSet.load(TEMPLATES, "service_reminder"))
    problems = lint(renderer, no_attributes, sample_inputs(no_attributes))
    assert problems
    assert {p.part for p in problems} == {"render"}
    assert "vehicle" in problems[0].detail


def test_a_lint_problem_reads_as_a_sentence_naming_kind_locale_part_and_element() -> None:
    problem = LintProblem(Kind.IMPLIED_PURCHASE, "fr", "text", "postal_address")
    assert str(problem) == "implied_purchase, fr, text: missing postal address"
    assert str(LintProblem(None, "en", "html", "unsubscribe_url")) == (
        "no consent (CAN-SPAM), en, html: missing unsubscribe url"
    )
