"""Rendering, assembling, linting and reproducing transactional messages.

The campaign pipeline does all of it (mailer/campaigns: the sandbox, the skeleton's MIME, the
signed tokens, DKIM, the archive record); a transactional message only adds `data` (the
caller's values) and `basis` (the sentence saying why the person gets it) to the template's
context. The tokens name the message's id, which the deliveries' sequence hands out
(the migration), so the tracker and inbound mail resolve them like any delivery id.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from mailer.campaigns.lint import LintProblem, lint, sample_inputs
from mailer.campaigns.message import Composed, Composer, Recipient, reproduce
from mailer.campaigns.render import MessageError, Renderer
from mailer.campaigns.render_inputs import CampaignFields, RenderedParts, RenderInputs
from mailer.campaigns.template_set import TemplateSet
from mailer.core.consent import Kind
from mailer.core.settings import Settings
from mailer.core.tokens import Keyring
from mailer.transactional.basis import Basis, needs_unsubscribe
from mailer.transactional.template import TransactionalTemplate

__all__ = [
    "BASIS_SENTENCES",
    "TransactionalRenderer",
    "check",
    "compose",
    "composer_for",
    "reproduce_message",
]

# Why the reader gets this message, in the footer: the honest sentence for each basis.
BASIS_SENTENCES: Mapping[str, Mapping[Basis, str]] = {
    "en": {
        Basis.QUOTE: "You receive this email because you asked {business} for a quote.",
        Basis.TRANSACTION: "You receive this email about a purchase or service from {business}.",
        Basis.WARRANTY_RECALL_SAFETY: (
            "You receive this warranty, recall or safety notice from {business} "
            "whatever your marketing preferences."
        ),
        Basis.ACCOUNT_INFORMATION: "You receive this email about your account with {business}.",
        Basis.EMPLOYMENT: "You receive this email about your employment with {business}.",
        Basis.PRODUCT_UPDATE: (
            "You receive this email about an update to a product you have from {business}."
        ),
        Basis.LEGAL_NOTICE: "{business} is required by law to send you this notice.",
        Basis.COMMERCIAL: "",
    },
    "fr": {
        Basis.QUOTE: "Vous recevez ce courriel parce que vous avez demandé une soumission à "
        "{business}.",
        Basis.TRANSACTION: "Vous recevez ce courriel au sujet d'un achat ou d'un service chez "
        "{business}.",
        Basis.WARRANTY_RECALL_SAFETY: (
            "Vous recevez cet avis de garantie, de rappel ou de sécurité de {business}, "
            "quelles que soient vos préférences de marketing."
        ),
        Basis.ACCOUNT_INFORMATION: "Vous recevez ce courriel au sujet de votre compte chez "
        "{business}.",
        Basis.EMPLOYMENT: "Vous recevez ce courriel au sujet de votre emploi chez {business}.",
        Basis.PRODUCT_UPDATE: (
            "Vous recevez ce courriel au sujet d'une mise à jour d'un produit que vous avez "
            "obtenu de {business}."
        ),
        Basis.LEGAL_NOTICE: "La loi oblige {business} à vous envoyer cet avis.",
        Basis.COMMERCIAL: "",
    },
}


class TransactionalRenderer(Renderer):
    """The campaign Renderer, with `data` and `basis_sentence` in the template's context."""

    def __init__(self, templates: TemplateSet, basis: Basis, *, max_output: int | None = None):
        super().__init__(templates, max_output=max_output)
        self.basis = basis

    def _context(
        self, inputs: RenderInputs, locale: str, clicks: Mapping[str, str] | None
    ) -> dict[str, Any]:
        context = super()._context(inputs, locale, clicks)
        sentences = BASIS_SENTENCES.get(locale, BASIS_SENTENCES["en"])
        business = inputs.campaign.sender.business_name
        context["data"] = inputs.attributes
        context["basis"] = self.basis.value
        context["basis_sentence"] = sentences[self.basis].format(business=business)
        return context

    def basis_sentence(self, locale: str, business: str) -> str:
        """The footer's sentence for this basis (what lint looks for)."""
        return BASIS_SENTENCES.get(locale, BASIS_SENTENCES["en"])[self.basis].format(
            business=business
        )


