"""Uncertain deliveries, as the operator meets them: status and report explain them,
resend-uncertain says how many it would resend and what that risks before it acts."""

from __future__ import annotations

import asyncpg
import pytest

from mailer.demo.stores import Stores
from mailer.report import figures
from mailer.report.sections import sections
from tests.cli_run import run_cli
from tests.engine_setup import add_contacts, sample_campaign, start


async def crashed_campaign(stores: Stores, conn: asyncpg.Connection) -> str:
    """A campaign whose worker died with three messages started: they are uncertain."""
    await add_contacts(conn, 5)
    campaign = await sample_campaign(stores)
    claimed = await stores.send.claim_batch(campaign, 10, 60, "dead")
    await start(stores, "dead", [r.id for r in claimed[:3]])
    await conn.execute("UPDATE deliveries SET lease_until = now() - interval '1 second'")
    await stores.send.sweep_leases()
    return str(await conn.fetchval("SELECT slug FROM campaigns"))


async def test_resend_uncertain_says_how_many_and_that_some_may_arrive_twice_and_waits_for_yes(
    stores: Stores, conn: asyncpg.Connection, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    slug = await crashed_campaign(stores, conn)

    code, shown = await run_cli(monkeypatch, db_url, "campaign", "resend-uncertain", slug)
    shown = " ".join(shown.split())  # the explanation wraps
    assert code == 1
    assert "3 uncertain" in shown
    assert "may or may not have been delivered" in shown
    assert "would arrive twice" in shown
    assert "--yes" in shown
    assert await conn.fetchval("SELECT count(*) FROM deliveries WHERE status = 'uncertain'") == 3

    code, shown = await run_cli(monkeypatch, db_url, "campaign", "resend-uncertain", slug, "--yes")
    assert code == 0
    assert "3 uncertain deliveries queued again" in shown
    assert await conn.fetchval("SELECT count(*) FROM deliveries WHERE status = 'queued'") == 5
    # Who chose to risk duplicates, when: the operator log (the refusal above wrote nothing).
    logged = await conn.fetch(
        "SELECT actor_kind, action, object_id, detail->>'resent' AS resent FROM operator_log"
    )
    assert [tuple(r) for r in logged] == [("cli", "campaign.resend_uncertain", slug, "3")]


async def test_status_and_report_show_uncertain_rows_with_what_they_mean(
    stores: Stores, conn: asyncpg.Connection, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    slug = await crashed_campaign(stores, conn)

    code, shown = await run_cli(monkeypatch, db_url, "campaign", "status", slug)
    shown = " ".join(shown.split())  # the explanation wraps
    assert code == 0
    assert "uncertain" in shown
    assert "3 uncertain: a worker died after handing these messages to the SMTP relay" in shown
    assert f"mailer campaign resend-uncertain {slug}" in shown

    campaign_id = await conn.fetchval("SELECT id FROM campaigns")
    found = await figures.figures(stores.report, campaign_id)
    assert found.outcomes["uncertain"] == 3
    assert found.outcomes["queued"] == 2  # the claimed rows of the dead worker, queued again
    notes = next(s for s in sections(found) if s.key == "deliveries").notes
    assert any("3 uncertain" in note and "arrive twice" in note for note in notes)
