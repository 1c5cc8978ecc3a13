"""What handlers share: the app's keys, the request's key, and request parsing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from mailer.api.auth import RateLimiter
from mailer.api.contract import check
from mailer.api.keys import ApiKey
from mailer.api.problems import Problem
from mailer.api.store import ApiStore
from mailer.core.addresses import InvalidAddress, address_hash, normalise
from mailer.core.counts import parse_count
from mailer.core.settings import Settings
from mailer.db import Pool

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", Pool)
KEYS = web.AppKey("keys", ApiStore)
LIMITER = web.AppKey("limiter", RateLimiter)
# The app's background tasks (webhook dispatcher, idempotency purge): `api serve` stops
# when one of them ends, instead of running on without it.
BACKGROUND = web.AppKey("background", list[asyncio.Task[None]])
KEY = web.RequestKey("api_key", ApiKey)


async def body_of(request: web.Request, schema: str) -> dict[str, Any]:
    """The JSON body, checked against the document's schema `schema` (400 / 422)."""
    raw = await request.read()
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Problem(400, f"the body is not JSON: {exc}") from None
    check(schema, document)
    assert isinstance(document, dict)  # every body schema is an object
    if nul := list(_nul_pointers(document, "")):
        # JSON may carry U+0000; Postgres text and jsonb cannot hold it (a 500 at the insert).
        errors = [{"pointer": p, "detail": "U+0000 (NUL) is not allowed in text"} for p in nul]
        raise Problem(422, "the request body holds a NUL character", errors=errors[:50])
    return document


def _nul_pointers(value: Any, at: str) -> Iterator[str]:
    """The JSON pointer of every string (key or value) holding U+0000."""
    if isinstance(value, str):
        if "\x00" in value:
            yield at
    elif isinstance(value, dict):
        for k, v in value.items():
            here = f"{at}/{str(k).replace('~', '~0').replace('/', '~1')}"
            if "\x00" in str(k):
                yield here
            yield from _nul_pointers(v, here)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _nul_pointers(v, f"{at}/{i}")


def email_of(request: web.Request) -> tuple[str, bytes]:
    """The {email} of the path, normalised, and its hash (400 if not an address)."""
    text = request.match_info["email"]
    try:
        email = normalise(text)
    except InvalidAddress as exc:
        raise Problem(400, f"{text[:100]!r} is not a valid address: {exc}") from None
    return email, address_hash(email)


def page_limit(request: web.Request) -> int:
    limit = parse_count(request.query.get("limit", "100"), minimum=1, maximum=1000)
    if limit is None:
        raise Problem(400, "limit: expected 1 to 1000")
    return limit
