"""The transactional lane: one-to-one notices sent ahead of campaigns, on connections of their own.

Each worker runs one `Lane` beside its campaign `Engine` (mailer/send/worker.py). The lane

- claims due transactional messages itself (FOR UPDATE SKIP LOCKED, under a lease), woken at
  once by the NOTIFY of an enqueue and otherwise every `transactional.poll_ms`, so a notice
  never waits behind a campaign's batch in the engine's pipeline;
- sends on its own SMTP connections, `transactional.connections` per relay (split_relays),
  so a campaign holding every campaign connection cannot hold a notice back;
- takes the global and per-domain throttle tokens like any message (a domain's limits are
  the domain's, whoever sends) from the buckets in Postgres, through a pacer of its own so
  that it never queues behind campaign senders, but not the warm-up cap, which paces bulk
  volume; a domain's concurrency cap holds per sender (the lane adds at most its own
  connections);
- re-checks the address just before sending (hard bounce, complaint, erasure since enqueue);
- marks each message `sending` (the start mark, also the last check) in a statement
  committed right before its MAIL FROM, as campaigns do: after a crash a claimed message
  goes back to the queue, a started one is `uncertain` and never resent on its own;
- records each outcome at once, with its archive (render inputs and the SHA-256 of the bytes
  handed to SMTP), in the delivery states campaigns use: 4xx retried with the same backoff
  and deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections import Counter as Tally
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry, Counter, Histogram

from mailer.campaigns.message import Composed, Composer
from mailer.campaigns.render import MessageError
from mailer.campaigns.template_set import TemplateSet
from mailer.core import outcome
from mailer.core.consent import Kind
from mailer.core.outcome import Outcome, Status
from mailer.core.settings import RelaySettings, Settings
from mailer.core.tokens import Keyring
from mailer.db import TRANSIENT_ERRORS, unavailable
from mailer.send.pacer import Pacer
from mailer.send.smtp import Relay, Relays
from mailer.transactional.basis import Basis, recheck
from mailer.transactional.compose import compose, composer_for
from mailer.transactional.store import Claimed, TransactionalStore
from mailer.transactional.template import TransactionalTemplate

__all__ = ["Lane", "LaneMetrics", "lane_relays", "split_relays"]

log = logging.getLogger("mailer.lane")

SWEEP_EVERY_S = 10.0
# Enqueue-to-reply latency buckets: a notice should reach the relay within a second or two.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class LaneMetrics:
    """mailer_transactional_* on the engine's registry (served with the worker's metrics)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry or CollectorRegistry()
        self.registry = r
        self.messages = Counter(
            "mailer_transactional",
            "Transactional messages by template and outcome (sent, deferred, bounced, failed, "
            "skipped, uncertain)",
            ["template", "outcome"],
            registry=r,
        )
        self.latency = Histogram(
            "mailer_transactional_latency_seconds",
            "Time from a transactional message's enqueue to the relay's reply to it",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )


def split_relays(
    settings: Settings,
) -> tuple[tuple[RelaySettings, ...], tuple[RelaySettings, ...]]:
    """(campaign relays, lane relays): `transactional.connections` per relay for the lane.

    Taken out of the relay's `connections` while that leaves campaigns at least one, else
    added: the relay then sees one more connection, never a campaign without any.
    """
    reserved = settings.transactional.connections
    campaign: list[RelaySettings] = []
    lane: list[RelaySettings] = []
    for relay in settings.all_relays():
        left = relay.connections - reserved if relay.connections > reserved else relay.connections
        campaign.append(dataclasses.replace(relay, connections=left))
        lane.append(dataclasses.replace(relay, connections=reserved))
    return tuple(campaign), tuple(lane)


def lane_relays(settings: Settings) -> Relays:
    """The lane's own relay connections."""
    _, lane = split_relays(settings)
    return Relays([Relay(r, settings.relay_password(r), settings.helo_name(r)) for r in lane])


@dataclasses.dataclass
class LaneProgress:
    by_status: Tally[str] = dataclasses.field(default_factory=Tally)


