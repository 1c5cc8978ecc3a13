"""What a classified message does, each effect written once, in the transaction that marks
the message processed.

`plan` is pure: from (stored message, classification, attribution) it makes the rows to
write. `Processor` claims a batch of pending messages, classifies them, finds their
deliveries, and applies the plan set-based (one statement per effect for the whole batch;
opt-outs per contact, in contact order). The batch's messages become `processed` in the same
transaction: a crash before the commit leaves messages and effects both undone, to be done
again; after it, both done. Every effect is also idempotent on its own (suppression keys,
bounce and complaint keys, state-guarded updates), so a message can never count twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mailer.core.addresses import address_hash
from mailer.core.evidence import kept_after_erasure
from mailer.db.pool import unavailable
from mailer.inbound.classify import Classification, Classifier, Kind
from mailer.inbound.classify_pool import ClassifyPool, Item, classify_one
from mailer.inbound.esp import PROVIDERS
from mailer.inbound.metrics import InboundMetrics
from mailer.inbound.notices import notice_effects
from mailer.inbound.store import (
    Attribution,
    BounceRow,
    ComplaintRow,
    Done,
    InboundStore,
    Lookup,
    Stored,
    SuppressionRow,
)
from mailer.optouts.rules import DIGITAL
from mailer.optouts.store import Withdrawal

log = logging.getLogger(__name__)

# Kinds that act on a delivery: without one they are kept as unmatched.
_ACTING = frozenset({Kind.DSN_HARD, Kind.DSN_SOFT, Kind.COMPLAINT, Kind.UNSUBSCRIBE})
_ESP_SOURCES = frozenset(PROVIDERS)
_NOT_YET_SENT = frozenset({"sending", "queued", "deferred", "claimed"})


@dataclass(frozen=True, slots=True)
class Rules:
    """The settings the effects follow (inbound.*)."""

    recipient_match_days: int = 30
    soft_bounce_limit: int = 3
    soft_bounce_days: int = 30


@dataclass
class Plan:
    """Every row one batch writes, and each message's final verdict."""

    bounces: list[BounceRow] = field(default_factory=list)
    complaints: list[ComplaintRow] = field(default_factory=list)
    suppressions: list[SuppressionRow] = field(default_factory=list)
    soft_contacts: list[int] = field(default_factory=list)
    withdrawals: list[tuple[Withdrawal, str]] = field(default_factory=list)  # (what, method)
    notice_bounces: list[int] = field(default_factory=list)  # hard-bounced notices' ids
    done: list[Done] = field(default_factory=list)
    # Messages about a delivery whose send outcome is not recorded yet: left pending.
    postponed: list[int] = field(default_factory=list)


def lookup(stored: Stored, found: Classification) -> Lookup:
    """What the store needs to find the delivery of one message."""
    refs = found.refs
    return Lookup(
        stored.id,
        refs.token_delivery_id,
        refs.message_id_delivery_id,
        refs.message_id,
        refs.recipient,
    )


