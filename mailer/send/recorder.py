"""The recorder: start marks and outcomes, each group-committed by its own writer.

A message is `sending` in the ledger (started) before its MAIL FROM, and only
then (issue 15): after a crash, only started rows can have reached SMTP, so
only they become `uncertain`; rows claimed but never started go back to the
queue. Each SMTP connection asks for the starts of the next messages while it
carries the current one (mailer/send/smtp.py), and the start writer commits
every start asked since its last round in one statement: one commit for all
the connections of the worker, every millisecond or so while messages flow, as
Postgres itself group-commits. Outcomes (with their archive rows and
suppressions) are written by a second writer on a connection of its own, in
batches of up to FLUSH_ROWS at least every FLUSH_EVERY_S: off the path of the
next MAIL FROM. Measured (bench/README.md, "Send"): a round was mostly its
commit's WAL flush (~5 ms on the benchmark machine under load), so start
rounds commit without waiting for it (send.sql: start_writer_session; a
crash of the server itself is covered by the sweep); a round that also
carried the outcomes and their archive rows took longer still, and lanes
waited on it for most of their starts.

The bound this gives (README.md, "What a crash leaves uncertain"): while a
connection carries message k it has asked for the starts of at most
`engine.starts_ahead` (A) messages after it. A kill leaves `uncertain` the
started rows without a written outcome: at most A per connection never had
their MAIL FROM written, one per connection was on the wire, and the others
had their outcome (known: they were handed to the relay) waiting for the
outcome writer, i.e. they were answered at most FLUSH_EVERY_S plus one write
before the kill, and there are at most FLUSH_ROWS (+ one write's worth) of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from mailer.db import TRANSIENT_ERRORS, unavailable
from mailer.send.failure_log import FailureLog
from mailer.send.store import OutcomeRow, SendStore

log = logging.getLogger("mailer.recorder")

# Outcomes are written at least this often, or when this many wait: what a kill leaves
# uncertain among messages the relay did take is what waited here.
FLUSH_EVERY_S = 0.05
FLUSH_ROWS = 500
# Starts wait at most this long for others to join their round, and at most this many
# make one round; a connection that needs a start not yet written ends the wait (hurry).
GATHER_S = 0.05
GATHER_MAX = 64
# A writer gives its connection back to the pool once idle this long, not at its first idle
# moment: while messages flow each writer is idle between nearly every two rounds, and
# giving the connection back each time cost a round trip for the pool's reset (four
# statements) and, for the start writer, its session statement again on the next round
# (per 20,000 messages ~2,500 of those statements and twice as many resets; py-spy: ~10 % of a
# worker's busy CPU in all, bench/README.md, "Send", session 8). Rounds._fetch still gives
# it back at once when the pool has no other connection free.
KEEP_IDLE_S = 0.2


class Verdict(enum.Enum):
    """What became of a start asked for."""

    GO = "go"  # `sending`, durably: the message may be handed to SMTP
    SKIPPED = "skipped"  # the last check refused it (opt-out, suppression, erasure)
    HELD = "held"  # its campaign no longer runs: still claimed, to be handed back
    LOST = "lost"  # no longer this worker's (its lease lapsed): never to be sent
    UNAVAILABLE = "unavailable"  # the round failed (database unreachable): not started
    NOT_STARTED = "not_started"  # the recorder stopped before writing it: hand it back


@dataclass(frozen=True, slots=True)
class Start:
    """The answer to one start: its verdict, and the reason when skipped or unavailable."""

    verdict: Verdict
    reason: str | None = None


class Recorder:
    """Writes start marks and outcomes for one worker, each by a writer of its own."""

    def __init__(
        self,
        store: SendStore,
        worker: str,
        failures: FailureLog,
        written: Callable[[int], None],
    ) -> None:
        self.start_rounds = store.start_rounds()  # the start writer's connection
        self.outcome_rounds = store.rounds()  # the outcome writer's
        self.worker = worker
        self.failures = failures
        # Called with the number of outcomes each round wrote (the engine's room to claim).
        self.written = written
        self.outcomes: list[OutcomeRow] = []
        # Starts asked for, each with what to call with its answer.
        self.starts: dict[int, Callable[[Start], None]] = {}
        # The round being written: kept until written, so a recorder that died
        # mid-write leaves its outcomes to its replacement instead of losing them.
        self.in_write: list[OutcomeRow] = []
        self._wake = asyncio.Event()  # starts asked for (or closing)
        self._flush = asyncio.Event()  # outcomes to write: the first, or a full batch
        self._closing = False
        self._ended = False  # run() returned or died: nobody would answer a start
        self._nudge = asyncio.Event()  # a start's wait can end: hurried, full or closing
        self._hurried = False
        self._first_start = 0.0  # when the oldest start asked for was (monotonic)
        self.count = 0  # start rounds written
        self._outcomes_at = 0.0  # when the outcome writer last wrote (monotonic)
        self.started = 0

    def record(self, row: OutcomeRow) -> None:
        """Queue an outcome; written with the next batch."""
        self.outcomes.append(row)
        if len(self.outcomes) in (1, FLUSH_ROWS):  # the first starts the clock, the last ends it
            self._flush.set()

    def start(self, delivery_id: int, answered: Callable[[Start], None]) -> None:
        """Ask for a delivery's start mark; `answered` is called once the round is committed.

        A callback rather than a future: the lane waiting for it resumes one turn of
        the event loop sooner (measured: lanes waited on 44 % of their starts).
        """
        if self._closing or self._ended:
            answered(Start(Verdict.NOT_STARTED))
            return
        if not self.starts:
            self._first_start = time.monotonic()
        self.starts[delivery_id] = answered
        self._wake.set()
        if len(self.starts) >= GATHER_MAX:
            self._nudge.set()

    def hurry(self) -> None:
        """A connection waits for a start: write the round now, gather no more."""
        self._hurried = True
        self._nudge.set()

    def depth(self) -> int:
        """Outcomes not yet written (mailer_queue_depth{stage="record"})."""
        return len(self.outcomes) + len(self.in_write)

    def close(self) -> None:
        """Write what is queued, then end; starts asked from now on are not made."""
        self._closing = True
        self._wake.set()
        self._flush.set()
        self._nudge.set()

    async def run(self) -> None:
        """Write starts and outcomes until closed and empty; unanswered starts are answered."""
        self._ended = False
        try:
            async with asyncio.TaskGroup() as writers:  # one dying ends (and fails) both
                writers.create_task(self._write_outcomes(), name="recorder outcomes")
                writers.create_task(self._write_starts(), name="recorder starts")
        except BaseExceptionGroup as group:
            raise group.exceptions[0] from None  # what died, as the engine's watcher names it
        finally:
            # A recorder that ends (closed, or died) leaves no connection waiting.
            self._ended = True
            unanswered, self.starts = self.starts, {}
            for answered in unanswered.values():
                answered(Start(Verdict.NOT_STARTED))
            for rounds in (self.start_rounds, self.outcome_rounds):
                with contextlib.suppress(Exception):  # a broken connection is the pool's to drop
                    await rounds.close()

    async def _write_starts(self) -> None:
        while True:
            if not self.starts:
                if self._closing:
                    return
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), KEEP_IDLE_S)
                if not self._wake.is_set():
                    with contextlib.suppress(*TRANSIENT_ERRORS):
                        await self.start_rounds.close()  # idle: its connection back to the pool
                    await self._wake.wait()
                continue
            await self._gather()
            await self._start_round()

    async def _write_outcomes(self) -> None:
        if self.in_write:  # left by a recorder that died mid-write (rewriting is harmless)
            await self._outcomes_only(self.in_write)
            self.in_write = []
        while True:
            if not self.outcomes:
                # Closing: done once the start writer is (its skips and refusals are
                # written by it; outcomes of messages still on the wire come here).
                if self._closing and not self.starts:
                    return
                self._flush.clear()
                if time.monotonic() - self._outcomes_at >= KEEP_IDLE_S:
                    with contextlib.suppress(*TRANSIENT_ERRORS):
                        await self.outcome_rounds.close()  # idle: back to the pool
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._flush.wait(), FLUSH_EVERY_S)
                continue
            if len(self.outcomes) < FLUSH_ROWS and not self._closing:
                # Let a batch gather (one statement, not many).
                self._flush.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._flush.wait(), FLUSH_EVERY_S)
            outcomes, self.outcomes = self.outcomes, []
            self.in_write = outcomes
            await self._outcomes_only(outcomes)
            self._outcomes_at = time.monotonic()
            self.in_write = []
            self.written(len(outcomes))

    async def _gather(self) -> None:
        """Let more starts join this round while no connection waits for one.

        Each round costs a commit (measured here: ~0.3 ms of Postgres CPU for the
        WAL flush, ~1 ms in all for a round of four starts, against ~0.05 ms a
        start), and the connections asked for these starts a message ahead: until
        one of them has to wait (hurry), a few milliseconds more cost nothing.
        """
        deadline = self._first_start + GATHER_S
        while not self._hurried and not self._closing and len(self.starts) < GATHER_MAX:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._nudge.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._nudge.wait(), remaining)
        self._hurried = False

    async def _start_round(self) -> None:
        """One statement, one commit: every start asked since the last round."""
        starts, self.starts = self.starts, {}
        try:
            rows = await self.start_rounds.start(self.worker, list(starts))
        except TRANSIENT_ERRORS as exc:
            # Not started (or started and never used: a commit lost with the connection):
            # the engine defers those messages.
            reason = f"database unavailable: {type(exc).__name__}"
            for answered in starts.values():
                answered(Start(Verdict.UNAVAILABLE, reason))
            self._failed(exc, len(starts))
            return
        except BaseException:
            for answered in starts.values():
                answered(Start(Verdict.NOT_STARTED))
            raise
        self.count += 1
        answers = {r.id: r for r in rows}
        for delivery_id, answered in starts.items():
            row = answers.get(delivery_id)
            if row is None:
                answered(Start(Verdict.LOST))
            elif row.status == "sending":
                self.started += 1
                answered(Start(Verdict.GO))
            elif row.status == "skipped":
                answered(Start(Verdict.SKIPPED, row.skip_reason))
            else:
                answered(Start(Verdict.HELD))

    async def _outcomes_only(self, outcomes: list[OutcomeRow]) -> None:
        """Write outcomes until it works: they are known facts (a sent message is sent)."""
        attempt = 0
        while outcomes:
            try:
                await self.outcome_rounds.record(self.worker, outcomes)
                return
            except TRANSIENT_ERRORS as exc:
                # The rows stay `sending` (or become `uncertain`, which a later write
                # still replaces); the lease renewer keeps them ours meanwhile.
                attempt += 1
                self._failed(exc, len(outcomes))
                await asyncio.sleep(min(10.0, 0.5 * 2**attempt))

    def _failed(self, exc: BaseException, count: int) -> None:
        if unavailable(exc):
            self.failures.failed("recording outcomes: database unavailable", exc)
        else:
            log.exception("recording %d outcomes and starts failed", count)
