"""A worker whose recorder or lease renewer dies stops cleanly instead of stalling."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from mailer.demo.stores import Stores
from mailer.send.engine import SideTaskDied
from tests.engine_setup import add_contacts, engine_for, sample_campaign, settings_for
from tests.smtp_servers import Faults, smtp_server, wait_until


def side_task(name: str) -> asyncio.Task[object]:
    return next(t for t in asyncio.all_tasks() if t.get_name() == name)


@pytest.mark.parametrize("victim", ["recorder", "leases"])
async def test_a_dead_side_task_stops_the_worker_with_every_row_recorded_or_handed_back(
    stores: Stores, conn: asyncpg.Connection, victim: str
) -> None:
    await add_contacts(conn, 300)
    await sample_campaign(stores)
    with smtp_server(Faults(delay_s=0.01)) as (port, sink):
        engine = engine_for(stores, settings_for(port, batch_size=50))
        run = asyncio.create_task(engine.run())
        await wait_until(lambda: len(sink.recipients) >= 20)
        side_task(victim).cancel()  # dies while the worker runs
        with pytest.raises(SideTaskDied, match=f"{victim} task ended"):
            await asyncio.wait_for(run, 60)
        received = set(sink.recipients)
    rows = {
        r["status"]: r["n"]
        for r in await conn.fetch("SELECT status, count(*) AS n FROM deliveries GROUP BY status")
    }
    # Nothing left in `sending` to lapse into `uncertain`: each row is sent or back in the queue.
    assert set(rows) <= {"sent", "queued"}, rows
    sent = {
        r["email"]
        for r in await conn.fetch(
            "SELECT c.email FROM deliveries d JOIN contacts c ON c.id = d.contact_id "
            "WHERE d.status = 'sent'"
        )
    }
    assert sent == received  # every message the sink took is recorded, no other
    assert rows.get("queued", 0) == 300 - len(received) > 0
