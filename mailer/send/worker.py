"""Building a worker's engine and transactional lane, and the signal rule every long-running
command follows.

The first SIGTERM/SIGINT sets the engine's stop event (stop claiming, finish
the message in hand, hand back the rest, flush, close); a second one cancels.
The lane (mailer/send/lane.py) stops with the engine.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from mailer.campaigns.store import CampaignStore
from mailer.core.settings import Settings
from mailer.core.tokens import Keyring
from mailer.db import Pool
from mailer.send.engine import Engine, Progress
from mailer.send.lane import Lane, LaneMetrics, lane_relays, split_relays
from mailer.send.smtp import Relay, Relays
from mailer.send.store import SendStore
from mailer.transactional.store import TransactionalStore

log = logging.getLogger("mailer.worker")


def build_engine(pool: Pool, settings: Settings, **kwargs: Any) -> Engine:
    """An engine on this pool with the configured relays and token keys.

    Its relays leave `transactional.connections` per relay to the lane (split_relays).
    """
    keyring = Keyring.from_spec(settings.require_token_keys())
    campaign_relays, _ = split_relays(settings)
    relays = Relays(
        [Relay(r, settings.relay_password(r), settings.helo_name(r)) for r in campaign_relays]
    )
    campaigns = CampaignStore(pool, audience_parts=settings.database.audience_parts)
    return Engine(SendStore(pool), campaigns, settings, keyring, relays, **kwargs)


def build_lane(pool: Pool, settings: Settings, engine: Engine) -> Lane:
    """The transactional lane beside `engine`: its pacer (shared limits), its metrics registry."""
    return Lane(
        TransactionalStore.for_settings(pool, settings),
        settings,
        engine.keyring,
        lane_relays(settings),
        engine.pacer,
        worker_id=engine.worker,
        stop=asyncio.Event(),
        metrics=LaneMetrics(engine.metrics.registry),
    )


async def run_with_lane(engine: Engine, lane: Lane, *, until_idle: bool = False) -> Progress:
    """The engine and its lane side by side, until stopped (or both idle, with until_idle).

    A lane that dies stops the engine (the worker must not run on without it, silently).
    """
    lane_run = asyncio.create_task(lane.run(until_idle=until_idle), name="lane")

    def lane_ended(task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.critical("the transactional lane ended (%r): stopping the worker", task.exception())
            engine.stop.set()

    lane_run.add_done_callback(lane_ended)
    try:
        progress = await engine.run(until_idle=until_idle)
    except BaseException:
        lane.stop.set()
        await asyncio.gather(lane_run, return_exceptions=True)
        raise
    if not until_idle:
        lane.stop.set()  # the engine ran until its stop: the lane stops with it
    await lane_run  # raises what killed the lane, if anything did
    return progress
