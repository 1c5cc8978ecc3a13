"""Building a worker's engine, and the signal rule every long-running command follows.

The first SIGTERM/SIGINT sets the engine's stop event (stop claiming, finish
the message in hand, hand back the rest, flush, close); a second one cancels.
"""

from __future__ import annotations

from typing import Any

from mailer.campaigns.store import CampaignStore
from mailer.core.settings import Settings
from mailer.core.tokens import Keyring
from mailer.db import Pool
from mailer.send.engine import Engine
from mailer.send.smtp import Relay, Relays
from mailer.send.store import SendStore


def build_engine(pool: Pool, settings: Settings, **kwargs: Any) -> Engine:
    """An engine on this pool with the configured relays and token keys."""
    keyring = Keyring.from_spec(settings.require_token_keys())
    relays = Relays(
        [Relay(r, settings.relay_password(r), settings.helo_name(r)) for r in settings.all_relays()]
    )
    campaigns = CampaignStore(pool, audience_parts=settings.database.audience_parts)
    return Engine(SendStore(pool), campaigns, settings, keyring, relays, **kwargs)