def plan(items: Sequence[tuple[Stored, Classification, Attribution]]) -> Plan:
    """The effects of a batch of classified, attributed messages."""
    out = Plan()
    for stored, found, where in items:
        detail = dict(found.detail)
        kind = found.kind
        delivery = where.delivery_id
        if kind in _ACTING and delivery is None:
            detail.update(
                classified_as=kind.value,
                reason="no delivery matches its token, Message-ID or recipient",
            )
            kind = Kind.UNMATCHED
        if found.refs.recipient is not None:
            detail.setdefault("recipient_reported", True)
        if kind is Kind.UNMATCHED or kind is Kind.AUTOREPLY or delivery is None:
            kept = kept_after_erasure(detail) if where.erased else detail
            out.done.append(
                Done(stored.id, kind.value, delivery, where.how, kept, where.erased, where.notice)
            )
            continue
        if where.status in _NOT_YET_SENT and kind in (Kind.DSN_HARD, Kind.DSN_SOFT):
            # A fast relay's DSN can overtake the engine's record of the 250 it got: the
            # delivery is still `sending`. Bouncing it now would be overwritten by `sent`.
            out.postponed.append(stored.id)
            continue
        if where.notice:
            effects = notice_effects(stored, found, where, kind, detail)
            out.notice_bounces.extend(effects.bounced)
            out.suppressions.extend(effects.suppressions)
            out.withdrawals.extend(effects.withdrawals)
            out.done.append(effects.done)
            continue
        assert where.campaign_id is not None
        assert where.contact_id is not None
        campaign, contact = where.campaign_id, where.contact_id
        evidence = {"delivery_id": delivery, "campaign_id": campaign, "inbound_id": stored.id}
        # The address to suppress: the contact's hash, or (erased contact) the address the
        # report named, so the hashed suppression still applies.
        email_hash = where.email_hash or (
            None if found.refs.recipient is None else address_hash(found.refs.recipient)
        )
        if kind in (Kind.DSN_HARD, Kind.DSN_SOFT):
            hard = kind is Kind.DSN_HARD
            out.bounces.append(
                BounceRow(
                    delivery,
                    campaign,
                    contact,
                    stored.id,
                    hard,
                    detail.get("status"),
                    None if where.erased else detail.get("diagnostic"),
                )
            )
            if hard and found.dead_address and email_hash is not None:
                out.suppressions.append(
                    SuppressionRow(
                        email_hash,
                        "hard_bounce",
                        "ses" if stored.source in _ESP_SOURCES else "dsn",
                        {
                            **evidence,
                            "status": detail.get("status"),
                            **({} if where.erased else {"diagnostic": detail.get("diagnostic")}),
                        },
                    )
                )
                detail["suppressed"] = True
            elif not hard and where.email_hash is not None:
                out.soft_contacts.append(contact)
        elif kind is Kind.COMPLAINT:
            feedback = str(detail.get("feedback_type") or "abuse")
            out.complaints.append(ComplaintRow(delivery, campaign, stored.id, feedback))
            if email_hash is not None:
                out.suppressions.append(
                    SuppressionRow(
                        email_hash,
                        "complaint",
                        "ses" if stored.source in _ESP_SOURCES else "feedback report",
                        {**evidence, "feedback_type": feedback},
                    )
                )
                detail["suppressed"] = True
            if not where.erased:
                # A complaint is the strongest opt-out: every digital channel, as one-click.
                out.withdrawals.append(
                    (
                        _withdrawal(
                            contact,
                            "complaint",
                            {**evidence, "method": "complaint"},
                            delivery,
                            campaign,
                        ),
                        "complaint",
                    )
                )
        elif kind is Kind.UNSUBSCRIBE and not where.erased:
            # RFC 8058 s.3.2: the mailto is the same request as the one-click POST, recorded
            # the same way (rows, spread to every digital channel, metric).
            out.withdrawals.append(
                (
                    _withdrawal(
                        contact, "mailto", {**evidence, "method": "mailto"}, delivery, campaign
                    ),
                    "mailto",
                )
            )
        if where.erased:
            # GDPR art. 17: mail about an erased person keeps its hash, kind and status, not
            # the address it quotes (batch_done empties the raw bytes and the sender too).
            detail = kept_after_erasure(detail)
        out.done.append(Done(stored.id, kind.value, delivery, where.how, detail, where.erased))
    return out


def _withdrawal(
    contact: int, source: str, evidence: dict[str, Any], delivery: int, campaign: int
) -> Withdrawal:
    return Withdrawal(
        contact_id=contact,
        channels=[c.value for c in DIGITAL],
        topic_ids=(),
        source=source,
        evidence=evidence,
        delivery_id=delivery,
        campaign_id=campaign,
    )


