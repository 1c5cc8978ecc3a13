"""Leases: a worker renews the leases of the rows it holds, and sweeps those of dead workers.

A claimed row is leased to its worker (`engine.lease_seconds`); while the worker lives it
renews them every third of that. Rows whose lease lapsed belong to a worker that died:
claimed ones go back to the queue, started ones become `uncertain` (send.sql: sweep_leases).
"""

from __future__ import annotations

import asyncio
import logging

from mailer.db import TRANSIENT_ERRORS, unavailable
from mailer.send.failure_log import FailureLog
from mailer.send.metrics import EngineMetrics
from mailer.send.store import SendStore

log = logging.getLogger("mailer.engine")


async def sweep(store: SendStore, metrics: EngineMetrics) -> None:
    """Hand dead workers' rows back (or make them uncertain), and say so."""
    swept = await store.sweep_leases()
    if swept.requeued:
        metrics.requeued.inc(swept.requeued)
        log.info(
            "%d deliveries claimed by a dead worker, never started: queued again", swept.requeued
        )
    if swept.uncertain:
        metrics.uncertain.inc(swept.uncertain)
        log.warning(
            "%d deliveries were started by a dead worker, or claimed before a crash of the "
            "database server (their MAIL FROM may have left): now uncertain",
            swept.uncertain,
        )


async def renew(store: SendStore, worker: str, lease_s: float, failures: FailureLog) -> None:
    """Renew this worker's leases every third of their length, until cancelled."""
    while True:
        await asyncio.sleep(lease_s / 3)
        try:
            await store.renew_leases(worker, lease_s)
        except TRANSIENT_ERRORS as exc:
            if not unavailable(exc):
                log.exception("renewing leases failed")
            else:
                failures.failed("renewing leases: database unavailable", exc)
