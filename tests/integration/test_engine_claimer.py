"""The claimer's reads of the running campaigns: bounded by time, not by outcome rounds.

Counted through the engine's real store (a subclass that notes each call), against
Postgres and the in-process SMTP sink: nothing is mocked.
"""

from __future__ import annotations

import time

import asyncpg

from mailer.demo.stores import Stores
from mailer.send.engine import RUNNING_EVERY_S, SWEEP_EVERY_S
from mailer.send.store import Claimed, SendStore
from tests.engine_setup import add_contacts, engine_for, sample_campaign, settings_for
from tests.smtp_servers import smtp_server


class CountingStore(SendStore):
    """The engine's store, noting when the running campaigns are read and claims made."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self.reads: list[float] = []
        self.claims = 0

    async def running_campaigns(self) -> list[int]:
        self.reads.append(time.monotonic())
        return await super().running_campaigns()

    async def claim_batch(
        self, campaign_id: int, limit: int, lease_seconds: float, worker: str
    ) -> list[Claimed]:
        self.claims += 1
        return await super().claim_batch(campaign_id, limit, lease_seconds, worker)


async def test_the_running_campaigns_are_read_at_a_bounded_rate_not_after_every_outcome_round(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    await add_contacts(conn, 400, domains=("a.example", "b.example"))
    await sample_campaign(stores)
    counting = CountingStore(stores.pool)
    with smtp_server() as (port, sink):
        # Small batches: many claims, and an outcome round frees room for one every time,
        # which is where the claimer used to read the running campaigns again each time.
        engine = engine_for(stores._replace(send=counting), settings_for(port, batch_size=10))
        started = time.monotonic()
        progress = await engine.run(until_idle=True)
        elapsed = time.monotonic() - started
    assert progress.by_status == {"sent": 400}
    assert len(sink.recipients) == 400
    # One read per RUNNING_EVERY_S at most, plus the first and the fresh one that decides
    # the end of an until_idle run; claims go on between reads from the list read last.
    assert len(counting.reads) <= 3 + elapsed / RUNNING_EVERY_S, (
        f"{len(counting.reads)} reads for {counting.claims} claims in {elapsed:.2f} s"
    )
    gaps = [b - a for a, b in zip(counting.reads, counting.reads[1:], strict=False)]
    # Closer reads: the end's fresh one, and a lease sweep's (every SWEEP_EVERY_S).
    assert sum(gap < RUNNING_EVERY_S for gap in gaps) <= 1 + elapsed // SWEEP_EVERY_S
    assert counting.claims > len(counting.reads)
