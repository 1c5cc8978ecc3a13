"""Waiting for throttle tokens: local grants taken from the buckets in Postgres.

A sender asks for one token of the global bucket and one of its recipient
domain's bucket. Grants are taken a few at a time (mailer.throttle decides
how many) and spent locally, so Postgres sees a handful of statements per
second per domain while every worker shares the same limits. A per-domain
semaphore caps the messages in flight to one domain from this process.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from datetime import UTC, datetime

from mailer import throttle
from mailer.config import DomainThrottle, ThrottleSettings
from mailer.metrics import EngineMetrics
from mailer.store import Store


class WarmupExhausted(Exception):
    """Today's warm-up cap is used up; the rest waits for tomorrow."""


class Pacer:
    def __init__(self, store: Store, settings: ThrottleSettings, metrics: EngineMetrics) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.tokens: dict[str, int] = defaultdict(int)
        self.locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.in_flight: dict[str, asyncio.Semaphore] = {}
        self.global_limit = throttle.global_limit(settings)
        self.warmup_tokens = 0

    def limit(self, domain: str, overrides: DomainThrottle | None = None) -> throttle.Limit:
        return throttle.limit_for(domain, self.settings, overrides)

    def slot(self, limit: throttle.Limit) -> asyncio.Semaphore:
        """The per-domain concurrency cap of this process."""
        sem = self.in_flight.get(limit.key)
        if sem is None:
            sem = self.in_flight[limit.key] = asyncio.Semaphore(limit.concurrency)
        return sem

    async def _take(self, limit: throttle.Limit, domain: str) -> float:
        """One token of a bucket; returns the seconds spent waiting."""
        waited = 0.0
        async with self.locks[limit.key]:
            while self.tokens[limit.key] <= 0:
                granted, wait_s = await self.store.throttle_take(
                    limit.key, limit.rate, limit.burst, limit.grant_size()
                )
                if granted:
                    self.tokens[limit.key] += granted
                    break
                pause = throttle.wait_for(1, limit.rate) if wait_s <= 0 else wait_s
                started = time.perf_counter()
                await asyncio.sleep(pause)
                waited += time.perf_counter() - started
            self.tokens[limit.key] -= 1
        if waited:
            label = domain if domain == "*" else throttle.metric_domain(domain, self.settings)
            self.metrics.throttle_wait.labels(label).inc(waited)
        return waited

    async def acquire(self, domain: str, overrides: DomainThrottle | None = None) -> None:
        """Wait until one message to `domain` may go (global, domain and warm-up limits)."""
        await self._warmup()
        await self._take(self.global_limit, "*")
        await self._take(self.limit(domain, overrides), domain)

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

    async def slow_down(self, domain: str) -> None:
        """The domain answered 421 / too many connections: halve its rate for every worker."""
        key = throttle.domain_key(domain)
        await self.store.throttle_penalise(key)
        self.tokens[key] = 0
        self.metrics.slowdowns.labels(throttle.metric_domain(domain, self.settings)).inc()
