"""The demo's operator steps: the HTTP API with a signed webhook, then the browser console.

Both servers run as `mailer api serve` and `mailer console serve` run them (their own
aiohttp apps and pools, the API's webhook dispatcher beside it), on free loopback ports,
driven over real HTTP with aiohttp's client; the webhook receiver verifies each request
with the Standard Webhooks reference library, as a real receiver would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from rich.console import Console
from standardwebhooks import Webhook, WebhookVerificationError

from mailer.api.app import create_app as api_app
from mailer.api.store import ApiStore
from mailer.compliance.store import log_operator_action
from mailer.console.accounts import Role
from mailer.console.app import create_app as console_app
from mailer.console.enrolment import add_operator
from mailer.console.store import ConsoleStore
from mailer.core.settings import Settings
from mailer.db import Pool
from mailer.webhooks.store import WebhookStore

SCOPES = ["contacts:write", "contacts:read", "webhooks:manage"]
OPERATOR = "demo@garage-tremblay.example"
_CSRF = re.compile(r'name="csrf" value="([^"]*)"')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def _serving(app: web.Application, port: int) -> AsyncIterator[str]:
    """`app` on 127.0.0.1:`port` until the block ends (its cleanup_ctx closes its pool)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@dataclasses.dataclass
class _Receiver:
    """A tiny webhook receiver: verified events in arrival order, forgeries counted."""

    secret: str = ""
    received: list[tuple[str, dict[str, Any]]] = dataclasses.field(default_factory=list)
    forged: int = 0
    arrived: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            payload = Webhook(self.secret).verify(body, dict(request.headers))
        except WebhookVerificationError:
            self.forged += 1
            return web.Response(status=400)
        self.received.append((request.headers["webhook-id"], payload))
        self.arrived.set()
        return web.Response(status=204)


async def api_and_webhook(pool: Pool, settings: Settings, console: Console) -> None:
    """A key, the API, a webhook endpoint for opt-outs; a contact upserted then opted out."""
    key, text = await ApiStore(pool).key_create("demo", SCOPES, None)
    await log_operator_action(
        pool, "operator", "demo", "api_key.create", "api_key", key.prefix,
        {"name": "demo", "scopes": SCOPES},
    )  # fmt: skip
    console.print(f"api key {key.prefix} (demo), scopes {', '.join(SCOPES)}", highlight=False)
    receiver = _Receiver()
    hook_app = web.Application()
    hook_app.router.add_post("/hook", receiver.handle)
    # The dispatcher is woken by NOTIFY; a short poll only bounds a missed one.
    settings = dataclasses.replace(
        settings, webhooks=dataclasses.replace(settings.webhooks, retry_base_s=0.2, poll_s=0.2)
    )
    email = f"quote-{datetime.now(UTC):%Y%m%d%H%M%S}@example.org"
    headers = {"Authorization": f"Bearer {text}"}
    endpoint_id = None
    async with (
        _serving(hook_app, _free_port()) as hook_url,
        _serving(api_app(settings), _free_port()) as api_url,
        aiohttp.ClientSession(base_url=api_url, headers=headers) as http,
    ):
        try:
            endpoint = await _call(
                http,
                "/api/v1/webhooks",
                {"url": f"{hook_url}/hook", "events": ["contact.unsubscribed"]},
            )
            endpoint_id, receiver.secret = endpoint["id"], endpoint["secret"]
            console.print(
                f"POST /api/v1/webhooks → endpoint {endpoint_id} for contact.unsubscribed "
                f"at {hook_url}/hook (signing secret shown once)",
                highlight=False,
            )
            today = datetime.now(UTC).date().isoformat()
            # A quote request: implied consent (inquiry) for six months (CASL s.10(10)(b)).
            item = {
                "email": email,
                "name": "Chloé Gagnon",
                "locale": "fr",
                "consent": {
                    "kind": "implied_inquiry",
                    "source": "quote request",
                    "obtained_at": today,
                    "evidence": {"quote": "Q-2041"},
                },
            }
            upserted = await _call(http, "/api/v1/contacts", {"contacts": [item]})
            console.print(
                f"POST /api/v1/contacts → created {upserted['created']}, "
                f"consents added {upserted['consents_added']}",
                highlight=False,
            )
            opted = await _call(
                http, f"/api/v1/contacts/{email}/opt-out", {"source": "phone call to the dealer"}
            )
            console.print(
                f"POST /api/v1/contacts/{email}/opt-out → changed {opted['changed']}, "
                f"channels {', '.join(opted['channels'])}",
                highlight=False,
            )
            await asyncio.wait_for(receiver.arrived.wait(), 15)
        finally:
            if endpoint_id is not None:
                await WebhookStore(pool).endpoint_remove(endpoint_id)
            # Its text is gone with this run: a key nobody holds should not stay valid.
            await ApiStore(pool).key_revoke(key.prefix)
            await log_operator_action(
                pool, "operator", "demo", "api_key.revoke", "api_key", key.prefix
            )
    webhook_id, payload = receiver.received[0]
    contact = payload["data"]["contact"]
    console.print(
        f"webhook received and verified (Standard Webhooks signature): {payload['type']} "
        f"for {contact['email']} (contact {contact['id']}), webhook-id {webhook_id}",
        highlight=False,
    )


