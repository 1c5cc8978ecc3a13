"""The reputation guard: a running campaign whose hard-bounce or complaint rate crosses its
threshold pauses itself, with the reason recorded (`campaign status`, the report, a metric,
an alert). Resuming is the operator's explicit act (`mailer campaign resume`).

The rates are over what the campaign sent within `guard.window_hours` (and since the guard
last paused it), judged only once `guard.min_sample` messages were sent: a handful of early
bounces is noise, not a verdict. Defaults follow the providers' published limits: Amazon SES
reviews an account past 5 % bounces; Gmail and Yahoo's bulk-sender rules (2024) want spam
complaints under 0.1 % and act at 0.3 %. A campaign file's [reputation] table overrides them.

It runs wherever campaigns are sent (`mailer worker`, `campaign send`: `guarded` below) and in
`inbound serve`: one check, reading the delivery ledger, where first-hop refusals recorded by
the engine and late DSNs alike make a delivery `bounced`. Several processes checking is
harmless: the pause is one conditional UPDATE, made once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

from mailer.campaigns.store import CampaignStore
from mailer.core.reputation import describe as describe
from mailer.core.settings import GuardSettings, Settings
from mailer.db import Pool
from mailer.db.pool import unavailable
from mailer.inbound.metrics import GuardMetrics
from mailer.inbound.store import CampaignRates, InboundStore

log = logging.getLogger(__name__)

T = TypeVar("T")
_CHECK_GRACE_S = 5.0


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
        metrics: GuardMetrics,
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
                self.metrics.rate.labels(rates.slug, name).set(value)
                self.metrics.threshold.labels(rates.slug, name).set(limit)
            verdict = judge(rates, self.settings)
            if verdict is None:
                continue
            if await self.campaigns.campaign_pause_for_reputation(
                rates.campaign_id, verdict.to_json()
            ):
                self.metrics.pauses.labels(verdict.reason).inc()
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


def guard_for(pool: Pool, settings: Settings, metrics: GuardMetrics) -> Guard:
    """The guard over `pool`, with the [guard] settings."""
    return Guard(InboundStore(pool), CampaignStore(pool), settings.guard, metrics)


class GuardDied(RuntimeError):
    """The guard beside a sending engine failed: the engine was stopped rather than left
    sending with nobody watching its rates."""


async def guarded(work: Awaitable[T], guard: Guard, stop: asyncio.Event) -> T:
    """Await `work` (an engine's run, stopped by `stop`) with `guard` checking beside it.

    The engine's own first-hop bounces count: the guard reads the delivery ledger the engine
    writes, so a deployment that runs only `mailer worker` (no `inbound serve`) is guarded
    too. The guard stops once the work ends. Both are watched: if the guard dies, `stop` is
    set (the engine finishes what it holds and hands back the rest, as on SIGTERM), and
    GuardDied is raised once it did: a worker sending with no guard is what this prevents.
    """
    done_sending = asyncio.Event()
    checker = asyncio.create_task(guard.run(done_sending), name="reputation guard")
    sender = asyncio.ensure_future(work)
    try:
        await asyncio.wait({checker, sender}, return_when=asyncio.FIRST_COMPLETED)
        if checker.done():  # it returns only once told to stop, so it died
            stop.set()
            await sender
            raise GuardDied("the reputation guard died; the worker stopped sending") from (
                checker.exception()
            )
        return await sender
    finally:
        done_sending.set()
        if not sender.done():  # cancelled from outside (a second signal)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        # A check in progress may finish (a read and one conditional UPDATE, atomic either
        # way); one stuck behind a slow database is cancelled rather than hold the exit.
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(checker, _CHECK_GRACE_S)
