"""The legal basis of a transactional message, and who it still refuses: pure rules.

CASL s.6(6) lists messages that need no consent: a quote the person asked for (a), a
transaction they made (b), warranty, recall or safety information (c), factual information
about their account or subscription (d), an employment relationship (e), product updates they
are entitled to (f). They still identify the sender and carry an unsubscribe mechanism
(s.6(2)). A `legal_notice` (a message sent to satisfy a legal obligation or to give notice of a
right or obligation, such as a mandated safety recall: Electronic Commerce Protection
Regulations SOR/2013-221 s.3(b)-(c)) is outside s.6 entirely, so it needs no unsubscribe link.
`commercial` templates are ordinary commercial messages: the consent rules apply as for a
campaign.

Refusals (DESIGN "Transactional"): an exempt message is refused only for an address that
hard-bounced (sending hurts deliverability), one that complained, or an erasure (sending
would break it). An opt-out from commercial mail, a do-not-contact registry or a manual block
does not stop it; the message records which opt-out it went through, and why.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from mailer.core.consent import (
    REASON_TEXT,
    Channel,
    Reason,
    Suppression,
    SuppressionReason,
    SuppressionScope,
    Verdict,
)

__all__ = [
    "BASIS_TEXT",
    "Basis",
    "Decision",
    "decide",
    "needs_unsubscribe",
    "recheck",
]


class Basis(StrEnum):
    QUOTE = "quote"
    TRANSACTION = "transaction"
    WARRANTY_RECALL_SAFETY = "warranty_recall_safety"
    ACCOUNT_INFORMATION = "account_information"
    EMPLOYMENT = "employment"
    PRODUCT_UPDATE = "product_update"
    LEGAL_NOTICE = "legal_notice"
    COMMERCIAL = "commercial"


# The rule each basis rests on, as the report and `contacts explain` cite it.
BASIS_TEXT: dict[Basis, str] = {
    Basis.QUOTE: "CASL s.6(6)(a): a quote or estimate the person asked for",
    Basis.TRANSACTION: "CASL s.6(6)(b): facilitates or confirms a transaction the person made",
    Basis.WARRANTY_RECALL_SAFETY: "CASL s.6(6)(c): warranty, product recall or safety information",
    Basis.ACCOUNT_INFORMATION: "CASL s.6(6)(d): factual information about the person's account",
    Basis.EMPLOYMENT: "CASL s.6(6)(e): information about an employment relationship",
    Basis.PRODUCT_UPDATE: "CASL s.6(6)(f): a product update the person is entitled to",
    Basis.LEGAL_NOTICE: (
        "SOR/2013-221 s.3(b)-(c): sent to satisfy a legal obligation or give notice of one"
    ),
    Basis.COMMERCIAL: "commercial message: needs a valid consent like any campaign",
}

# Whatever the basis: a dead or complaining address, or an erasure (GDPR art. 17; the hash
# is all that remains of the address, kept to refuse it).
_ALWAYS_REFUSED: dict[SuppressionReason, Reason] = {
    SuppressionReason.ERASURE: Reason.ERASED,
    SuppressionReason.HARD_BOUNCE: Reason.HARD_BOUNCED,
    SuppressionReason.COMPLAINT: Reason.COMPLAINED,
}
_OPT_OUT_REASONS: dict[SuppressionReason, Reason] = {
    SuppressionReason.UNSUBSCRIBE: Reason.UNSUBSCRIBED_CHANNEL,
    SuppressionReason.REGISTRY: Reason.REGISTRY,
    SuppressionReason.MANUAL: Reason.SUPPRESSED_GLOBAL,
}


def needs_unsubscribe(basis: Basis) -> bool:
    """CASL s.6(2)(c) and s.11: every message under s.6 carries an unsubscribe mechanism."""
    return basis is not Basis.LEGAL_NOTICE


@dataclass(frozen=True, slots=True)
class Decision:
    """Send or refuse, naming the rule; `overridden`: opt-outs an exempt message goes through."""

    refused: Reason | None
    detail: str
    overridden: tuple[Reason, ...] = ()

    @property
    def allowed(self) -> bool:
        return self.refused is None

    def note(self) -> str | None:
        """Why an opted-out person still gets this message (stored on the message), or None."""
        if not self.overridden:
            return None
        what = ", ".join(REASON_TEXT[r] for r in self.overridden)
        return f"delivered despite: {what} ({self.detail})"


def _email_scope(s: Suppression) -> bool:
    # A topic suppression is about campaigns of that topic: never about an exempt message.
    return s.scope is SuppressionScope.GLOBAL or (
        s.scope is SuppressionScope.CHANNEL and s.channel is Channel.EMAIL
    )


def decide(
    basis: Basis,
    *,
    erased: bool,
    suppressions: Iterable[Suppression],
    channel_enabled: bool | None = None,
    commercial_verdict: Verdict | None = None,
) -> Decision:
    """Whether a message of `basis` may go to this address.

    `suppressions` are those on the address's hash; `channel_enabled` the person's email
    switch in the preference centre (None: never chosen); `commercial_verdict` the campaign
    rules' verdict, required for a commercial template.
    """
    held = list(suppressions)
    if erased:
        return Decision(Reason.ERASED, REASON_TEXT[Reason.ERASED])
    for reason in (
        SuppressionReason.ERASURE,
        SuppressionReason.HARD_BOUNCE,
        SuppressionReason.COMPLAINT,
    ):
        # Any scope: a hard bounce is about the mailbox, whatever list recorded it.
        if any(s.reason is reason for s in held):
            why = _ALWAYS_REFUSED[reason]
            return Decision(why, REASON_TEXT[why])
    if basis is Basis.COMMERCIAL:
        if commercial_verdict is None:
            raise ValueError("a commercial message needs the consent rules' verdict")
        if not commercial_verdict.eligible:
            return Decision(commercial_verdict.reason, commercial_verdict.detail)
        return Decision(None, commercial_verdict.detail)
    overridden = {
        _OPT_OUT_REASONS[s.reason] for s in held if s.reason in _OPT_OUT_REASONS and _email_scope(s)
    }
    if channel_enabled is False:
        overridden.add(Reason.UNSUBSCRIBED_CHANNEL)
    order = list(Reason)
    return Decision(None, BASIS_TEXT[basis], tuple(sorted(overridden, key=order.index)))


def recheck(
    basis: Basis,
    *,
    erased: bool,
    suppressions: Iterable[Suppression],
    channel_enabled: bool | None,
) -> Decision:
    """At send time, what changed since enqueue: a hard bounce, a complaint, an erasure.

    A commercial message's consent was judged at enqueue; an opt-out since then refuses it
    (CASL s.11(3): an unsubscribe takes effect within 10 business days, here at once).
    """
    judged = decide(
        Basis.TRANSACTION if basis is Basis.COMMERCIAL else basis,
        erased=erased,
        suppressions=suppressions,
        channel_enabled=channel_enabled,
    )
    if basis is not Basis.COMMERCIAL or not judged.allowed:
        return judged
    if judged.overridden:
        first = judged.overridden[0]
        return Decision(first, REASON_TEXT[first])
    return Decision(None, BASIS_TEXT[basis])
