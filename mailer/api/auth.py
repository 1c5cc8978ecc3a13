"""Bearer keys, scopes and the per-key rate limit.

Every check happens before the handler runs, so a refused request (401, 403, 429) has
written nothing. Keys are looked up on every request (by prefix, then a constant-time
hash comparison): a revoked key is refused from the next request on.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from mailer.api.keys import ApiKey, matches, parse_key
from mailer.api.problems import Problem
from mailer.api.store import ApiStore


async def authenticate(store: ApiStore, header: str | None) -> ApiKey:
    """The key an `Authorization: Bearer …` header presents, or a 401 Problem."""
    challenge = {"WWW-Authenticate": 'Bearer realm="mailer"'}
    scheme, _, text = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not text.strip():
        raise Problem(401, "an `Authorization: Bearer <key>` header is required", headers=challenge)
    text = text.strip()
    prefix = parse_key(text)
    key = await store.key_by_prefix(prefix) if prefix else None
    if key is None or not matches(text, key.secret_hash):
        raise Problem(401, "unknown API key", headers=challenge)
    state = key.state(datetime.now(UTC))
    if state != "active":
        raise Problem(401, f"API key {key.prefix} is {state}", headers=challenge)
    return key


def require(key: ApiKey, scope: str) -> None:
    """403 unless the key holds `scope`."""
    if scope not in key.scopes:
        raise Problem(403, f"API key {key.prefix} lacks the scope {scope}")


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class RateLimiter:
    """A token bucket per key, in this process (a few processes behind a proxy each allow
    `rate` per key: size api.rate_per_key for one)."""

    rate: float
    burst: int
    _buckets: dict[int, _Bucket] = field(default_factory=dict)

    def take(self, key_id: int) -> None:
        """Spend one token or raise 429 with the seconds until the next one (Retry-After)."""
        now = time.monotonic()
        bucket = self._buckets.setdefault(key_id, _Bucket(float(self.burst), now))
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if bucket.tokens < 1:
            wait = max(1, math.ceil((1 - bucket.tokens) / self.rate))
            raise Problem(
                429,
                f"rate limit of {self.rate:g} requests/s for this key",
                headers={"Retry-After": str(wait)},
            )
        bucket.tokens -= 1