class Lane:
    """One worker's transactional lane; `run()` until the stop event (or idle)."""

    def __init__(
        self,
        store: TransactionalStore,
        settings: Settings,
        keyring: Keyring,
        relays: Relays,
        pacer: Pacer,
        *,
        worker_id: str,
        stop: asyncio.Event,
        metrics: LaneMetrics | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.settings = settings
        self.keyring = keyring
        self.relays = relays
        self.pacer = pacer
        self.worker = worker_id
        self.stop = stop
        self.metrics = metrics or LaneMetrics()
        self.clock = clock
        self.deadline = timedelta(hours=settings.engine.retry_deadline_hours)
        self.lease_s = float(settings.engine.lease_seconds)
        self.poll_s = settings.transactional.poll_ms / 1000
        self.batch = settings.transactional.batch_size
        # At most this many messages between claim and outcome: two per connection (one on
        # the wire, one composed and waiting). A crash leaves at most these `uncertain`: a
        # message claimed long before a connection is free would be uncertain for nothing.
        self.max_in_flight = max(2, 2 * relays.capacity)
        self.wake = asyncio.Event()
        self.in_flight: dict[int, asyncio.Task[None]] = {}
        self.progress = LaneProgress()
        self._composers: dict[str, Composer] = {}
        self._unstarted: set[int] = set()  # start marks Postgres did not answer
        self._last_sweep = 0.0

    async def run(self, *, until_idle: bool = False) -> LaneProgress:
        """Claim and send until stopped (until_idle: until nothing is due nor in flight)."""
        leases = asyncio.create_task(self._renew_leases(), name="lane-leases")
        listening = contextlib.AsyncExitStack()
        try:
            try:
                await listening.enter_async_context(self.store.notifications(self.wake.set))
            except TRANSIENT_ERRORS as exc:  # Postgres away at start: polling still works
                log.warning("lane: no NOTIFY wake-ups (%s); polling every %.2f s", exc, self.poll_s)
            await self._claimer(until_idle)
        finally:
            leases.cancel()
            # Messages in hand finish (a notice is one SMTP transaction): their outcomes
            # must reach the table, whatever stops us.
            if self.in_flight:
                await asyncio.gather(*self.in_flight.values(), return_exceptions=True)
            with contextlib.suppress(Exception):
                await listening.aclose()
            await self.relays.close()
        return self.progress

    async def _claimer(self, until_idle: bool) -> None:
        failures = 0
        while not self.stop.is_set():
            # Cleared before looking: a wake-up (an enqueue, a finished message) that comes
            # while the claim runs is kept for the wait below, never lost.
            self.wake.clear()
            try:
                claimed = await self._claim_round()
                failures = 0
            except TRANSIENT_ERRORS as exc:
                failures += 1
                delay = min(30.0, 0.5 * 2**failures)
                if not unavailable(exc):
                    log.exception("lane: claiming failed; retrying in %.1f s", delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), delay)
                continue
            if claimed:
                continue
            if until_idle and not self.in_flight:
                return
            waits = [
                asyncio.ensure_future(self.wake.wait()),
                asyncio.ensure_future(self.stop.wait()),
            ]
            await asyncio.wait(waits, timeout=self.poll_s, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waits:
                waiter.cancel()

    async def _claim_round(self) -> int:
        if time.monotonic() - self._last_sweep > SWEEP_EVERY_S:
            self._last_sweep = time.monotonic()
            swept = await self.store.sweep_leases()
            if swept:
                log.warning("%d transactional messages were in flight in a dead worker: "
                            "now uncertain (not resent)", swept)  # fmt: skip
        room = self.max_in_flight - len(self.in_flight)
        if room <= 0:
            return 0
        rows = await self.store.claim(min(room, self.batch), self.lease_s, self.worker)
        for message in rows:
            task = asyncio.create_task(self._deliver(message), name=f"transactional-{message.id}")
            self.in_flight[message.id] = task
            task.add_done_callback(self._forget)
        return len(rows)

    def _forget(self, task: asyncio.Task[None]) -> None:
        message_id = int(task.get_name().rpartition("-")[2])
        self.in_flight.pop(message_id, None)
        self.wake.set()  # room again: claim the next due message now, not at the next poll

    async def _renew_leases(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            with contextlib.suppress(*TRANSIENT_ERRORS):
                await self.store.renew_leases(list(self.in_flight), self.lease_s, self.worker)

    # ------------------------------------------------------------ one message

    async def _deliver(self, message: Claimed) -> None:
        try:
            await self._send(message)
        except Exception as exc:
            # Only reachable before SMTP (relay.deliver never raises for SMTP trouble): retry.
            if not unavailable(exc):
                log.exception("transactional message %d could not be sent; deferring", message.id)
            reply = f"internal error: {type(exc).__name__}"
            if unavailable(exc):
                reply = f"database unavailable: {type(exc).__name__}"
            # In a minute, with the same deadline as any deferral: a message that can never be
            # built fails in the end instead of coming back forever.
            now = self.clock()
            result, retry_at = outcome.after_deferral(
                Outcome(Status.DEFERRED, None, reply),
                attempt=max(1, message.attempts),
                first_try=message.first_attempt_at or message.enqueued_at,
                now=now,
                deadline=self.deadline,
            )
            if retry_at is not None:
                retry_at = now + timedelta(minutes=1)
            with contextlib.suppress(*TRANSIENT_ERRORS):
                await asyncio.shield(self._record(message, result, retry_at=retry_at))

    async def _send(self, message: Claimed) -> None:
        basis = Basis(message.basis)
        decision = recheck(
            basis,
            erased=message.erased,
            suppressions=message.suppressions,
            channel_enabled=message.email_enabled,
        )
        if not decision.allowed:
            skipped = Outcome(
                Status.SKIPPED, None, decision.detail, skip_reason=str(decision.refused)
            )
            await asyncio.shield(
                self._record(message, skipped, refusal=f"{decision.refused}: {decision.detail}")
            )
            return
        now = self.clock()
        try:
            composed = self._compose(message, now)
        except MessageError as exc:
            skipped = Outcome(Status.SKIPPED, None, str(exc)[:500], skip_reason=exc.reason)
            await asyncio.shield(self._record(message, skipped))
            return
        if self.stop.is_set():
            await asyncio.shield(self.store.release([message.id], self.worker))
            return
        await self.pacer.acquire(message.domain, exempt=True)
        relay = self.relays.pick()
        started = self.clock()
        async with self.pacer.in_flight(message.domain):
            # The start mark (and last check) is committed before MAIL FROM, while the
            # connection still carries the message before it (mailer/send/smtp.py).
            result = await relay.deliver(
                composed.return_path,
                message.email,
                composed.data,
                ask=lambda: asyncio.ensure_future(self._start(message.id)),
            )
        if result is None and message.id in self._unstarted:
            # Postgres did not answer the start: nothing was sent; due again (or, if it is
            # still away, the sweep hands it back once its lease lapses).
            self._unstarted.discard(message.id)
            with contextlib.suppress(*TRANSIENT_ERRORS):
                await asyncio.shield(self.store.release([message.id], self.worker))
            return
        if result is None:
            why = "refused at the last check before MAIL FROM (erased, bounced or opted out)"
            skipped = Outcome(Status.SKIPPED, None, why, skip_reason="last_check")
            await asyncio.shield(self._record(message, skipped, refusal=f"last_check: {why}"))
            return
        if result.code is not None:
            waited = (datetime.now(UTC) - message.enqueued_at).total_seconds()
            self.metrics.latency.observe(max(0.0, waited))
        retry_at = None
        if result.status is Status.DEFERRED:
            result, retry_at = outcome.after_deferral(
                result,
                attempt=message.attempts + 1,  # counting this one (the start mark did)
                first_try=message.first_attempt_at or started,
                now=self.clock(),
                deadline=self.deadline,
            )
        # The outcome first: nothing after it may fail the message it reports.
        await asyncio.shield(self._record(message, result, composed=composed, retry_at=retry_at))
        with contextlib.suppress(Exception):
            await self.pacer.replied(message.domain, result)

    async def _start(self, message_id: int) -> bool:
        """The start mark; False (never sent) when refused or when Postgres is unreachable.

        Never raises: the SMTP connection's task awaits this answer (mailer/send/smtp.py).
        """
        try:
            return await self.store.start_sending(message_id, self.worker)
        except Exception as exc:
            if not unavailable(exc):
                log.exception("transactional message %d: the start mark failed", message_id)
            self._unstarted.add(message_id)
            return False

    def _compose(self, message: Claimed, now: datetime) -> Composed:
        # One Composer per template version and definition (compiled once, reused).
        key = json.dumps([message.template, message.definition, message.files], sort_keys=True)
        composer = self._composers.get(key)
        if composer is None:
            template = TransactionalTemplate.from_json(
                message.template,
                message.definition,
                TemplateSet(message.template, dict(message.files)),
            )
            composer = self._composers[key] = composer_for(template, self.keyring, self.settings)
        consent = None
        if message.consent is not None:
            kind, source, obtained, date_only = message.consent
            consent = (Kind(kind), source, obtained, date_only)
        return compose(
            composer,
            message_id=message.id,
            email=message.email,
            name=message.name,
            locale=message.locale,
            data=message.data,
            tracking=message.tracking,
            consent=consent,
            now=now,
        )

    async def _record(
        self,
        message: Claimed,
        result: Outcome,
        *,
        composed: Composed | None = None,
        retry_at: datetime | None = None,
        refusal: str | None = None,
    ) -> None:
        archive = None if composed is None else composed.archive
        written = await self.store.record_outcome(
            message.id,
            self.worker,
            result.status.value,
            code=result.code,
            reply=result.reply,
            skip_reason=result.skip_reason,
            retry_at=retry_at,
            smtp_message_id=None if archive is None else archive["envelope"]["message_id"],
            archive=archive,
            sha256=None if composed is None else bytes.fromhex(composed.sha256),
            size=None if composed is None else len(composed.data),
            refusal=refusal,
            hard_bounce=result.hard_bounce,
        )
        if written:
            self.metrics.messages.labels(message.template, result.status.value).inc()
            self.progress.by_status[result.status.value] += 1
