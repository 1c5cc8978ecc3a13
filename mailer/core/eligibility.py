"""Eligibility rules: whether a contact may receive a campaign, and the first reason why not.

The single statement the audience SQL must agree with (tests/integration/test_audience_sql.py).
A contact is excluded for the first failing reason in Reason order: the segment, an erasure,
a suppression or preference that covers the campaign's channel or topic; then the consent
verdict of mailer/core/consent.py; then, where the campaign asks, inactivity. Pure functions
over values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from mailer.core.consent import (
    REASON_TEXT,
    Channel,
    LedgerEntry,
    Policy,
    Reason,
    Suppression,
    SuppressionReason,
    SuppressionScope,
    Verdict,
    add_months,
    evaluate_consent,
    utc_day,
)

__all__ = ["AudienceSpec", "ContactFacts", "evaluate"]


@dataclass(frozen=True, slots=True)
class ContactFacts:
    erased: bool
    last_activity_at: datetime | None
    channel_prefs: Mapping[Channel, bool]  # absent key = no explicit choice
    topic_prefs: Mapping[int, bool]  # absent key = no explicit choice
    in_segment: bool = True


@dataclass(frozen=True, slots=True)
class AudienceSpec:
    channel: Channel
    topic_id: int
    topic_default_subscribed: bool
    policy: Policy
    at: datetime
    active_within_months: int | None = None


# Suppression reasons that have their own exclusion reason, whatever the scope.
_DELIVERABILITY: dict[SuppressionReason, Reason] = {
    SuppressionReason.HARD_BOUNCE: Reason.HARD_BOUNCED,
    SuppressionReason.COMPLAINT: Reason.COMPLAINED,
    SuppressionReason.REGISTRY: Reason.REGISTRY,
}


def _covers(s: Suppression, spec: AudienceSpec) -> bool:
    match s.scope:
        case SuppressionScope.GLOBAL:
            return True
        case SuppressionScope.CHANNEL:
            return s.channel == spec.channel
        case SuppressionScope.TOPIC:
            return s.topic_id == spec.topic_id
    return False


def _record_reasons(
    facts: ContactFacts, suppressions: Iterable[Suppression], spec: AudienceSpec
) -> set[Reason]:
    """Every exclusion reason that does not depend on the consent ledger."""
    found: set[Reason] = set()
    if not facts.in_segment:
        found.add(Reason.SEGMENT)
    if facts.erased:
        found.add(Reason.ERASED)
    for s in suppressions:
        if not _covers(s, spec):
            continue
        if s.reason in _DELIVERABILITY:
            found.add(_DELIVERABILITY[s.reason])
        elif s.scope is SuppressionScope.GLOBAL:
            found.add(Reason.SUPPRESSED_GLOBAL)
        elif s.scope is SuppressionScope.CHANNEL:
            found.add(Reason.UNSUBSCRIBED_CHANNEL)
        else:
            found.add(Reason.UNSUBSCRIBED_TOPIC)
    if facts.channel_prefs.get(spec.channel) is False:
        found.add(Reason.UNSUBSCRIBED_CHANNEL)
    topic_choice = facts.topic_prefs.get(spec.topic_id)
    if topic_choice is False:
        found.add(Reason.UNSUBSCRIBED_TOPIC)
    elif topic_choice is None and not spec.topic_default_subscribed:
        # An opt-in topic needs an explicit subscription; absence is not a yes.
        found.add(Reason.NOT_SUBSCRIBED_TOPIC)
    return found


_REASON_ORDER = {reason: rank for rank, reason in enumerate(Reason)}


def evaluate(
    facts: ContactFacts,
    ledger: Iterable[LedgerEntry],
    suppressions: Iterable[Suppression],
    spec: AudienceSpec,
) -> Verdict:
    """Whether a contact may receive a campaign, with the first failing reason in Reason order."""
    found = _record_reasons(facts, suppressions, spec)
    if found:
        first = min(found, key=_REASON_ORDER.__getitem__)
        return Verdict(first, None, REASON_TEXT[first])
    verdict = evaluate_consent(ledger, spec.channel, spec.policy, spec.at)
    if not verdict.eligible:
        return verdict
    if spec.active_within_months is not None:
        cutoff = add_months(spec.at, -spec.active_within_months)
        if facts.last_activity_at is None or facts.last_activity_at < cutoff:
            return Verdict(Reason.INACTIVE, None, f"no activity since {utc_day(cutoff)}")
    return verdict
