"""The console's upkeep: one task per console process, watched (`mailer console serve` stops
with exit status 1 if it dies, rather than leaving uploads unleased and rejects kept).

Every RENEW_S seconds it renews the lease of each upload this process is importing, marks
`interrupted` the uploads whose process stopped renewing theirs (killed, crashed: their
import's one transaction died with it), and hourly drops rejects files past their 30 days
(console.sql: uploads_rejects_expire), which otherwise happened only when an upload began.
A database outage is waited out (logged, retried next round); any other error is a bug and
ends the task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from mailer.db import unavailable

if TYPE_CHECKING:
    from mailer.console.uploads import Uploads

log = logging.getLogger(__name__)

# An upload's lease (console_uploads.lease_until): renewed while this process imports it;
# once it runs out, the upload is `interrupted`.
LEASE_S = 60.0
RENEW_S = LEASE_S / 4  # three renewals may fail (a slow database) before a lease runs out
REJECTS_EVERY_S = 3600.0


async def upkeep(uploads: Uploads, stop: asyncio.Event) -> None:
    """Leases, interrupted uploads and rejects retention, every RENEW_S until `stop`."""
    store = uploads.console.accounts
    rejects_due = 0.0
    while not stop.is_set():
        try:
            # Own leases first: a live import of this process is never swept below.
            if uploads.tasks:
                await store.upload_leases_renew(list(uploads.tasks), LEASE_S)
            for upload_id in await store.uploads_interrupted():
                log.warning("upload %d: its console process stopped; marked interrupted", upload_id)
            if time.monotonic() >= rejects_due:
                dropped = await store.uploads_rejects_expire()
                if dropped:
                    log.info("dropped %d rejects files past their 30 days", dropped)
                rejects_due = time.monotonic() + REJECTS_EVERY_S
        except Exception as exc:
            if not unavailable(exc):
                raise
            log.warning("console upkeep: database unavailable (%s), retried", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), RENEW_S)
