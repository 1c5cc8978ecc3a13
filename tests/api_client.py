"""The operator API through aiohttp's test client, every exchange validated against the
OpenAPI document with openapi-core (request and response): a test that passes has also
held the contract."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from openapi_core import Config, OpenAPI
from openapi_core.testing import MockRequest, MockResponse

from mailer.api.app import create_app
from mailer.api.contract import document
from mailer.api.store import ApiStore
from mailer.core.settings import Settings
from mailer.db import connect

Client = TestClient[web.Request, web.Application]


def _text(data: bytes | str) -> str:
    return data.decode() if isinstance(data, bytes) else data


# problem+json is JSON (RFC 9457): openapi-core deserialises only the types it knows. The
# campaign file (TOML) and the registry upload (CSV) are documented as strings.
CONTRACT = OpenAPI.from_dict(
    document(),
    config=Config(
        extra_media_type_deserializers={
            "application/problem+json": json.loads,
            "application/toml": _text,
            "text/csv": _text,
        }
    ),
)


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]


@dataclass
class Api:
    client: Client
    settings: Settings
    exchanges: int = 0
    operations: set[tuple[str, str, int]] = field(default_factory=set)

    async def call(
        self,
        method: str,
        path: str,
        key: str | None,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        validate: bool = True,
        raw: bytes | None = None,
        content_type: str = "application/json",
    ) -> Answer:
        """One exchange; `raw` sends those bytes as `content_type` instead of `body` as JSON."""
        sent = dict(headers or {})
        if key is not None:
            sent["Authorization"] = f"Bearer {key}"
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        if data is not None:
            sent["Content-Type"] = content_type
        async with self.client.request(method, path, data=data, headers=sent) as response:
            raw = await response.read()
            answer = Answer(
                response.status, json.loads(raw) if raw else None, dict(response.headers)
            )
            answered = response.headers.get("Content-Type", "").split(";")[0]
        if validate:
            url_path, _, query = path.partition("?")
            args = dict(p.split("=", 1) for p in query.split("&") if p)
            request = MockRequest(
                "http://localhost", method.lower(), url_path, args=args, headers=sent, data=data,
                content_type=content_type,
            )  # fmt: skip
            if answer.status < 400:
                # A request the server refused (tests send bad ones) need not match it.
                CONTRACT.validate_request(request)
            CONTRACT.validate_response(
                request,
                MockResponse(raw, answer.status, dict(response.headers), answered),
            )
            self.exchanges += 1
        return answer


@asynccontextmanager
async def api_client(settings: Settings) -> AsyncIterator[Api]:
    """The API (no webhook dispatcher) on the test's database."""
    async with TestClient(TestServer(create_app(settings, dispatch_webhooks=False))) as client:
        yield Api(client, settings)


async def make_key(
    settings: Settings, *scopes: str, name: str = "test", expires: datetime | None = None
) -> str:
    async with connect(settings.database.url, max_size=1) as pool:
        _, text = await ApiStore(pool).key_create(name, list(scopes), expires)
    return text
