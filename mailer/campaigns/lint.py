"""Compliance lint: render a campaign for sample contacts and refuse it if a footer is short.

Before a campaign may start it is rendered for a sample contact of each consent kind in each
of its locales, and every rendered message must carry, in both its HTML and text parts, what
the law requires: the sender's business name and postal address and a contact method (CASL
regulations s.2), the consent-origin sentence, and working unsubscribe and preference links
(CASL s.11, CAN-SPAM 15 U.S.C. 7704(a)(3)). Problems name the kind, locale, part and element.

Each sample is also assembled as the engine would send it, so what would skip every message
at send time fails here instead: a subject that renders CR/LF (header injection), a message
over engine.max_message_bytes. `campaign check` runs this in a render process under the
engine's limits (mailer.render_process.lint_in_process).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

from markupsafe import escape

from mailer.campaigns.definition import CampaignDefinition
from mailer.campaigns.headers import HeaderInjection, InvalidRecipient
from mailer.campaigns.mime import Envelope, Skeleton
from mailer.campaigns.render import LimitError, Renderer, RenderError
from mailer.campaigns.render_inputs import (
    CampaignFields,
    RenderedParts,
    RenderInputs,
    resolve_locale,
)
from mailer.core.consent import Kind, Policy
from mailer.core.links import find_links

__all__ = ["CAMPAIGN_ELEMENTS", "LintProblem", "limit_problem", "lint", "sample_inputs"]

_SAMPLE_BASE = "https://tracker.invalid"  # RFC 2606: can never resolve, so never mailed
_SAMPLE_DOMAIN = "mailer.invalid"
_SAMPLE_SOURCES: Mapping[Kind | None, str] = {
    Kind.EXPRESS: "Salon E-commerce Paris",
    Kind.IMPLIED_PURCHASE: "invoice 2024-0042",
    Kind.IMPLIED_CONTRACT: "lease 7731",
    Kind.IMPLIED_INQUIRY: "quote request form",
    Kind.IMPLIED_PUBLICATION: "business card, trade show",
    None: "",
}


# What every commercial message carries. Exempt transactional messages (CASL s.6(6)) ask for
# a subset (mailer/transactional/lint.py): one set of checks, several lists of what is due.
CAMPAIGN_ELEMENTS = frozenset(
    {
        "business_name",
        "postal_address",
        "contact_method",
        "consent_sentence",
        "unsubscribe_url",
        "preferences_url",
    }
)


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


def limit_problem(inputs: RenderInputs, detail: str) -> LintProblem:
    """A sample that went over a render limit (time, size, memory)."""
    locale = resolve_locale(inputs.locale, inputs.campaign.locales)
    return LintProblem(inputs.consent_kind, locale, "render", "limit", f"over a limit: {detail}")


def lint(
    renderer: Renderer,
    definition: CampaignDefinition,
    samples: Iterable[RenderInputs],
    *,
    max_message_bytes: int | None = None,
    elements: frozenset[str] = CAMPAIGN_ELEMENTS,
) -> list[LintProblem]:
    """Render every sample; return what each lacks (an empty list means the campaign may start).

    `elements`: which of CAMPAIGN_ELEMENTS the messages must carry (all, for a campaign).
    """
    problems: list[LintProblem] = []
    skeleton = Skeleton(CampaignFields.from_definition(definition))
    for inputs in samples:
        locale = resolve_locale(inputs.locale, inputs.campaign.locales)
        kind = inputs.consent_kind
        try:
            parts = renderer.render(inputs)
        except LimitError as exc:
            problems.append(limit_problem(inputs, str(exc)))
            continue
        except RenderError as exc:
            problems.append(
                LintProblem(kind, locale, "render", "template", f"does not render: {exc}")
            )
            continue
        problems += _assembled(skeleton, parts, definition, inputs, locale, max_message_bytes)
        sender = definition.sender
        required = {
            element: value
            for element, value in (
                ("business_name", sender.business_name),
                ("postal_address", sender.postal_address),
                ("consent_sentence", renderer.consent_sentence(inputs)),
            )
            if element in elements
        }
        methods = [m for m in (sender.phone, sender.email, sender.web) if m]
        hrefs = {link.url for link in find_links(parts.html)}
        for element, url in (
            ("unsubscribe_url", inputs.unsubscribe_url),
            ("preferences_url", inputs.preferences_url),
        ):
            if element not in elements:
                continue
            # In HTML it must be a real link, not just text; in text, the URL itself.
            if url not in hrefs:
                problems.append(LintProblem(kind, locale, "html", element))
            if url not in parts.text:
                problems.append(LintProblem(kind, locale, "text", element))
        for part, body, escaped in (("html", parts.html, True), ("text", parts.text, False)):
            for element, value in required.items():
                if (str(escape(value)) if escaped else value) not in body:
                    problems.append(LintProblem(kind, locale, part, element))
            if "contact_method" in elements and not any(
                (str(escape(m)) if escaped else m) in body for m in methods
            ):
                problems.append(
                    LintProblem(kind, locale, part, "contact_method", "missing phone, email or web")
                )
    return problems


def _assembled(
    skeleton: Skeleton,
    parts: RenderedParts,
    definition: CampaignDefinition,
    inputs: RenderInputs,
    locale: str,
    max_message_bytes: int | None,
) -> list[LintProblem]:
    """Assemble the sample as the engine would: what would skip the message at send time."""
    kind = inputs.consent_kind
    envelope = Envelope(
        message_id=f"<{inputs.delivery_id}.sample@{_SAMPLE_DOMAIN}>",
        date=format_datetime(datetime.now(UTC)),
        list_unsubscribe=f"<{inputs.unsubscribe_url}>",
        feedback_id=f"{definition.slug}:{definition.topic}:{_SAMPLE_DOMAIN}",
        return_path=f"bounces@{_SAMPLE_DOMAIN}",
    )
    try:
        data = skeleton.assemble(parts, name=inputs.name, email=inputs.email, envelope=envelope)
    except HeaderInjection as exc:
        element = "subject" if str(exc).startswith("subject") else "header"
        return [
            LintProblem(
                kind,
                locale,
                "headers",
                element,
                f"{exc}: every message would be skipped ({exc.reason})",
            )
        ]
    except InvalidRecipient as exc:
        return [LintProblem(kind, locale, "headers", "sample", str(exc))]
    if max_message_bytes is not None and len(data) > max_message_bytes:
        return [
            LintProblem(
                kind,
                locale,
                "message",
                "size",
                f"{len(data):,} bytes, over engine.max_message_bytes ({max_message_bytes:,})",
            )
        ]
    return []
