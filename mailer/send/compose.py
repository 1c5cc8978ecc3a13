"""The engine's render step: each campaign's composer built once, and claimed jobs composed
under mailer.limits, on the worker's loop or in render processes.

A message over its CPU time, size or memory fails alone (MessageError with its reason);
links seen for the first time are registered so each click token names a stored link.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from datetime import datetime

from mailer.campaigns.limits import MESSAGE_TOO_LARGE, RenderLimits, timed
from mailer.campaigns.message import Composed, campaign_composer
from mailer.campaigns.render import LimitError, MessageError, UnregisteredLinks
from mailer.core.settings import DomainThrottle, Settings
from mailer.core.tokens import Keyring
from mailer.send.jobs import CampaignContext, Job
from mailer.send.render_pool import Batch, RenderPool
from mailer.send.store import SendStore

MAX_NEW_LINKS_ROUNDS = 20
# Messages rendered between two yields to the event loop (~5 ms of work), and the most
# time spent rendering between two yields whatever the count (slow templates, limits).
YIELD_EVERY = 16
YIELD_AFTER_S = 0.02

Composing = AsyncIterator[tuple[Job, Composed | MessageError, float]]


class Composition:
    """Composes one worker's messages: here, or in its render processes when it has them."""

    def __init__(
        self,
        store: SendStore,
        settings: Settings,
        keyring: Keyring,
        render_pool: RenderPool | None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.keyring = keyring
        self.render_pool = render_pool
        self.limits = RenderLimits.from_settings(settings.engine)
        self.contexts: dict[int, CampaignContext] = {}

    async def context(self, campaign_id: int) -> CampaignContext:
        """What sending this campaign needs, built on its first batch."""
        ctx = self.contexts.get(campaign_id)
        if ctx is not None:
            return ctx
        campaign = await self.store.campaign_for_engine(campaign_id)
        definition, composer = campaign_composer(campaign.content, self.keyring, self.settings)
        t = definition.throttle
        overrides = (
            DomainThrottle(
                rate=t.rate or self.settings.throttle.default_domain_rate,
                concurrency=t.concurrency or self.settings.throttle.default_domain_concurrency,
            )
            if t.rate or t.concurrency
            else None
        )
        # A static template's links are known now: registered before its first batch, so
        # no message of it has to be composed twice.
        renderer = composer.renderer
        known = composer.link_ids()
        missing = (
            [] if renderer.personalised_links else [u for u in renderer.links if u not in known]
        )
        if missing:
            composer.add_links(await self.store.links_register(campaign_id, missing))
        ctx = CampaignContext(
            campaign.spec, composer, campaign.template_version_id, overrides, campaign.content
        )
        self.contexts[campaign_id] = ctx
        return ctx

    def compose(
        self, ctx: CampaignContext, jobs: list[Job], now: datetime, stop: asyncio.Event
    ) -> Composing:
        """Each job with its message (or why it has none) and the seconds it took, composed
        in the render processes when the worker has them, else on its loop; once `stop` is
        set no more are yielded (the others were not composed)."""
        if self.render_pool is not None:
            return self.elsewhere(ctx, jobs, now, stop)
        return self.on_loop(ctx, jobs, now, stop)

    async def on_loop(
        self, ctx: CampaignContext, jobs: list[Job], now: datetime, stop: asyncio.Event
    ) -> Composing:
        """Compose on the worker's own loop, a few messages between two turns of it."""
        yielded = time.perf_counter()
        for index, job in enumerate(jobs):
            # Rendering takes ~0.3 ms a message: a whole batch in one go held the loop for
            # ~150 ms while every SMTP reply waited. Yield every few messages, and after any
            # slow one (a render may take up to engine.render_timeout_ms).
            if (
                index % YIELD_EVERY == YIELD_EVERY - 1
                or time.perf_counter() - yielded > YIELD_AFTER_S
            ):
                await asyncio.sleep(0)
                yielded = time.perf_counter()
            if stop.is_set():
                return
            started = time.perf_counter()
            result: Composed | MessageError
            try:
                result = await self.here(ctx, job, now)
            except MessageError as exc:
                result = exc
            yield job, result, time.perf_counter() - started

    async def here(self, ctx: CampaignContext, job: Job, now: datetime) -> Composed:
        """Compose one message on this loop; MessageError (with its reason) if it cannot be."""
        for _ in range(MAX_NEW_LINKS_ROUNDS):
            try:
                return timed(self.limits, ctx.composer.compose, job.recipient, now)
            except LimitError as exc:
                if exc.reason != MESSAGE_TOO_LARGE:
                    # Interrupted wherever it stood (over its CPU time, out of memory): the
                    # composer's caches may be half-written. The size guards stop a render
                    # before building anything, so after them it is whole.
                    content = dataclasses.replace(ctx.content, links=ctx.composer.link_ids())
                    _, ctx.composer = campaign_composer(content, self.keyring, self.settings)
                raise
            except UnregisteredLinks as exc:
                # URLs seen for the first time (new campaign, personalised link):
                # register them so each click token names a stored link.
                registered = await self.store.links_register(job.campaign_id, list(exc.urls))
                ctx.composer.add_links(registered)
        raise MessageError(f"more than {MAX_NEW_LINKS_ROUNDS} rounds of new links")

    async def elsewhere(
        self, ctx: CampaignContext, jobs: list[Job], now: datetime, stop: asyncio.Event
    ) -> Composing:
        """Compose a batch in the render processes; the worker's loop only waits for it."""
        assert self.render_pool is not None
        for _ in range(MAX_NEW_LINKS_ROUNDS):
            started = time.perf_counter()
            batch = Batch(
                (ctx.spec.id, ctx.template_version_id),
                ctx.content,
                ctx.composer.link_ids(),
                [job.recipient for job in jobs],
                now,
            )
            results = await self.render_pool.compose_unless_stopped(batch, stop)
            if results is None:
                return  # stopping: the jobs not yielded were not composed
            each = (time.perf_counter() - started) / len(jobs)
            again: list[Job] = []
            urls: dict[str, None] = {}
            for job, result in zip(jobs, results, strict=True):
                if isinstance(result, UnregisteredLinks):
                    again.append(job)
                    urls.update(dict.fromkeys(result.urls))
                else:
                    yield job, result, each
            if not again:
                return
            # Links seen for the first time (personalised ones): registered, and those
            # messages composed again in the processes, never here, where no memory limit
            # holds (mailer.limits).
            ctx.composer.add_links(await self.store.links_register(ctx.spec.id, list(urls)))
            jobs = again
        for job in jobs:
            yield job, MessageError(f"more than {MAX_NEW_LINKS_ROUNDS} rounds of new links"), 0.0
