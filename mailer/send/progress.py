"""A send's progress bar in the terminal, read from the delivery ledger."""

from __future__ import annotations

import asyncio
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from mailer.campaigns.store import CampaignStore

# The states a delivery ends in: done, as far as the bar is concerned.
FINAL = ("sent", "bounced", "failed", "skipped", "uncertain")


async def watch_progress(
    store: CampaignStore, campaign_id: int, run: asyncio.Task[Any], console: Console
) -> None:
    """Redraw the bar from the ledger every half second until `run` (the engine) ends."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("sending", total=None, detail="")
        while True:
            finished = run.done()
            counts = await store.campaign_status_counts(campaign_id)
            total = sum(counts.values())
            done = sum(counts.get(s, 0) for s in FINAL)
            detail = "  ".join(
                f"{s} {counts.get(s, 0):,}"
                for s in ("sent", "deferred", "bounced", "skipped")
                if counts.get(s)
            )
            bar.update(task, total=total, completed=done, detail=detail)
            if finished:
                return
            await asyncio.wait({run}, timeout=0.5)
