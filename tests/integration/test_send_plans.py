"""The recorder's rounds read the rows they write, not every row in flight.

Each outcome round runs every ~50 ms while messages flow; its cost must follow its
batch, not the pipeline (up to `max_pending` rows claimed or started per worker).
Read from the plan Postgres executes for the store's own statement.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import asyncpg

from mailer.demo.stores import Stores
from mailer.send.store import Q
from tests.engine_setup import add_contacts, sample_campaign, start

IN_FLIGHT = 600
BATCH = 16


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


async def test_an_outcome_round_reads_its_batchs_rows_not_every_row_in_flight(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    await add_contacts(conn, IN_FLIGHT)
    campaign_id = await sample_campaign(stores)
    await conn.execute("ANALYZE")  # statistics taken with every row queued, as at a launch
    claimed = await stores.send.claim_batch(campaign_id, IN_FLIGHT, 60, "w1")
    ids = [row.id for row in claimed]
    assert len(await start(stores, "w1", ids[: IN_FLIGHT // 2])) == IN_FLIGHT // 2
    batch = ids[:BATCH]
    archive = json.dumps({"inputs": "x" * 1300})
    # EXPLAIN ANALYZE runs the statement: the round is written, as the recorder would.
    explained = await conn.fetchval(
        "EXPLAIN (ANALYZE, FORMAT JSON) " + Q("record_outcomes"),
        batch,
        ["sent"] * BATCH,
        [250] * BATCH,
        ["2.0.0 ok"] * BATCH,
        ["<m@example>"] * BATCH,
        [None] * BATCH,
        [None] * BATCH,
        [None] * BATCH,
        "w1",
        batch,
        [await conn.fetchval("SELECT template_version_id FROM campaigns")] * BATCH,
        [archive] * BATCH,
        [hashlib.sha256(b"m").digest()] * BATCH,
        [1000] * BATCH,
        [],
    )
    plan = json.loads(explained)[0]["Plan"]
    read = max(
        node["Actual Rows"] * node["Actual Loops"]
        for node in nodes(plan)
        if node.get("Relation Name") == "deliveries"
    )
    assert read <= 2 * BATCH, f"the round read {read} deliveries for {BATCH} outcomes"
    assert await conn.fetchval("SELECT count(*) FROM deliveries WHERE status = 'sent'") == BATCH
    assert await conn.fetchval("SELECT count(*) FROM archive") == BATCH