async def _call(http: aiohttp.ClientSession, path: str, body: dict[str, Any]) -> Any:
    """POST with an Idempotency-Key (a retry would get the first answer, not a second write)."""
    async with http.post(
        path, json=body, headers={"Idempotency-Key": secrets.token_hex(8)}
    ) as response:
        answer = await response.json(content_type=None)
        if response.status >= 300:
            raise RuntimeError(f"POST {path}: {response.status} {answer}")
        return answer


def _password(folder: Path) -> tuple[str, bool]:
    """The demo operator's password, kept beside the demo's token key across runs; and
    whether it was made just now."""
    path = folder / "console_password"
    made = not path.exists()
    if made:
        path.write_text(secrets.token_urlsafe(18) + "\n")
        path.chmod(0o600)
    return path.read_text().strip(), made


async def console_tour(
    pool: Pool, settings: Settings, folder: Path, slug: str, console: Console
) -> None:
    """A viewer logs in to the console over HTTP and opens the dashboard and the campaign."""
    password, made = _password(folder)
    accounts = ConsoleStore(pool)
    email = OPERATOR
    if made and await accounts.operator_by_email(email) is not None:
        # A database kept while the demo's folder was removed: that password is gone.
        email = f"demo-{datetime.now(UTC):%Y%m%d%H%M%S}@garage-tremblay.example"
    if await accounts.operator_by_email(email) is None:
        await add_operator(accounts, settings, email, Role.VIEWER, password=password, actor="demo")
        console.print(f"operator {email} added as viewer", highlight=False)
    port, served = _free_port(), settings.console.base_url
    settings = dataclasses.replace(
        settings,
        console=dataclasses.replace(settings.console, base_url=f"http://127.0.0.1:{port}"),
    )
    # Cookies of a bare IP address are refused by aiohttp's default jar.
    jar = aiohttp.CookieJar(unsafe=True)
    async with (
        _serving(console_app(settings), port) as url,
        aiohttp.ClientSession(base_url=url, cookie_jar=jar) as browser,
    ):
        async with browser.get("/login") as page:
            found = _CSRF.search(await page.text())
        if found is None:
            raise RuntimeError("the console's login page has no CSRF field")
        form = {"email": email, "password": password, "csrf": found.group(1), "next": "/"}
        async with browser.post("/login", data=form) as logged:
            if logged.status != 200 or logged.url.path == "/login":
                raise RuntimeError(f"console login refused ({logged.status})")
        statuses = []
        for path in ("/", f"/campaigns/{slug}"):
            async with browser.get(path, allow_redirects=False) as page:
                await page.read()
                statuses.append(f"GET {path} → {page.status}")
    console.print(f"logged in as {email}: " + ", ".join(statuses), highlight=False)
    console.print(
        f"open it yourself: [bold]mailer console serve[/], then {served}/ "
        f"as {email}, password in {folder / 'console_password'}",
        highlight=False,
    )
