"""Waiting for throttle tokens: local grants taken from the buckets in Postgres.

A sender asks for one token of the global bucket, one of its recipient
domain's bucket and, when the campaign tightens that domain's limit, one of
the campaign's own bucket for it. Grants are taken a few at a time
(mailer.throttle decides how many) and spent locally, so Postgres sees a
handful of statements per second per domain while every worker shares the
same limits. Concurrency is per process: a campaign's tighter one is the
number of senders of its queue, and a domain's in-flight cap covers them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from mailer.core import throttle
from mailer.core.settings import ThrottleSettings
from mailer.send.metrics import EngineMetrics
from mailer.send.store import SendStore


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

    def limit(self, domain: str) -> throttle.Limit:
        return throttle.limit_for(domain, self.settings)

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

    async def acquire(self, domain: str, campaign: throttle.Limit | None = None) -> None:
        """Wait until one message to `domain` may go (campaign, warm-up, global, domain)."""
        if campaign is not None:
            # The tightest first: tokens of the shared buckets are not held while
            # this campaign waits for its own (others could have used them).
            await self._take(campaign, domain)
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

    async def slow_down(self, domain: str) -> None:
        """The domain answered 421 / too many connections: halve its rate for every worker."""
        key = throttle.domain_key(domain)
        await self.store.throttle_penalise(key)
        self.tokens[key] = 0
        self.metrics.slowdowns.labels(throttle.metric_domain(domain, self.settings)).inc()
