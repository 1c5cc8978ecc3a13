"""The send engine: claim → re-check → render → throttle → SMTP → record.

One `Engine` is one worker process's pipeline. Any number of them, on one
machine or several, share the running campaigns: each claims batches of
deliveries with FOR UPDATE SKIP LOCKED and a lease, so none sends what
another holds.

    claimer ──► send queues ──► senders (one queue per recipient domain, or per
       │                          campaign and domain when the campaign tightens
       │                          that domain's limit; ≤ concurrency senders each)
       │                              │ tokens taken
       │                              ▼
       │                          SMTP lanes (one per relay connection) ◄─┐ start marks,
       │                              │ outcomes                           │ group-committed
       └──► skipped outcomes ─────────┴──────────────────────────► recorder ┘

Claimed rows are `claimed`, not in flight: a lane asks the recorder to mark
its next message `sending` while it carries the current one, and sends only
once that mark is committed, with the last check for opt-outs made in the
same statement (mailer/send/recorder.py). After kill -9, claimed rows go back
to the queue; of the started rows left uncertain, at most `engine.starts_ahead`
per SMTP connection never reached the relay.

Memory stays flat: the claimer only claims while fewer than `max_pending`
messages are in the pipeline. On SIGTERM the claimer stops, a batch still
being composed is abandoned (its render processes killed), senders finish
the message in hand, messages never handed to SMTP are released back to the
queue, the recorder flushes, connections close.

Each message is composed under mailer.limits: one over its CPU time, size or
memory is skipped with that reason, and the rest of its batch goes on.

The steps the engine moves jobs through live beside it: the render step in
compose.py, the job and its outcome row in jobs.py, start marks and outcomes in
recorder.py, tokens in pacer.py, the SMTP lanes in smtp.py, leases in leases.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from mailer.campaigns.message import Composed
from mailer.campaigns.render import MessageError
from mailer.campaigns.store import CampaignStore
from mailer.core import throttle
from mailer.core.outcome import Outcome, Status
from mailer.core.settings import Settings
from mailer.core.tokens import Keyring
from mailer.db import TRANSIENT_ERRORS, unavailable
from mailer.send import leases
from mailer.send.compose import Composition
from mailer.send.failure_log import FailureLog
from mailer.send.jobs import CampaignContext, Job, Progress, SendQueue, drain, job_of, outcome_row
from mailer.send.metrics import EngineMetrics
from mailer.send.pacer import Pacer, WarmupExhausted
from mailer.send.recorder import Recorder, Start, Verdict
from mailer.send.render_pool import RenderPool
from mailer.send.smtp import Relays
from mailer.send.store import Claimed, OutcomeRow, SendStore

__all__ = ["Engine", "Progress", "SideTaskDied"]

log = logging.getLogger("mailer.engine")

# How often the claimer looks again when nothing is due, and how often dead
# workers' leases are swept.
IDLE_SLEEP_S = 0.5
SWEEP_EVERY_S = 10.0


class SideTaskDied(RuntimeError):
    """A task the worker cannot run without ended; the run stopped cleanly and says which."""


class Engine:
    def __init__(
        self,
        store: SendStore,
        campaigns: CampaignStore,
        settings: Settings,
        keyring: Keyring,
        relays: Relays,
        *,
        metrics: EngineMetrics | None = None,
        stop: asyncio.Event | None = None,
        worker_id: str | None = None,
        only_campaigns: set[int] | None = None,
        max_pending: int | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.campaigns = campaigns
        self.settings = settings
        self.keyring = keyring
        self.relays = relays
        self.metrics = metrics or EngineMetrics()
        self.stop = stop or asyncio.Event()
        self.worker = worker_id or f"{socket.gethostname()}:{uuid.uuid4().hex[:8]}"
        self.only = only_campaigns
        self.max_pending = max_pending or max(2 * settings.engine.batch_size, 4 * relays.capacity)
        self.clock = clock
        self.pacer = Pacer(store, settings.throttle, self.metrics)
        # One queue per throttle limit, with its senders: a campaign held to a tighter
        # rate for a domain waits in its own queue, never in front of other campaigns.
        self.queues: dict[str, SendQueue] = {}
        # Which queue a campaign's messages to a domain join, decided once.
        self.routes: dict[tuple[int, str], SendQueue] = {}
        self.senders: list[asyncio.Task[None]] = []
        self.pending = 0  # claimed, not yet recorded
        self.room = asyncio.Event()
        self.progress = Progress()
        self.deadline = timedelta(hours=settings.engine.retry_deadline_hours)
        self._last_sweep = 0.0
        self._running: set[int] = set()
        # Claimed deliveries that will not reach SMTP in this run (stop, errors):
        # handed back to the queue in one statement.
        self._unsent: list[int] = []
        # The render step: each campaign's composer, here or in render processes.
        self.composition = Composition(store, settings, keyring, None)
        # Expected failures (database or relay unreachable) as one line per interval.
        self.failures = FailureLog(log)
        # Writes outcomes and start marks, group-committed (mailer/send/recorder.py).
        self.recorder = Recorder(store, self.worker, self.failures, self._settled)
        for relay in relays.relays:
            relay.look_ahead = settings.engine.starts_ahead
            relay.on_wait = self.recorder.hurry
        # Side tasks that ended while the worker ran (Engine._watch): the run then fails.
        self.died: list[str] = []
        self.metrics.watch_queue("send", self._waiting_to_send)
        self.metrics.watch_queue("record", self.recorder.depth)

    # ------------------------------------------------------------ run

    async def run(self, *, until_idle: bool = False) -> Progress:
        """Send until stopped (or, with until_idle, until nothing is due and nothing in flight)."""
        # Templates, settings and pools live for the whole run: moving them out of the
        # collector's reach keeps full collections short (measured +5 % in bench/render.py).
        if self.settings.engine.render_processes > 0:
            self.composition.render_pool = RenderPool(
                self.settings, self.settings.engine.render_processes
            )
        gc.freeze()
        recorder = self._watch(asyncio.create_task(self.recorder.run(), name="recorder"))
        renewer = leases.renew(
            self.store, self.worker, self.settings.engine.lease_seconds, self.failures
        )
        renewing = self._watch(asyncio.create_task(renewer, name="leases"))
        try:
            await self._claimer(until_idle)
        finally:
            self.stop.set()
            # Each step is guarded on its own: a failure in one (Postgres down
            # while handing back) must not skip the next (recording outcomes).
            for send_queue in self.queues.values():
                self._unsent.extend(drain(send_queue.jobs))
            for send_queue in self.queues.values():
                for _ in range(send_queue.senders):
                    send_queue.jobs.put_nowait(None)  # finish the message in hand, then stop
            await asyncio.gather(*self.senders, return_exceptions=True)
            await self._logged(self.relays.close(), "closing SMTP connections")
            await self._logged(self._release_unsent(), "handing back unsent deliveries")
            renewing.cancel()
            if recorder.done():  # it died: a fresh one writes what it held and what waits
                recorder = asyncio.create_task(self.recorder.run(), name="recorder")
            # Outcomes already known must reach the ledger, whatever happens now.
            self.recorder.close()
            await asyncio.shield(recorder)
            if self.composition.render_pool is not None:
                await self._logged(
                    self.composition.render_pool.close(), "stopping the render processes"
                )
            self.failures.flush()
        if self.died:
            raise SideTaskDied(
                f"{', '.join(self.died)}: the worker stopped claiming, recorded the outcomes it "
                "knew and handed the rest back"
            )
        return self.progress

    def _watch(self, task: asyncio.Task[None]) -> asyncio.Task[None]:
        """Stop the run if `task` ends while the worker runs, instead of stalling silently.

        A dead recorder would leave claimed rows unrecorded (and the claimer waiting for
        room that never comes); a dead lease renewer would let them lapse into `uncertain`
        while their messages still go out (procrastinate's side-task monitor does the same).
        """

        def ended(done: asyncio.Task[None]) -> None:
            if self.stop.is_set() and (done.cancelled() or done.exception() is None):
                return  # the shutdown ended it (leases cancelled, recorder past its marker)
            why = "cancelled" if done.cancelled() else repr(done.exception() or "returned")
            log.critical("the %s task ended (%s): stopping the worker", done.get_name(), why)
            self.died.append(f"{done.get_name()} task ended ({why})")
            self.stop.set()

        task.add_done_callback(ended)
        return task

    async def _claimer(self, until_idle: bool) -> None:
        """Claim while there is room; a database outage pauses claiming, it does not end it."""
        failures = 0
        while not self.stop.is_set():
            try:
                if await self._claim_round(until_idle):
                    return
                failures = 0
            except TRANSIENT_ERRORS as exc:
                failures += 1
                delay = min(30.0, 0.5 * 2**failures)
                if unavailable(exc):
                    self.failures.failed("claiming paused: database unavailable", exc)
                else:
                    log.exception("claiming failed; retrying in %.1f s", delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), delay)

    async def _claim_round(self, until_idle: bool) -> bool:
        """One pass over the running campaigns; True when the run is over (until_idle)."""
        self.failures.flush_due()
        sweep = time.monotonic() - self._last_sweep > SWEEP_EVERY_S
        if sweep:
            self._last_sweep = time.monotonic()
            await leases.sweep(self.store, self.metrics)
            await self.store.finish_campaigns()
        claimed = 0
        running = await self.store.running_campaigns()
        # Senders check this before each message: a pause or cancel seen here stops
        # messages already rendered and queued, not only new claims.
        self._running = set(running)
        if sweep:
            await self._publish_progress(running)
        for campaign_id in running:
            if self.only is not None and campaign_id not in self.only:
                continue
            room = self.max_pending - self.pending
            if room < max(1, self.settings.engine.batch_size // 4):
                break
            claimed += await self._claim(campaign_id, min(room, self.settings.engine.batch_size))
        if claimed:
            return False
        if until_idle and self.pending == 0:
            await self.store.finish_campaigns()
            return True
        self.room.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wait_stop_or_room(), IDLE_SLEEP_S)
        return False

    async def _publish_progress(self, running: list[int]) -> None:
        """Deliveries by state of the campaigns this worker sends, for the dashboard."""
        for campaign_id in running:
            if self.only is not None and campaign_id not in self.only:
                continue
            for status, count in (await self.campaigns.campaign_status_counts(campaign_id)).items():
                self.metrics.progress.labels(str(campaign_id), status).set(count)

    async def _wait_stop_or_room(self) -> None:
        stop = asyncio.create_task(self.stop.wait())
        room = asyncio.create_task(self.room.wait())
        try:
            await asyncio.wait({stop, room}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            room.cancel()

    # ------------------------------------------------------------ claim, re-check, render

    async def _claim(self, campaign_id: int, limit: int) -> int:
        rows = await self.store.claim_batch(
            campaign_id, limit, self.settings.engine.lease_seconds, self.worker
        )
        if not rows:
            return 0
        self.pending += len(rows)
        self.progress.claimed += len(rows)
        self.metrics.claimed.inc(len(rows))
        handled: set[int] = set()
        try:
            await self._prepare(campaign_id, rows, handled)
        except Exception as exc:
            # Whatever failed, the rows not yet dispatched or recorded go back to
            # the queue instead of waiting in `sending` to become uncertain.
            stranded = [r.id for r in rows if r.id not in handled]
            if not unavailable(exc):  # a database outage is summarised by the claimer
                log.exception("preparing %d deliveries failed; handing them back", len(stranded))
            self._unsent.extend(stranded)
            await self._logged(self._release_unsent(), "handing back deliveries")
            raise
        return len(rows)

    async def _prepare(self, campaign_id: int, rows: list[Claimed], handled: set[int]) -> None:
        """Re-check, render and dispatch claimed rows; `handled` collects those done with."""
        ctx = await self.composition.context(campaign_id)
        now = self.clock()
        # A contact who opted out after the freeze is skipped, never sent.
        verdicts = await self.campaigns.audience(ctx.spec, now, [r.contact_id for r in rows])
        reasons = {v.contact_id: v.reason for v in verdicts}
        jobs: list[Job] = []
        for row in rows:
            reason = reasons.get(row.contact_id, "erased")
            if reason is not None:
                handled.add(row.id)
                await self._done(OutcomeRow(row.id, Status.SKIPPED, skip_reason=reason), "skip")
                continue
            jobs.append(job_of(row))
        # Stopping (or a second signal) mid-batch: the jobs not composed were not sent.
        try:
            async for job, result, seconds in self.composition.compose(ctx, jobs, now, self.stop):
                await self._composed(ctx, job, result, seconds, handled)
        finally:
            self._hand_back([j for j in jobs if j.delivery_id not in handled], handled)

    async def _composed(
        self,
        ctx: CampaignContext,
        job: Job,
        result: Composed | MessageError,
        seconds: float,
        handled: set[int],
    ) -> None:
        """One message composed, here or in a render process: skipped with its reason, or
        handed to its send queue. Both paths end here."""
        if isinstance(result, MessageError):
            await self._skip_unbuildable(job, result, handled)
            return
        job.composed = result
        self.metrics.render_seconds.observe(seconds)
        handled.add(job.delivery_id)
        self._dispatch(job, ctx)

    def _hand_back(self, jobs: list[Job], handled: set[int]) -> None:
        """Claimed jobs that will not be composed in this run: released with the unsent."""
        for job in jobs:
            handled.add(job.delivery_id)
            self._unsent.append(job.delivery_id)

    async def _skip_unbuildable(self, job: Job, exc: MessageError, handled: set[int]) -> None:
        log.info("delivery %d skipped: %s", job.delivery_id, exc)
        handled.add(job.delivery_id)
        row = OutcomeRow(
            job.delivery_id, Status.SKIPPED, skip_reason=exc.reason, reply=str(exc)[:500]
        )
        await self._done(row, "skip")

    # ------------------------------------------------------------ throttle and SMTP

    def _dispatch(self, job: Job, ctx: CampaignContext) -> None:
        route = (job.campaign_id, job.domain)
        send_queue = self.routes.get(route)
        if send_queue is None:
            send_queue = self.routes[route] = self._queue_for(job.domain, ctx)
        send_queue.jobs.put_nowait(job)

    def _waiting_to_send(self) -> int:
        """Rendered messages no sender has taken yet (mailer_queue_depth{stage="send"})."""
        return sum(q.jobs.qsize() for q in self.queues.values())

    def _queue_for(self, domain: str, ctx: CampaignContext) -> SendQueue:
        """The domain's queue, or the campaign's own for it when it tightens its limit."""
        limit = self.pacer.limit(domain)
        own = (
            None
            if ctx.overrides is None
            else throttle.campaign_limit(ctx.spec.id, domain, self.settings.throttle, ctx.overrides)
        )
        key = limit.key if own is None else own.key
        send_queue = self.queues.get(key)
        if send_queue is None:
            senders = (limit if own is None else own).concurrency
            send_queue = self.queues[key] = SendQueue(domain, own, senders)
            for _ in range(senders):
                self.senders.append(
                    asyncio.create_task(self._sender(send_queue), name=f"send:{key}")
                )
        return send_queue

    async def _sender(self, send_queue: SendQueue) -> None:
        """Send one queue's messages one at a time until the end marker (None)."""
        while (job := await send_queue.jobs.get()) is not None:
            try:
                await self._send(
                    send_queue.domain,
                    job,
                    self.composition.contexts[job.campaign_id],
                    send_queue.own,
                )
            except Exception as exc:
                # Only reachable before SMTP (relay.deliver never raises for SMTP or
                # network trouble): the message was not sent; retry it later.
                if unavailable(exc):
                    # Throttle tokens live in Postgres: an outage fails every message
                    # in the queue, each the same way. One line per interval.
                    self.failures.failed("deliveries deferred: database unavailable", exc)
                    reply = f"database unavailable: {type(exc).__name__}"
                else:
                    log.exception("delivery %d could not be sent; deferring it", job.delivery_id)
                    reply = "internal error"
                retry_at = self.clock() + timedelta(minutes=1)
                row = OutcomeRow(job.delivery_id, Status.DEFERRED, reply=reply, retry_at=retry_at)
                await self._done(row, "none")

    async def _send(
        self, domain: str, job: Job, ctx: CampaignContext, own: throttle.Limit | None
    ) -> None:
        composed = job.composed
        assert composed is not None
        if await self._held_back(job):
            return  # before waiting for tokens: a paused campaign's queue empties at once
        try:
            await self.pacer.acquire(domain, own)
        except WarmupExhausted as exc:
            tomorrow = datetime.combine(
                self.clock().date() + timedelta(days=1), datetime.min.time(), UTC
            )
            await self._done(
                OutcomeRow(job.delivery_id, Status.DEFERRED, reply=str(exc), retry_at=tomorrow),
                "none",
            )
            return
        if await self._held_back(job):
            return  # and again after: the wait for tokens may have been long
        relay = self.relays.pick()
        async with self.pacer.in_flight(domain):
            started = time.perf_counter()
            result = await relay.deliver(
                composed.return_path,
                job.recipient.email,
                composed.data,
                ask=functools.partial(self._ask, job),
                done=functools.partial(self._sent, job, ctx, composed),
            )
            self.metrics.send_seconds.observe(time.perf_counter() - started)
        if result is None:
            await self._not_started(job)
            return
        self.metrics.connections.set(self.relays.open_connections)
        if result.status is Status.SKIPPED:  # over the relay's SIZE: never offered
            log.info("delivery %d skipped: %s", job.delivery_id, result.reply)
            return  # recorded by _sent, as every outcome the lane reports
        if result.status is Status.DEFERRED:
            label = throttle.metric_domain(domain, self.settings.throttle)
            self.metrics.deferrals.labels(label).inc()
        if result.code is None and result.status in (Status.DEFERRED, Status.UNCERTAIN):
            what = f"SMTP relay {relay.settings.name}: connection failed"
            self.failures.failed(what, result.reply)
        # The outcome is with the recorder already (_sent): nothing here may fail it.
        try:
            await self.pacer.replied(domain, result)
        except Exception as exc:  # never raised on: the delivery's outcome is recorded
            if unavailable(exc):
                self.failures.failed("cutting a domain's rate: database unavailable", exc)
            else:
                log.exception("adapting the rate of %s to its reply failed", domain)

    def _ask(self, job: Job) -> asyncio.Future[bool]:
        """A lane is about to carry the job: ask for its start mark; True once committed."""
        go: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if self.stop.is_set():
            go.set_result(False)  # stopping: never handed to SMTP, handed back instead
            return go

        def answered(start: Start) -> None:
            job.start = start
            go.set_result(start.verdict is Verdict.GO)

        self.recorder.start(job.delivery_id, answered)
        return go

    def _sent(
        self, job: Job, ctx: CampaignContext, composed: Composed, result: Outcome | None
    ) -> None:
        """The lane's report of an SMTP transaction: its outcome goes to the recorder now."""
        if result is not None:
            row = outcome_row(job, ctx, composed, result, self.clock(), self.deadline)
            self._record(row, result.reply_class)

    async def _not_started(self, job: Job) -> None:
        """A job a lane did not hand to SMTP: skipped at the last check, lost, or handed back."""
        verdict = Verdict.NOT_STARTED if job.start is None else job.start.verdict
        reason = None if job.start is None else job.start.reason
        if verdict is Verdict.SKIPPED:
            # Final already: written by the start statement itself.
            log.info(
                "delivery %d skipped at the last check before sending: %s", job.delivery_id, reason
            )
            self.metrics.messages.labels(Status.SKIPPED, "skip").inc()
            self.progress.add(Status.SKIPPED)
            self._settled(1)
        elif verdict is Verdict.LOST:
            # Its lease lapsed (this worker was too slow) and another took it over.
            log.warning("delivery %d is no longer this worker's: not sent", job.delivery_id)
            self._settled(1)
        elif verdict is Verdict.UNAVAILABLE:
            reason = reason or "database unavailable"
            self.failures.failed("deliveries deferred: database unavailable", reason)
            retry_at = self.clock() + timedelta(minutes=1)
            row = OutcomeRow(job.delivery_id, Status.DEFERRED, reply=reason, retry_at=retry_at)
            await self._done(row, "none")
        else:
            # Its campaign was paused or cancelled (HELD), or the worker is stopping.
            self._unsent.append(job.delivery_id)
            if not self.stop.is_set():
                await self._logged(self._release_unsent(), "handing back deliveries")

    async def _held_back(self, job: Job) -> bool:
        """Hand the job back if it must not go now; True when it was."""
        if self.stop.is_set():
            # Stopping: never handed to SMTP, so it goes back to the queue rather
            # than out late.
            self._unsent.append(job.delivery_id)
            return True
        if job.campaign_id not in self._running:
            # Paused or cancelled since it was claimed: hand it back now (cancelled
            # rows get their final state there), so pause takes effect at once.
            self._unsent.append(job.delivery_id)
            await self._release_unsent()
            return True
        return False

    # ------------------------------------------------------------ record

    async def _done(self, row: OutcomeRow, reply_class: str) -> None:
        self._record(row, reply_class)

    def _record(self, row: OutcomeRow, reply_class: str) -> None:
        self.metrics.messages.labels(row.status, reply_class).inc()
        self.progress.add(row.status)
        self.recorder.record(row)

    def _settled(self, count: int) -> None:
        """`count` claimed deliveries are done with: room to claim as many."""
        self.pending -= count
        self.room.set()

    async def _release_unsent(self) -> None:
        """Messages never handed to SMTP go back to the queue (or to `skipped` if cancelled)."""
        unsent, self._unsent = self._unsent, []
        if unsent:
            try:
                released = await self.store.release_batch(unsent, self.worker)
            except BaseException:
                # Postgres unreachable: keep them for the next attempt (the shutdown
                # path tries again); lost here, they would wait for the lease to
                # lapse and become `uncertain` without ever having been sent.
                self._unsent.extend(unsent)
                raise
            self.metrics.released.inc(released)
            self._settled(len(unsent))

    async def _logged(self, step: Awaitable[None], what: str) -> None:
        """Run one step; log its failure instead of skipping the steps after it."""
        try:
            await step
        except Exception as exc:
            if unavailable(exc):
                self.failures.failed(f"{what}: database unavailable", exc)
            else:
                log.exception("%s failed", what)