def composer_for(template: TransactionalTemplate, keyring: Keyring, settings: Settings) -> Composer:
    """The campaign Composer for a transactional template (signing, DKIM, size limit)."""
    renderer = TransactionalRenderer(
        template.files, template.basis, max_output=settings.engine.max_message_bytes
    )
    return Composer.for_settings(template.definition, renderer, keyring, settings)


def compose(
    composer: Composer,
    *,
    message_id: int,
    email: str,
    name: str | None,
    locale: str,
    data: Mapping[str, Any],
    tracking: bool,
    consent: tuple[Kind, str, datetime, bool] | None,
    now: datetime,
) -> Composed:
    """One message's bytes and archive record; raises MessageError when it cannot be built."""
    kind, source, obtained, date_only = consent or (None, "", None, False)
    recipient = Recipient(
        delivery_id=message_id,
        email=email,
        name=name,
        locale=locale,
        attributes=data,
        consent_kind=kind,
        consent_source=source,
        consent_obtained_at=obtained,
        tracking=tracking,
        consent_date_only=date_only,
    )
    return composer.compose(recipient, now)


def reproduce_message(files: TemplateSet, basis: Basis, archive: Mapping[str, Any]) -> bytes:
    """The exact bytes of an archived transactional message."""
    return reproduce(files, archive, renderer=TransactionalRenderer(files, basis))


def elements(basis: Basis) -> frozenset[str]:
    """What a message of this basis must carry (lint.CAMPAIGN_ELEMENTS names them)."""
    # CASL s.6(2)(b): sender identification always.
    due = {"business_name", "postal_address", "contact_method"}
    if needs_unsubscribe(basis):
        due.add("unsubscribe_url")  # CASL s.6(2)(c), s.11
    if basis is Basis.COMMERCIAL:
        due |= {"consent_sentence", "preferences_url"}  # as any campaign (DESIGN "Messages")
    return frozenset(due)


def check(
    template: TransactionalTemplate, *, max_message_bytes: int | None = None
) -> list[LintProblem]:
    """Lint a template per its basis: render its sample in each locale, list what is missing."""
    definition = template.definition
    renderer = TransactionalRenderer(template.files, template.basis, max_output=max_message_bytes)
    # A commercial template is a campaign of one: a sample per consent kind, as campaigns are.
    # Exempt ones rely on no consent: one sample per locale, without one.
    samples = sample_inputs(definition)
    if template.basis is not Basis.COMMERCIAL:
        campaign = CampaignFields.from_definition(definition)
        samples = [
            RenderInputs(
                delivery_id=index,
                email=definition.sample.email,
                name=definition.sample.name,
                locale=locale,
                attributes=definition.sample.attributes,
                consent_kind=None,
                consent_source="",
                consent_obtained_at=None,
                campaign=campaign,
                unsubscribe_url=f"https://tracker.invalid/u/sample-unsubscribe-{index}",
                preferences_url=f"https://tracker.invalid/p/sample-preferences-{index}",
                tracking=definition.tracking,
                pixel_url=f"https://tracker.invalid/o/sample-open-{index}"
                if definition.tracking
                else None,
            )
            for index, locale in enumerate(definition.locales)
        ]
    problems = lint(
        renderer,
        definition,
        samples,
        max_message_bytes=max_message_bytes,
        elements=elements(template.basis),
    )
    if template.basis is not Basis.COMMERCIAL:
        for inputs in samples:
            sentence = renderer.basis_sentence(inputs.locale, definition.sender.business_name)
            parts = _rendered(renderer, inputs)
            if parts is None:
                continue  # lint above reported why it does not render
            for part, body in (("html", parts.html), ("text", parts.text)):
                if sentence not in body.replace("&#39;", "'"):
                    problems.append(
                        LintProblem(
                            None,
                            inputs.locale,
                            part,
                            "basis_sentence",
                            "missing the basis sentence ({{ basis_sentence }})",
                        )
                    )
    return problems


def _rendered(renderer: Renderer, inputs: RenderInputs) -> RenderedParts | None:
    try:
        return renderer.render(inputs)
    except MessageError:
        return None
