"""Where a click goes: registered links and recent deliveries in memory, Postgres for the rest.

Links never change once registered, so they are cached by id; a delivery's campaign and send
time do not change once it is sent. A click whose link and delivery are both known costs no
query, and while Postgres cannot answer (#13 item 7) a click on a known link still redirects:
only a link never seen answers 503.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import UTC, datetime
from typing import Generic, TypeVar

from mailer.core.tokens import Token
from tracker.metrics import Metrics
from tracker.rows import Link, SentDelivery
from tracker.store import TrackerStore, Unavailable

# A campaign has tens of links, so this holds hundreds of campaigns' worth (~200 bytes each).
LINK_CACHE_SIZE = 10_000
# The recipients clicking lately: a scanner's click and then the person's cost one query.
DELIVERY_CACHE_SIZE = 50_000

V = TypeVar("V")


class _Lru(Generic[V]):
    """A bounded least-recently-used map from ids (of links, of deliveries)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[int, V] = OrderedDict()

    def get(self, key: int) -> V | None:
        found = self._items.get(key)
        if found is not None:
            self._items.move_to_end(key)
        return found

    def put(self, key: int, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        if len(self._items) > self._size:
            self._items.popitem(last=False)


class ClickTargets:
    """The URL a verified click token leads to, and when its message was sent."""

    def __init__(self, store: TrackerStore, metrics: Metrics) -> None:
        self._store = store
        self._metrics = metrics
        self._links: _Lru[Link] = _Lru(LINK_CACHE_SIZE)
        self._deliveries: _Lru[SentDelivery] = _Lru(DELIVERY_CACHE_SIZE)

    async def target(self, token: Token) -> tuple[str, datetime | None] | None:
        """The registered URL and the delivery's send time; None if they do not belong together.

        Raises Unavailable only for a link not in memory while Postgres cannot answer. For a
        known link it redirects anyway: only we sign tokens, and we sign a link only into
        messages of its own campaign, so the MAC vouches for the pair; the token's signing
        time (when the message was composed) stands in for the send time.
        """
        link_id = token.link_id
        assert link_id is not None  # a verified click token always has one
        link = self._links.get(link_id)
        sent = self._deliveries.get(token.delivery_id)
        if link is None or sent is None:
            try:
                found_link, sent = await self._store.click_target(token.delivery_id, link_id)
            except Unavailable:
                if link is None:
                    raise
                self._metrics.database_unavailable.labels("click", "served_from_cache").inc()
                return link.url, datetime.fromtimestamp(token.issued_at, UTC)
            if found_link is None or sent is None:
                return None
            link = found_link
            self._links.put(link_id, link)
            if sent.sent_at is not None:  # not marked sent yet: a click racing the send's commit
                self._deliveries.put(token.delivery_id, sent)
        if link.campaign_id != sent.campaign_id:
            return None
        return link.url, sent.sent_at
