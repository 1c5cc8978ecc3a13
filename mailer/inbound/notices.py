"""What inbound mail about a transactional notice (mailer/transactional) does.

A notice's id comes from the deliveries' sequence, so a VERP or unsubscribe token, or a
Message-ID, names either a campaign delivery or a notice (batch_attribute says which). The
effects are a campaign delivery's, less what only a campaign has: no bounces or complaints
rows (they count per campaign, for the reputation guard and the soft-bounce rule). A hard
bounce makes the notice `bounced` and, for a dead address, suppresses it as the lane does
for a first-hop 5xx; a complaint suppresses; a complaint or a mailto unsubscribe withdraws
through the shared opt-out, as the tracker's one-click does for a notice (CASL s.11: from
commercial email; exempt notices still go, saying why).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mailer.core.addresses import address_hash
from mailer.core.evidence import kept_after_erasure
from mailer.inbound.classify import Classification, Kind
from mailer.inbound.esp import PROVIDERS
from mailer.inbound.store import Attribution, Done, Stored, SuppressionRow
from mailer.optouts.rules import DIGITAL
from mailer.optouts.store import Withdrawal


@dataclass
class NoticeEffects:
    """The rows one message about a notice writes, and its verdict."""

    done: Done
    bounced: list[int] = field(default_factory=list)  # the notice, on a hard bounce
    suppressions: list[SuppressionRow] = field(default_factory=list)
    withdrawals: list[tuple[Withdrawal, str]] = field(default_factory=list)  # (what, method)


def notice_effects(
    stored: Stored,
    found: Classification,
    where: Attribution,
    kind: Kind,
    detail: dict[str, Any],
) -> NoticeEffects:
    """The effects of one acting message (`kind`) attributed to a notice."""
    notice = where.delivery_id
    assert notice is not None
    assert where.notice
    evidence = {"transactional_id": notice, "inbound_id": stored.id}
    # As for a campaign delivery: the contact's hash, or (erased) the address reported.
    email_hash = where.email_hash or (
        None if found.refs.recipient is None else address_hash(found.refs.recipient)
    )
    esp = stored.source in PROVIDERS
    bounced: list[int] = []
    suppressions: list[SuppressionRow] = []
    method: str | None = None
    if kind is Kind.DSN_HARD:
        bounced.append(notice)
        if found.dead_address and email_hash is not None:
            diagnostic = {} if where.erased else {"diagnostic": detail.get("diagnostic")}
            suppressions.append(
                SuppressionRow(
                    email_hash,
                    "hard_bounce",
                    "ses" if esp else "dsn",
                    {**evidence, "status": detail.get("status"), **diagnostic},
                )
            )
            detail["suppressed"] = True
    elif kind is Kind.COMPLAINT:
        feedback = str(detail.get("feedback_type") or "abuse")
        if email_hash is not None:
            suppressions.append(
                SuppressionRow(
                    email_hash,
                    "complaint",
                    "ses" if esp else "feedback report",
                    {**evidence, "feedback_type": feedback},
                )
            )
            detail["suppressed"] = True
        method = "complaint"  # the strongest opt-out: every digital channel
    elif kind is Kind.UNSUBSCRIBE:
        method = "mailto"  # RFC 8058 s.3.2: the same request as the one-click POST
    withdrawals: list[tuple[Withdrawal, str]] = []
    if method is not None and not where.erased and where.contact_id is not None:
        withdrawal = Withdrawal(
            contact_id=where.contact_id,
            channels=[c.value for c in DIGITAL],
            topic_ids=(),
            source=method,
            evidence={**evidence, "method": method},
            delivery_id=notice,
            campaign_id=None,  # a notice belongs to no campaign
        )
        withdrawals.append((withdrawal, method))
    if where.erased:
        detail = kept_after_erasure(detail)  # GDPR art. 17, as for a campaign delivery
    done = Done(stored.id, kind.value, notice, where.how, detail, where.erased, notice=True)
    return NoticeEffects(done, bounced, suppressions, withdrawals)