class Processor:
    """Claims pending messages in batches and applies their effects, until told to stop."""

    def __init__(
        self,
        store: InboundStore,
        classifier: Classifier,
        *,
        rules: Rules,
        metrics: InboundMetrics,
        batch_size: int = 200,
        clock: Callable[[], float] = time.time,
        pool: ClassifyPool | None = None,
    ) -> None:
        self.store = store
        self.classifier = classifier
        self.rules = rules
        self.metrics = metrics
        self.batch_size = batch_size
        self.clock = clock
        self.pool = pool
        self.wake = asyncio.Event()
        self.campaigns_touched: set[int] = set()  # the guard's hint: look at these soon
        self.counts: Counter[str] = Counter()  # messages processed by this processor, by kind
        self.postponed = 0  # messages the last batch left pending (their send not recorded)

    async def classify(self, messages: Sequence[Stored]) -> list[Classification]:
        """The batch's verdicts: in the pool of processes when there is one, else here."""
        now = int(self.clock())
        items = [Item(m.id, m.source, m.raw, m.mail_from, m.rcpt_to) for m in messages]
        if self.pool is not None:
            return await self.pool.classify(items, now)
        return [classify_one(self.classifier, item, now) for item in items]

    async def run_once(self) -> int:
        """Process one batch; how many messages it processed (0: nothing to do now)."""
        async with self.store.batch(self.batch_size) as batch:
            if not batch.messages:
                return 0
            found = await self.classify(batch.messages)
            where = await batch.attribute(
                [lookup(m, f) for m, f in zip(batch.messages, found, strict=True)],
                self.rules.recipient_match_days,
            )
            todo = plan(list(zip(batch.messages, found, where, strict=True)))
            changed: list[tuple[str, bool, float]] = []
            received = {m.id: m.received_at.timestamp() for m in batch.messages}
            for withdrawal, method in sorted(todo.withdrawals, key=lambda w: w[0].contact_id):
                result = await batch.opt_out(withdrawal)
                inbound_id = int(withdrawal.evidence["inbound_id"])
                changed.append((method, bool(result), received[inbound_id]))
            await batch.bounce(todo.bounces)
            await batch.bounce_notices(todo.notice_bounces)
            await batch.complain(todo.complaints)
            await batch.suppress(todo.suppressions)
            await batch.soft_bounce_rule(
                todo.soft_contacts, self.rules.soft_bounce_limit, self.rules.soft_bounce_days
            )
            waited = await batch.done(todo.done)
        # Counted once committed: a rolled-back batch is done again and must not count twice.
        now = self.clock()
        for verdict in todo.done:
            if verdict.id in waited:
                self.counts[verdict.kind] += 1
                self.metrics.messages.labels(verdict.kind).inc()
                self.metrics.processing_seconds.observe(waited[verdict.id])
        for method, did_change, at in changed:
            if method == "mailto":
                self.metrics.optouts.recorded("digital", "mailto", did_change, now - at)
        self.metrics.forged_tokens.labels("content").inc(sum(f.bad_tokens for f in found))
        self.metrics.unmatched_added(sum(1 for v in todo.done if v.kind == Kind.UNMATCHED))
        self.campaigns_touched.update(b.campaign_id for b in todo.bounces if b.hard)
        self.campaigns_touched.update(c.campaign_id for c in todo.complaints)
        self.postponed = len(todo.postponed)
        return len(batch.messages) - len(todo.postponed)

    async def _isolate(self, error: Exception) -> None:
        """A batch failed for a reason other than an outage: find the message and set it aside.

        One message must not block the queue (a poison message): each of the batch is tried
        alone, and the one that fails alone is kept as unmatched with the error.
        """
        log.error("inbound batch failed (%s: %s); retrying one by one", type(error).__name__, error)
        size, self.batch_size = self.batch_size, 1
        try:
            for _ in range(size):
                try:
                    if not await self.run_once():
                        return
                except Exception as exc:
                    if unavailable(exc):
                        raise
                    inbound_id = await self.store.oldest_pending()
                    if inbound_id is None:
                        return
                    log.exception("inbound message %d set aside as unmatched", inbound_id)
                    await self.store.mark_failed(inbound_id, f"{type(exc).__name__}: {exc}")
        finally:
            self.batch_size = size

    async def drain(self) -> int:
        """Process until nothing is pending; how many messages."""
        total = 0
        while count := await self.run_once():
            total += count
        return total

    async def run(self, stop: asyncio.Event, *, idle_s: float = 1.0) -> None:
        """Process whatever is stored, woken by the server, until `stop` is set.

        Pending rows left by a crash are taken first: the loop starts with a drain.
        A database outage is waited out (nothing is lost: the rows stay pending).
        """
        backoff = 0.5
        while not stop.is_set():
            try:
                count = await self.run_once()
                backoff = 0.5
            except Exception as exc:
                if not unavailable(exc):
                    await self._isolate(exc)
                    continue
                log.warning("inbound processing waits for Postgres: %s", exc)
                count = 0
                await _sleep_or(stop, backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            if count:
                continue
            self.wake.clear()
            await _sleep_or(stop, idle_s, self.wake)


async def _sleep_or(stop: asyncio.Event, seconds: float, wake: asyncio.Event | None = None) -> None:
    waiters = [asyncio.ensure_future(stop.wait())]
    if wake is not None:
        waiters.append(asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
