"""Shared setup for transactional-lane tests: a lane beside an engine, on the test's SMTP sink."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from mailer.core.settings import Settings
from mailer.core.tokens import Keyring
from mailer.demo.stores import Stores
from mailer.send.engine import Engine
from mailer.send.lane import Lane, LaneMetrics, lane_relays
from mailer.transactional.store import TransactionalStore
from tests.engine_setup import engine_for, settings_for

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates" / "transactional"
PARTS = {"order": "BC-1", "part": "Brake pads", "vehicle": "Toyota RAV4"}
RECALL = {"recall": "24V-123", "vehicle": "Toyota RAV4", "issue": "Airbag inflator"}


def lane_settings(port: int, **engine: float) -> Settings:
    base = settings_for(port, **engine)
    return dataclasses.replace(
        base,
        transactional=dataclasses.replace(base.transactional, poll_ms=50),
    )


def transactional_store(stores: Stores) -> TransactionalStore:
    return TransactionalStore(stores.pool, TEMPLATES)


def lane_for(
    stores: Stores, settings: Settings, engine: Engine | None = None, *, worker: str = "w1"
) -> Lane:
    engine = engine or engine_for(stores, settings)
    return Lane(
        transactional_store(stores),
        settings,
        Keyring.from_spec(settings.require_token_keys()),
        lane_relays(settings),
        engine.pacer,
        worker_id=worker,
        stop=asyncio.Event(),
        metrics=LaneMetrics(engine.metrics.registry),
    )
