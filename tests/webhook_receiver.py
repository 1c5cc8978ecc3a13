"""A real local webhook receiver: verifies each request with the Standard Webhooks
reference library, de-duplicates by webhook-id (as receivers must), and can fail on
purpose (the first N attempts of an event, or while `failing` is set)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from standardwebhooks import Webhook, WebhookVerificationError


@dataclass
class Receiver:
    secret: str = ""
    fail_first: int = 0  # answer 503 to the first N attempts of every event
    delay_s: float = 0.0  # hold each request this long before answering
    url: str = ""
    attempts: Counter[str] = field(default_factory=Counter)
    received: list[dict[str, Any]] = field(default_factory=list)  # verified, in arrival order
    ids: list[str] = field(default_factory=list)  # webhook-id of each accepted request
    unique: dict[str, dict[str, Any]] = field(default_factory=dict)
    forged: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            payload = Webhook(self.secret).verify(body, dict(request.headers))
        except WebhookVerificationError:
            self.forged += 1
            return web.Response(status=400)
        msg_id = request.headers["webhook-id"]
        self.attempts[msg_id] += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.attempts[msg_id] <= self.fail_first:
            return web.Response(status=503)
        self.received.append(payload)
        self.ids.append(msg_id)
        self.unique.setdefault(msg_id, payload)
        return web.Response(status=204)


@asynccontextmanager
async def receiving(receiver: Receiver) -> AsyncIterator[Receiver]:
    """Serve `receiver` on a free loopback port; its URL is set on it."""
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    receiver.url = str(server.make_url("/hook"))
    try:
        yield receiver
    finally:
        await server.close()
