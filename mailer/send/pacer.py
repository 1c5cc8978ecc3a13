"""Waiting for throttle tokens: local grants taken from the buckets in Postgres.

A sender asks for one token of the global bucket, one of its recipient
domain's bucket and, when the campaign tightens that domain's limit, one of
the campaign's own bucket for it. Grants are taken a few at a time
(mailer.core.throttle decides how many) and spent locally, so Postgres sees a
handful of statements per second per domain while every worker shares the
same limits. Concurrency is per process: a campaign's tighter one is the
number of senders of its queue, and a domain's in-flight cap covers them all.

A domain's rate adapts (mailer.core.aimd): the cut state comes back with every
grant, so a cut made by any worker holds here within one grant, and each
worker watches the share of 4xx replies of the domains it sends to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from mailer.core import throttle
from mailer.core.aimd import DeferralWindow
from mailer.core.outcome import Outcome
from mailer.core.settings import ThrottleSettings
from mailer.send.metrics import EngineMetrics
from mailer.send.store import CutState, SendStore

log = logging.getLogger("mailer.pacer")


@dataclass(frozen=True)
class _Seen:
    """A bucket's cut state as Postgres last reported it, and when (monotonic)."""

    cut: CutState
    at: float


class WarmupExhausted(Exception):
    """Today's warm-up cap is used up; the rest waits for tomorrow."""


class Pacer:
    def __init__(
        self, store: SendStore, settings: ThrottleSettings, metrics: EngineMetrics
    ) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.tokens: dict[str, int] = defaultdict(int)
        self.locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.slots: dict[str, asyncio.Semaphore] = {}
        self.global_limit = throttle.global_limit(settings)
        self.warmup_tokens = 0
        self.aimd = throttle.aimd_for(settings)
        self.cuts: dict[str, _Seen] = {}
        self.windows: dict[str, DeferralWindow] = {}
        self.domains: set[str] = set()  # recipient domains this worker sent to
        metrics.watch_domain_rates(self.domain_rates)

    def limit(self, domain: str) -> throttle.Limit:
        return throttle.limit_for(domain, self.settings)

    def factor(self, key: str) -> float:
        """The share of a bucket's configured rate allowed now, as this worker last saw it."""
        seen = self.cuts.get(key)
        if seen is None or seen.cut.since_cut_s is None:
            return 1.0
        since = seen.cut.since_cut_s + (time.monotonic() - seen.at)
        return self.aimd.factor(seen.cut.factor, since)

    def domain_rates(self) -> Iterator[tuple[str, float]]:
        """(metric label, effective rate) of the domains this worker sent to.

        Domains folded into the label "other" report the lowest among them:
        the one a cut holds back most.
        """
        rates: dict[str, float] = {}
        for domain in self.domains:
            label = throttle.metric_domain(domain, self.settings)
            limit = self.limit(domain)
            rate = limit.rate * self.factor(limit.key)
            rates[label] = min(rate, rates.get(label, rate))
        yield from rates.items()

    @contextlib.asynccontextmanager
    async def in_flight(self, domain: str) -> AsyncIterator[None]:
        """Hold one of the domain's in-flight places in this process while sending.

        Held around SMTP only, never while waiting for tokens: the domain's cap
        counts messages of every campaign, while a campaign slowed by its own
        limit waits in its own queue.
        """
        slot = self.slots.get(domain)
        if slot is None:
            slot = self.slots[domain] = asyncio.Semaphore(self.limit(domain).concurrency)
        async with slot:
            yield

    async def _take(self, limit: throttle.Limit, domain: str) -> float:
        """One token of a bucket; returns the seconds spent waiting."""
        waited = 0.0
        async with self.locks[limit.key]:
            while self.tokens[limit.key] <= 0:
                now = throttle.slowed(limit, self.factor(limit.key))
                granted, wait_s, cut = await self.store.throttle_take(
                    now.key, now.rate, now.burst, now.grant_size()
                )
                self.cuts[limit.key] = _Seen(cut, time.monotonic())
                if granted:
                    self.tokens[limit.key] += granted
                    break
                pause = throttle.wait_for(1, now.rate) if wait_s <= 0 else wait_s
                started = time.perf_counter()
                await asyncio.sleep(pause)
                waited += time.perf_counter() - started
            self.tokens[limit.key] -= 1
        if waited:
            label = domain if domain == "*" else throttle.metric_domain(domain, self.settings)
            self.metrics.throttle_wait.labels(label).inc(waited)
        return waited

    async def acquire(
        self, domain: str, campaign: throttle.Limit | None = None, *, exempt: bool = False
    ) -> None:
        """Wait until one message to `domain` may go (campaign, warm-up, global, domain).

        `exempt`: a transactional message (mailer/send/lane.py), outside the warm-up cap,
        which paces bulk volume; the global and domain rates still hold for it.
        """
        self.domains.add(domain)
        if campaign is not None:
            # The tightest first: tokens of the shared buckets are not held while
            # this campaign waits for its own (others could have used them).
            await self._take(campaign, domain)
        if not exempt:
            await self._warmup()
        await self._take(self.global_limit, "*")
        await self._take(self.limit(domain), domain)

    async def _warmup(self) -> None:
        if self.settings.warmup_daily_cap <= 0:
            return
        async with self.locks["warmup"]:
            if self.warmup_tokens <= 0:
                # Today's cap is only needed to refill: Postgres is asked once per
                # grant of 50 messages, not once per message.
                today = datetime.now(UTC).date()
                first_day = await self.store.warmup_first_day()
                cap = throttle.warmup_cap(self.settings, first_day, today)
                assert cap is not None  # warm-up is on (checked above)
                self.warmup_tokens = await self.store.warmup_take(today, cap, 50)
                if self.warmup_tokens <= 0:
                    raise WarmupExhausted(f"warm-up cap of {cap} messages reached for {today}")
            self.warmup_tokens -= 1

    async def replied(self, domain: str, result: Outcome) -> None:
        """Learn from a domain's reply: cut its rate when it asks, or when 4xx pile up."""
        if result.code is None:
            return  # no reply at all (connection to the relay failed): not the domain's word
        window = self.windows.get(domain)
        if window is None:
            window = self.windows[domain] = throttle.deferral_window(self.settings)
        too_many = window.observe(time.monotonic(), 400 <= result.code < 500)
        if result.slow_down:
            label = throttle.metric_domain(domain, self.settings)
            self.metrics.slowdowns.labels(label).inc()
            await self._cut(domain, "421" if result.code == 421 else "busy", result.reply)
        elif too_many:
            await self._cut(domain, "deferral_share", result.reply)

    async def _cut(self, domain: str, reason: str, reply: str) -> None:
        """Cut the domain's rate for every worker (once per burst of complaints)."""
        key = throttle.domain_key(domain)
        self.domains.add(domain)
        factor = await self.store.throttle_cut(key, self.aimd)
        if factor is None:
            return  # cut moments ago, by this worker or another: the same complaint
        self.tokens[key] = 0
        self.cuts[key] = _Seen(CutState(factor, 0.0), time.monotonic())
        self.metrics.cuts.labels(throttle.metric_domain(domain, self.settings), reason).inc()
        # At most one line per domain per slowdown_hold_s (the metrics carry the rest).
        log.info(
            "%s: rate cut to %.0f %% of %.1f msg/s (%s: %s); back to full within %.0f s",
            domain,
            factor * 100,
            self.limit(domain).rate,
            reason,
            reply[:120],
            self.aimd.recovered_after_s(factor),
        )
