"""`mailer inbound serve` assembled: the SMTP server, the processor, the reputation guard,
the ESP webhook, the metrics, and a watch on all of them.

Every background task is watched: one that dies stops the service (and the command exits
non-zero) instead of leaving a server that answers 250 while nothing processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from wsgiref.simple_server import WSGIServer

from aiohttp import web

from mailer.campaigns.store import CampaignStore
from mailer.core.settings import Settings
from mailer.core.tokens import Keyring
from mailer.db import Pool
from mailer.inbound.classify import Classifier
from mailer.inbound.classify_pool import ClassifyPool
from mailer.inbound.effects import Processor, Rules
from mailer.inbound.guard import Guard
from mailer.inbound.metrics import InboundMetrics
from mailer.inbound.server import InboundHandler, InboundServer, tls_context
from mailer.inbound.store import InboundStore
from mailer.inbound.webhook import create_app

log = logging.getLogger(__name__)

_BACKLOG_REFRESH_S = 15.0


def classifier_for(settings: Settings) -> Classifier:
    """The classifier with this installation's keys and local parts."""
    return Classifier(
        Keyring.from_spec(settings.require_token_keys()),
        bounce_local_part=settings.sender.bounce_local_part,
        unsubscribe_mailbox=settings.sender.unsubscribe_mailbox,
    )


def processor_for(
    settings: Settings,
    store: InboundStore,
    metrics: InboundMetrics,
    classifier: Classifier,
    pool: ClassifyPool | None = None,
) -> Processor:
    """A processor following the inbound.* settings."""
    i = settings.inbound
    return Processor(
        store,
        classifier,
        rules=Rules(i.recipient_match_days, i.soft_bounce_limit, i.soft_bounce_days),
        metrics=metrics,
        batch_size=i.batch_size,
        pool=pool,
    )


def classify_pool_for(settings: Settings) -> ClassifyPool | None:
    """The classifying processes `[inbound] classify_processes` asks for (0: none)."""
    if not settings.inbound.classify_processes:
        return None
    return ClassifyPool(
        settings.require_token_keys(),
        settings.sender.bounce_local_part,
        settings.sender.unsubscribe_mailbox,
        settings.inbound.classify_processes,
    )


class InboundService:
    """Everything `inbound serve` runs, on one pool; start(), then wait() or stop()."""

    def __init__(self, settings: Settings, pool: Pool, *, metrics: bool = True) -> None:
        self.settings = settings
        self.stop_event = asyncio.Event()
        self.metrics = InboundMetrics()
        self._serve_metrics = metrics
        self.store = InboundStore(pool)
        classifier = classifier_for(settings)
        self.pool = classify_pool_for(settings)
        self.processor = processor_for(settings, self.store, self.metrics, classifier, self.pool)
        self.guard_wake = asyncio.Event()
        self.handler = InboundHandler(
            self.store, classifier, settings.inbound, self.metrics, on_stored=self._stored
        )
        i = settings.inbound
        self.server = InboundServer(
            self.handler,
            i,
            hostname=settings.inbound_hostname(),
            tls_context=tls_context(i.tls_cert_file, i.tls_key_file),
        )
        self.guard = Guard(self.store, CampaignStore(pool), settings.guard, self.metrics.guard)
        self._tasks: list[asyncio.Task[None]] = []
        self._webhook: web.AppRunner | None = None
        self._metrics_server: WSGIServer | None = None
        self.webhook_port: int | None = None

    def _stored(self, _inbound_id: int) -> None:
        self.processor.wake.set()

    @property
    def port(self) -> int:
        """The SMTP port listened on."""
        return self.server.port

    async def start(self) -> None:
        """Listen, and start processing (stored messages left pending by a crash first)."""
        i = self.settings.inbound
        self.metrics.unmatched_backlog.set(await self.store.unmatched_backlog())
        if self._serve_metrics:
            self._metrics_server = self.metrics.serve(i.metrics_port)
        self._tasks = [
            asyncio.create_task(self.processor.run(self.stop_event), name="inbound processor"),
            asyncio.create_task(self._guard_loop(), name="reputation guard"),
            asyncio.create_task(self._backlog_loop(), name="unmatched backlog"),
        ]
        await self.server.start(i.host, i.port)
        if i.webhook_port:
            self._webhook = web.AppRunner(
                create_app(self.settings, self.store, self.metrics, on_stored=self._stored),
                access_log=None,
            )
            await self._webhook.setup()
            site = web.TCPSite(self._webhook, i.webhook_host, i.webhook_port)
            await site.start()
            self.webhook_port = i.webhook_port

    async def _guard_loop(self) -> None:
        await self.guard.run(self.stop_event, self.guard_wake)

    async def _backlog_loop(self) -> None:
        while not self.stop_event.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), _BACKLOG_REFRESH_S)
            with contextlib.suppress(OSError):
                self.metrics.unmatched_backlog.set(await self.store.unmatched_backlog())
            if self.processor.campaigns_touched:
                self.processor.campaigns_touched.clear()
                self.guard_wake.set()

    async def wait(self) -> None:
        """Until stop() or a background task's death (re-raised here)."""
        stopper = asyncio.ensure_future(self.stop_event.wait())
        done, _ = await asyncio.wait([stopper, *self._tasks], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        for task in done:
            if task is not stopper and task.exception() is not None:
                self.stop_event.set()
                await self.stop()
                raise RuntimeError(f"{task.get_name()} died") from task.exception()

    async def stop(self) -> None:
        """Stop listening, let the processor finish its batch, close the rest."""
        self.stop_event.set()
        await self.server.stop()
        if self._webhook is not None:
            await self._webhook.cleanup()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 30)
        if self.pool is not None:
            await self.pool.close()
            self.pool = None
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()


async def run_until(service: InboundService, started: Callable[[], Awaitable[None]]) -> None:
    """Start `service`, report it started, and serve until it is stopped."""
    await service.start()
    try:
        await started()
        await service.wait()
    finally:
        await service.stop()
