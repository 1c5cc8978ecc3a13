"""Compliance lint: render a campaign for sample contacts and refuse it if a footer is short.

Before a campaign may start it is rendered for a sample contact of each consent kind in each
of its locales, and every rendered message must carry, in both its HTML and text parts, what
the law requires: the sender's business name and postal address and a contact method (CASL
regulations s.2), the consent-origin sentence, and working unsubscribe and preference links
(CASL s.11, CAN-SPAM 15 U.S.C. 7704(a)(3)). Problems name the kind, locale, part and element.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from markupsafe import escape

from mailer.campaigns.definition import CampaignDefinition
from mailer.campaigns.render import (
    CampaignFields,
    Renderer,
    RenderError,
    RenderInputs,
    resolve_locale,
)
from mailer.core.consent import Kind, Policy
from mailer.core.links import find_links

__all__ = ["LintProblem", "lint", "sample_inputs"]

_SAMPLE_BASE = "https://tracker.invalid"  # RFC 2606: can never resolve, so never mailed
_SAMPLE_SOURCES: Mapping[Kind | None, str] = {
    Kind.EXPRESS: "Salon E-commerce Paris",
    Kind.IMPLIED_PURCHASE: "invoice 2024-0042",
    Kind.IMPLIED_CONTRACT: "lease 7731",
    Kind.IMPLIED_INQUIRY: "quote request form",
    Kind.IMPLIED_PUBLICATION: "business card, trade show",
    None: "",
}


@dataclass(frozen=True, slots=True)
class LintProblem:
    """One missing element in one rendered sample."""

    kind: Kind | None
    locale: str
    part: str  # html, text, or render (the sample did not render at all)
    element: str  # unsubscribe_url, preferences_url, postal_address, business_name, …
    detail: str = ""

    def __str__(self) -> str:
        kind = "no consent (CAN-SPAM)" if self.kind is None else self.kind.value
        what = self.detail or f"missing {self.element.replace('_', ' ')}"
        return f"{kind}, {self.locale}, {self.part}: {what}"


class _AnyLink(dict[str, str]):
    """Click URLs for samples: any link counts as registered, so personalised ones render."""

    def __missing__(self, url: str) -> str:
        signed = self[url] = f"{_SAMPLE_BASE}/c/sample{len(self)}"
        return signed


def sample_inputs(
    definition: CampaignDefinition,
    *,
    obtained_at: datetime = datetime(2012, 9, 19, 12, tzinfo=UTC),
) -> list[RenderInputs]:
    """One sample per consent kind and campaign locale (plus "no consent" under CAN-SPAM)."""
    campaign = CampaignFields.from_definition(definition)
    kinds: list[Kind | None] = list(Kind)
    if definition.policy is Policy.CAN_SPAM:
        kinds.append(None)  # the opt-out model mails contacts without a consent row
    sample = definition.sample
    return [
        RenderInputs(
            delivery_id=index,
            email=sample.email,
            name=sample.name,
            locale=locale,
            attributes=sample.attributes,
            consent_kind=kind,
            consent_source=_SAMPLE_SOURCES[kind],
            consent_obtained_at=None if kind is None else obtained_at,
            campaign=campaign,
            unsubscribe_url=f"{_SAMPLE_BASE}/u/sample-unsubscribe-{index}",
            preferences_url=f"{_SAMPLE_BASE}/p/sample-preferences-{index}",
            tracking=definition.tracking,
            pixel_url=f"{_SAMPLE_BASE}/o/sample-open-{index}" if definition.tracking else None,
            click_urls=_AnyLink(),
            confirm_url=f"{_SAMPLE_BASE}/a/sample-confirm-{index}",
        )
        for index, (kind, locale) in enumerate(
            (kind, locale) for kind in kinds for locale in definition.locales
        )
    ]


def lint(
    renderer: Renderer, definition: CampaignDefinition, samples: Iterable[RenderInputs]
) -> list[LintProblem]:
    """Render every sample; return what each lacks (an empty list means the campaign may start)."""
    problems: list[LintProblem] = []
    for inputs in samples:
        locale = resolve_locale(inputs.locale, inputs.campaign.locales)
        kind = inputs.consent_kind
        try:
            parts = renderer.render(inputs)
        except RenderError as exc:
            problems.append(
                LintProblem(kind, locale, "render", "template", f"does not render: {exc}")
            )
            continue
        sender = definition.sender
        required = {
            "business_name": sender.business_name,
            "postal_address": sender.postal_address,
            "consent_sentence": renderer.consent_sentence(inputs),
        }
        methods = [m for m in (sender.phone, sender.email, sender.web) if m]
        hrefs = {link.url for link in find_links(parts.html)}
        for element, url in (
            ("unsubscribe_url", inputs.unsubscribe_url),
            ("preferences_url", inputs.preferences_url),
        ):
            # In HTML it must be a real link, not just text; in text, the URL itself.
            if url not in hrefs:
                problems.append(LintProblem(kind, locale, "html", element))
            if url not in parts.text:
                problems.append(LintProblem(kind, locale, "text", element))
        for part, body, escaped in (("html", parts.html, True), ("text", parts.text, False)):
            for element, value in required.items():
                if (str(escape(value)) if escaped else value) not in body:
                    problems.append(LintProblem(kind, locale, part, element))
            if not any((str(escape(m)) if escaped else m) in body for m in methods):
                problems.append(
                    LintProblem(kind, locale, part, "contact_method", "missing phone, email or web")
                )
    return problems
