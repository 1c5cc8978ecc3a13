"""What travels through the engine: a claimed delivery as a job, what a campaign needs to
send it, the queue it waits in, and the outcome row its SMTP reply becomes.

Values and pure steps only; mailer/send/engine.py moves them along.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from mailer.campaigns.audience import CampaignSpec
from mailer.campaigns.message import CampaignContent, Composed, Composer, Recipient
from mailer.core import outcome, throttle
from mailer.core.consent import Kind
from mailer.core.outcome import Outcome, Status
from mailer.core.settings import DomainThrottle
from mailer.send.recorder import Start
from mailer.send.store import Claimed, OutcomeRow


@dataclass
class Job:
    """One claimed delivery on its way through the pipeline."""

    delivery_id: int
    campaign_id: int
    domain: str
    attempts: int  # counting the one this claim is for
    first_attempt_at: datetime | None  # None: this is the first
    recipient: Recipient
    composed: Composed | None = None
    # The recorder's answer to its start (None: never asked, e.g. stopping).
    start: Start | None = None


@dataclass
class CampaignContext:
    """What a worker needs to send one campaign, built once per campaign."""

    spec: CampaignSpec
    composer: Composer
    template_version_id: int
    overrides: DomainThrottle | None
    # What a render process builds its own Composer from.
    content: CampaignContent


@dataclass
class SendQueue:
    """Jobs to one domain waiting for one throttle limit, and the senders taking them."""

    domain: str
    # The campaign's own limit for the domain, when it tightens the domain's; None: the
    # queue is the domain's, shared by every campaign that does not.
    own: throttle.Limit | None
    senders: int
    jobs: asyncio.Queue[Job | None] = field(default_factory=asyncio.Queue)


@dataclass
class Progress:
    """Counts since this engine started, for the progress bar and the summary."""

    claimed: int = 0
    by_status: dict[str, int] = field(default_factory=dict)

    def add(self, status: str) -> None:
        self.by_status[status] = self.by_status.get(status, 0) + 1


def job_of(row: Claimed) -> Job:
    """The job of a claimed row: its recipient as the templates see them."""
    return Job(
        delivery_id=row.id,
        campaign_id=row.campaign_id,
        domain=row.domain,
        attempts=row.attempts + 1,
        first_attempt_at=row.first_attempt_at,
        recipient=Recipient(
            delivery_id=row.id,
            email=row.email,
            name=row.name,
            locale=row.locale,
            attributes=row.attributes,
            consent_kind=Kind(row.consent_kind) if row.consent_kind else None,
            consent_source=row.consent_source or "",
            consent_obtained_at=row.consent_obtained_at,
            tracking=row.tracking,
            consent_date_only=row.consent_date_only,
        ),
    )


def drain(queue: asyncio.Queue[Job | None]) -> list[int]:
    """The delivery ids waiting in a sender queue, taken out of it."""
    ids = []
    while not queue.empty():
        job = queue.get_nowait()
        if job is not None:
            ids.append(job.delivery_id)
    return ids


def outcome_row(
    job: Job,
    ctx: CampaignContext,
    composed: Composed,
    result: Outcome,
    now: datetime,
    deadline: timedelta,
) -> OutcomeRow:
    """The ledger row of an SMTP transaction's outcome: sent with its archive, deferred
    with its retry time (or failed past the deadline), or bounced/failed as replied."""
    if result.status is Status.SENT:
        return OutcomeRow(
            job.delivery_id,
            Status.SENT,
            code=result.code,
            reply=result.reply,
            message_id=composed.archive.get("envelope", {}).get("message_id"),
            at=now,
            archive=composed.archive,
            template_version_id=ctx.template_version_id,
            sha256=bytes.fromhex(composed.sha256),
            size=len(composed.data),
        )
    if result.status is Status.DEFERRED:
        final, retry_at = outcome.after_deferral(
            result,
            attempt=job.attempts,
            first_try=job.first_attempt_at or now,
            now=now,
            deadline=deadline,
        )
        return OutcomeRow(
            job.delivery_id, final.status, code=final.code, reply=final.reply, retry_at=retry_at
        )
    return OutcomeRow(
        job.delivery_id,
        result.status,
        code=result.code,
        reply=result.reply,
        skip_reason=result.skip_reason,
        hard_bounce=result.hard_bounce,
    )
