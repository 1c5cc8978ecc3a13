"""Transactional messages: refusal rules per basis and lint per basis (pure, no I/O)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mailer.core.consent import (
    Channel,
    Reason,
    Suppression,
    SuppressionReason,
    SuppressionScope,
    Verdict,
)
from mailer.transactional import compose, template
from mailer.transactional.basis import Basis, decide, needs_unsubscribe
from mailer.transactional.template import TransactionalTemplate

TEMPLATES = Path(__file__).resolve().parents[2] / "templates" / "transactional"
EXEMPT = [b for b in Basis if b is not Basis.COMMERCIAL]


def held(
    reason: SuppressionReason, scope: SuppressionScope = SuppressionScope.CHANNEL
) -> Suppression:
    channel = Channel.EMAIL if scope is SuppressionScope.CHANNEL else None
    topic = 7 if scope is SuppressionScope.TOPIC else None
    return Suppression(scope, reason, channel, topic)


@pytest.mark.parametrize("basis", list(Basis))
@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        (SuppressionReason.HARD_BOUNCE, Reason.HARD_BOUNCED),
        (SuppressionReason.COMPLAINT, Reason.COMPLAINED),
        (SuppressionReason.ERASURE, Reason.ERASED),
    ],
)
def test_hard_bounces_complaints_and_erasures_refuse_every_basis(
    basis: Basis, reason: SuppressionReason, expected: Reason
) -> None:
    verdict = Verdict(None, None, "express consent")
    decision = decide(basis, erased=False, suppressions=[held(reason)], commercial_verdict=verdict)
    assert decision.refused is expected


@pytest.mark.parametrize("basis", EXEMPT)
@pytest.mark.parametrize(
    "reason", [SuppressionReason.UNSUBSCRIBE, SuppressionReason.REGISTRY, SuppressionReason.MANUAL]
)
def test_an_opt_out_from_commercial_mail_does_not_stop_an_exempt_message_and_is_noted(
    basis: Basis, reason: SuppressionReason
) -> None:
    decision = decide(basis, erased=False, suppressions=[held(reason, SuppressionScope.GLOBAL)])
    assert decision.allowed
    note = decision.note()
    assert note is not None
    assert note.startswith("delivered despite: ")


def test_a_switched_off_email_channel_is_noted_not_obeyed_for_a_recall() -> None:
    decision = decide(
        Basis.WARRANTY_RECALL_SAFETY, erased=False, suppressions=[], channel_enabled=False
    )
    assert decision.allowed
    assert decision.overridden == (Reason.UNSUBSCRIBED_CHANNEL,)
    assert "s.6(6)(c)" in (decision.note() or "")


def test_a_topic_opt_out_is_not_about_exempt_messages_at_all() -> None:
    decision = decide(
        Basis.TRANSACTION,
        erased=False,
        suppressions=[held(SuppressionReason.UNSUBSCRIBE, SuppressionScope.TOPIC)],
    )
    assert decision.allowed
    assert decision.note() is None


def test_a_commercial_message_follows_the_consent_rules_verdict() -> None:
    refused = decide(
        Basis.COMMERCIAL,
        erased=False,
        suppressions=[held(SuppressionReason.UNSUBSCRIBE)],
        commercial_verdict=Verdict(Reason.UNSUBSCRIBED_CHANNEL, None, "unsubscribed"),
    )
    assert refused.refused is Reason.UNSUBSCRIBED_CHANNEL
    with pytest.raises(ValueError, match="verdict"):
        decide(Basis.COMMERCIAL, erased=False, suppressions=[])


def test_an_erased_contact_is_refused() -> None:
    assert decide(Basis.QUOTE, erased=True, suppressions=[]).refused is Reason.ERASED


def test_only_a_legal_notice_needs_no_unsubscribe() -> None:
    assert [b for b in Basis if not needs_unsubscribe(b)] == [Basis.LEGAL_NOTICE]


def recall_with(html_edit: tuple[str, str] | None, basis: Basis) -> TransactionalTemplate:
    loaded = template.load(TEMPLATES, "safety_recall")
    files = dict(loaded.files.files)
    if html_edit is not None:
        old, new = html_edit
        # The layouts, or the sender part they include: wherever the footer line stands.
        edited = [n for n in files if n.startswith(("layout.", "_sender.")) and old in files[n]]
        assert sorted(n.rsplit(".", 1)[1] for n in edited) == ["html", "txt"], edited
        for name in edited:
            files[name] = files[name].replace(old, new)
    return dataclasses.replace(
        loaded, basis=basis, files=dataclasses.replace(loaded.files, files=files)
    )


@pytest.mark.parametrize("name", ["parts_received", "safety_recall"])
def test_the_shipped_templates_pass_their_lint(name: str) -> None:
    assert compose.check(template.load(TEMPLATES, name)) == []


@pytest.mark.parametrize("basis", EXEMPT)
def test_lint_wants_the_unsubscribe_link_unless_the_basis_is_a_legal_notice(basis: Basis) -> None:
    without = recall_with(("{{ unsubscribe_url }}", ""), basis)
    elements = {p.element for p in compose.check(without)}
    assert ("unsubscribe_url" in elements) == (basis is not Basis.LEGAL_NOTICE)


@pytest.mark.parametrize("basis", EXEMPT)
def test_lint_wants_the_sender_identified_whatever_the_basis(basis: Basis) -> None:
    without = recall_with(("{{ sender.postal_address }}", ""), basis)
    assert "postal_address" in {p.element for p in compose.check(without)}


def test_lint_wants_the_basis_sentence_in_an_exempt_message() -> None:
    without = recall_with(("{{ basis_sentence }}", ""), Basis.WARRANTY_RECALL_SAFETY)
    assert "basis_sentence" in {p.element for p in compose.check(without)}


def test_a_template_without_a_basis_is_refused_naming_the_field(tmp_path: Path) -> None:
    from mailer.campaigns.definition import CampaignFileError

    text = (TEMPLATES / "parts_received.toml").read_text(encoding="utf-8")
    with pytest.raises(CampaignFileError, match="basis: required"):
        template.parse(
            text.replace('basis = "transaction"', ""), "parts_received", TEMPLATES, source="x"
        )
    with pytest.raises(CampaignFileError, match="topic: only for"):
        template.parse('topic = "service"\n' + text, "parts_received", TEMPLATES, source="x")


def test_a_transactional_template_is_never_tracked() -> None:
    from mailer.campaigns.definition import CampaignFileError

    assert template.load(TEMPLATES, "parts_received").definition.tracking is False
    text = (TEMPLATES / "parts_received.toml").read_text(encoding="utf-8")
    with pytest.raises(CampaignFileError, match="tracking: not available"):
        template.parse(
            text.replace("tracking = false", "tracking = true"),
            "parts_received",
            TEMPLATES,
            source="x",
        )
