"""The reputation guard: a running campaign whose hard-bounce or complaint rate crosses its
threshold pauses itself, with the reason recorded (`campaign status`, the report, a metric,
an alert). Resuming is the operator's explicit act (`mailer campaign resume`).

The rates are over what the campaign sent within `guard.window_hours` (and since the guard
last paused it), judged only once `guard.min_sample` messages were sent: a handful of early
bounces is noise, not a verdict. Defaults follow the providers' published limits: Amazon SES
reviews an account past 5 % bounces; Gmail and Yahoo's bulk-sender rules (2024) want spam
complaints under 0.1 % and act at 0.3 %. A campaign file's [reputation] table overrides them.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from mailer.campaigns.store import CampaignStore
from mailer.core.reputation import describe as describe
from mailer.core.settings import GuardSettings
from mailer.db.pool import unavailable
from mailer.inbound.metrics import InboundMetrics
from mailer.inbound.store import CampaignRates, InboundStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why a campaign must pause: which rate, its value, its threshold, over how many sent."""

    reason: str  # hard_bounce_rate | complaint_rate: the metric label
    rate: float
    threshold: float
    count: int
    sent: int

    def to_json(self) -> dict[str, Any]:
        """What campaigns.pause_reason keeps."""
        return {
            "by": "reputation guard",
            "reason": self.reason,
            "rate": round(self.rate, 6),
            "threshold": self.threshold,
            "count": self.count,
            "sent": self.sent,
        }


def thresholds(rates: CampaignRates, defaults: GuardSettings) -> tuple[float, float]:
    """(hard-bounce, complaint) thresholds: the campaign's [reputation], else the settings."""
    bounce = rates.overrides.get("max_hard_bounce_rate", defaults.max_hard_bounce_rate)
    complaint = rates.overrides.get("max_complaint_rate", defaults.max_complaint_rate)
    return float(bounce), float(complaint)


def judge(rates: CampaignRates, defaults: GuardSettings) -> Verdict | None:
    """The reason to pause `rates`' campaign, or None (too few sent, or within limits)."""
    if rates.sent < defaults.min_sample:
        return None
    bounce_limit, complaint_limit = thresholds(rates, defaults)
    bounce_rate = rates.bounced / rates.sent
    complaint_rate = rates.complaints / rates.sent
    # Complaints first: the stronger signal, and the one mailbox providers act on.
    if complaint_rate > complaint_limit:
        return Verdict(
            "complaint_rate", complaint_rate, complaint_limit, rates.complaints, rates.sent
        )
    if bounce_rate > bounce_limit:
        return Verdict("hard_bounce_rate", bounce_rate, bounce_limit, rates.bounced, rates.sent)
    return None


class Guard:
    """Checks every running campaign's rates and pauses those past their thresholds."""

    def __init__(
        self,
        store: InboundStore,
        campaigns: CampaignStore,
        settings: GuardSettings,
        metrics: InboundMetrics,
    ) -> None:
        self.store = store
        self.campaigns = campaigns
        self.settings = settings
        self.metrics = metrics

    async def check(self) -> list[tuple[str, Verdict]]:
        """One pass: the campaigns paused now, with why."""
        paused: list[tuple[str, Verdict]] = []
        for rates in await self.store.guard_rates(self.settings.window_hours * 3600):
            bounce_limit, complaint_limit = thresholds(rates, self.settings)
            sent = max(rates.sent, 1)
            for name, value, limit in (
                ("hard_bounce", rates.bounced / sent, bounce_limit),
                ("complaint", rates.complaints / sent, complaint_limit),
            ):
                self.metrics.guard_rate.labels(rates.slug, name).set(value)
                self.metrics.guard_threshold.labels(rates.slug, name).set(limit)
            verdict = judge(rates, self.settings)
            if verdict is None:
                continue
            if await self.campaigns.campaign_pause_for_reputation(
                rates.campaign_id, verdict.to_json()
            ):
                self.metrics.guard_pauses.labels(verdict.reason).inc()
                log.warning("campaign %s %s", rates.slug, describe(verdict.to_json()))
                paused.append((rates.slug, verdict))
        return paused

    async def run(self, stop: asyncio.Event, wake: asyncio.Event | None = None) -> None:
        """Check every `guard.interval_s` (sooner when woken) until `stop` is set."""
        while not stop.is_set():
            try:
                await self.check()
            except Exception as exc:
                if not unavailable(exc):
                    raise
                log.warning("reputation guard waits for Postgres: %s", exc)
            waiters = [asyncio.ensure_future(stop.wait())]
            if wake is not None:
                waiters.append(asyncio.ensure_future(wake.wait()))
            await asyncio.wait(
                waiters, timeout=self.settings.interval_s, return_when=asyncio.FIRST_COMPLETED
            )
            for waiter in waiters:
                waiter.cancel()
            if wake is not None:
                wake.clear()
