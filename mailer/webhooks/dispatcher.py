"""The webhook dispatcher: claim due outbox rows, sign, POST, record, back off.

Standard Webhooks (standardwebhooks.com): `webhook-id` is the event's id and stays the
same across retries and replays, so receivers de-duplicate by it; `webhook-timestamp` and
`webhook-signature` (v1, HMAC-SHA256 of "id.timestamp.body") are made by the reference
library. A 2xx is delivered; anything else, a timeout or a refused connection is retried
with exponential backoff and full jitter until the retry window (webhooks.retry_hours,
three days by default) is over; then the event fails and its endpoint is disabled, which
`mailer webhooks list` and mailer_webhook_endpoints_disabled show.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge
from standardwebhooks import Webhook

from mailer.core.settings import WebhookSettings
from mailer.webhooks.store import Due, Outcome, WebhookStore

EVENT_TYPES = (
    "contact.unsubscribed",
    "contact.consent.granted",
    "contact.consent.withdrawn",
    "delivery.bounced",
    "delivery.complained",
    "campaign.paused",
    "campaign.finished",
)


class WebhookMetrics:
    """mailer_webhook_* in `registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.deliveries = Counter(
            "mailer_webhook_deliveries",
            "Webhook delivery attempts by outcome (delivered, retry, failed)",
            ["outcome"],
            registry=registry,
        )
        self.oldest = Gauge(
            "mailer_webhook_oldest_undelivered_seconds",
            "Age of the oldest event not yet delivered to some endpoint (the outbox lag)",
            registry=registry,
        )
        self.pending = Gauge(
            "mailer_webhook_pending", "Deliveries waiting in the outbox", registry=registry
        )
        self.disabled = Gauge(
            "mailer_webhook_endpoints_disabled",
            "Endpoints disabled after persistent failure",
            registry=registry,
        )


def body_of(due: Due) -> bytes:
    """The JSON body of one event (Standard Webhooks: type, timestamp, data)."""
    data: dict[str, Any] = dict(due.data)
    if due.contact_id is not None:
        # Read at send time: an erased contact's events no longer carry an address.
        data["contact"] = {
            "id": due.contact_id,
            "email": due.email,
            "name": due.name,
            "locale": due.locale,
            "erased": due.erased_at is not None,
        }
    if due.campaign_id is not None:
        data["campaign_id"] = due.campaign_id
    document = {"type": due.type, "timestamp": due.created_at.isoformat(), "data": data}
    return json.dumps(document, ensure_ascii=False, default=str, sort_keys=True).encode()


def retry_delay(attempts: int, settings: WebhookSettings) -> float:
    """Seconds before attempt `attempts + 1`: exponential, capped, full jitter (AWS's
    "full jitter": receivers coming back are not hit by every sender at once)."""
    ceiling = min(settings.retry_max_s, settings.retry_base_s * 2 ** min(attempts, 30))
    return random.uniform(ceiling / 2, ceiling)


class Dispatcher:
    """Delivers the outbox until `stop` is set; several may run against one database."""

    def __init__(
        self,
        store: WebhookStore,
        settings: WebhookSettings,
        metrics: WebhookMetrics,
        session: aiohttp.ClientSession,
    ) -> None:
        self.store, self.settings, self.metrics, self.session = store, settings, metrics, session

    async def run(self, stop: asyncio.Event) -> None:
        """Loop: deliver batches while there are some, else sleep until NOTIFY or poll_s."""
        wake = asyncio.Event()
        async with self.store.wake_on_events(wake):
            while not stop.is_set():
                wake.clear()
                if await self.deliver_batch():
                    continue
                await self.observe()
                stopping = asyncio.ensure_future(stop.wait())
                woken = asyncio.ensure_future(wake.wait())
                try:
                    await asyncio.wait(
                        (stopping, woken),
                        timeout=self.settings.poll_s,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    stopping.cancel()
                    woken.cancel()

    async def deliver_batch(self) -> int:
        """Claim, deliver concurrently (distinct contacts), record; how many were claimed."""
        async with self.store.claim(self.settings.batch_size) as (due, record):
            if not due:
                return 0
            outcomes = await asyncio.gather(*(self._deliver(d) for d in due))
            # The outcomes are written even if we are being cancelled meanwhile: a
            # delivered event recorded as such is not sent again.
            await asyncio.shield(record(outcomes))
        for o in outcomes:
            label = {"delivered": "delivered", "pending": "retry"}.get(o.status, "failed")
            self.metrics.deliveries.labels(label).inc()
        return len(due)

    async def observe(self) -> None:
        """Refresh the backlog gauges (the outbox lag)."""
        backlog = await self.store.backlog()
        self.metrics.oldest.set(backlog.oldest_s)
        self.metrics.pending.set(backlog.pending)
        self.metrics.disabled.set(backlog.disabled)

    async def _deliver(self, due: Due) -> Outcome:
        body = body_of(due)
        msg_id = f"evt_{due.event_id}"
        now = datetime.now(UTC)
        headers = {
            "content-type": "application/json",
            "user-agent": "consent-mailer-webhooks/1",
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(due.secret).sign(msg_id, now, body),
        }
        code: int | None = None
        error: str | None = None
        try:
            async with self.session.post(
                due.url,
                data=body,
                headers=headers,
                allow_redirects=False,  # a redirect is a misconfigured endpoint, not a yes
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout_s),
            ) as response:
                code = response.status
                with contextlib.suppress(Exception):
                    await response.content.readany()  # a little of the body, for the log
                if 200 <= code < 300:
                    return Outcome(due.endpoint_id, due.event_id, "delivered", now, code, None)
                error = f"HTTP {code}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        return self._retry_or_fail(due, now, code, error)

    def _retry_or_fail(
        self, due: Due, now: datetime, code: int | None, error: str | None
    ) -> Outcome:
        deadline = due.created_at + timedelta(hours=self.settings.retry_hours)
        later = now + timedelta(seconds=retry_delay(due.attempts, self.settings))
        status = "pending" if later < deadline else "failed"
        return Outcome(due.endpoint_id, due.event_id, status, later, code, error)


async def dispatch(
    store: WebhookStore,
    settings: WebhookSettings,
    metrics: WebhookMetrics,
    stop: asyncio.Event,
) -> None:
    """Run one dispatcher with its own HTTP session until `stop` is set."""
    async with aiohttp.ClientSession() as session:
        await Dispatcher(store, settings, metrics, session).run(stop)
