"""Shared setup for inbound tests: sent deliveries, the corpus filled in for them, a running
`inbound serve` on a free port, and an SMTP client to hand it messages."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosmtplib
import asyncpg

from mailer.core.settings import Settings
from mailer.core.tokens import Keyring, Purpose, Token
from mailer.db import connect
from mailer.demo.stores import Stores
from mailer.inbound.service import InboundService
from tests.engine_setup import KEYS, add_contacts, sample_campaign
from tests.smtp_servers import free_port

CORPUS = Path(__file__).resolve().parent / "fixtures" / "inbound"
KEYRING = Keyring.from_spec(KEYS)
DOMAIN = "garage-tremblay.example"


@dataclass(frozen=True)
class Sent:
    """One delivery the engine would have sent: its address, ids and signed tokens."""

    delivery_id: int
    contact_id: int
    campaign_id: int
    email: str
    message_id: str

    def token(self, purpose: Purpose) -> str:
        return KEYRING.sign(Token(purpose, self.delivery_id, None, 1_728_000_000))

    def fill(self, name: str, **extra: str) -> bytes:
        """A corpus message about this delivery, CRLF line ends as SMTP carries it."""
        text = (CORPUS / f"{name}.eml").read_bytes().decode("latin-1")
        values = {
            "{BOUNCE}": self.token(Purpose.BOUNCE),
            "{UNSUB}": self.token(Purpose.UNSUBSCRIBE),
            "{MSGID}": self.message_id,
            "{DOMAIN}": DOMAIN,
            **extra,
        }
        for key, value in values.items():
            text = text.replace(key, value)
        return text.encode("latin-1").replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")

    @property
    def verp(self) -> str:
        return f"bounces+{self.token(Purpose.BOUNCE)}@{DOMAIN}"

    @property
    def mailto(self) -> str:
        return f"unsubscribe+{self.token(Purpose.UNSUBSCRIBE)}@{DOMAIN}"


async def sent_deliveries(stores: Stores, conn: asyncpg.Connection, count: int) -> list[Sent]:
    """`count` contacts with consent, the sample campaign frozen for them, all marked sent."""
    await add_contacts(conn, count)
    campaign_id = await sample_campaign(stores)
    rows = await conn.fetch(
        "UPDATE deliveries d SET status = 'sent', sent_at = now() - interval '1 minute', "
        "message_id = '<' || d.id || '.0123456789abcdef@' || $2 || '>' "
        "FROM contacts c WHERE c.id = d.contact_id AND d.campaign_id = $1 "
        "RETURNING d.id, d.contact_id, c.email, d.message_id",
        campaign_id,
        DOMAIN,
    )
    return sorted(
        (Sent(r["id"], r["contact_id"], campaign_id, r["email"], r["message_id"]) for r in rows),
        key=lambda s: s.delivery_id,
    )


def inbound_settings(settings: Settings, **inbound: Any) -> Settings:
    """The test's settings with inbound on a free port, no metrics port unless asked."""
    values: dict[str, Any] = {"port": free_port(), "metrics_port": 0, **inbound}
    return dataclasses.replace(
        settings, inbound=dataclasses.replace(settings.inbound, **values), token_keys=KEYS
    )


@asynccontextmanager
async def inbound_serve(settings: Settings) -> AsyncIterator[InboundService]:
    """`mailer inbound serve`, in this process, on its own pool."""
    async with connect(settings.database.url, max_size=4) as pool:
        service = InboundService(settings, pool, metrics=False)
        await service.start()
        try:
            yield service
        finally:
            await service.stop()


async def deliver(port: int, rcpt: str | list[str], data: bytes, mail_from: str = "") -> str:
    """Hand a message over SMTP as a relay would; the server's final reply."""
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30) as client:
        rcpts = [rcpt] if isinstance(rcpt, str) else rcpt
        errors, reply = await client.sendmail(mail_from, rcpts, data)
        assert not errors, errors
        return reply


async def processed(conn: asyncpg.Connection, count: int, within_s: float = 30.0) -> None:
    """Wait until `count` inbound messages are processed."""
    deadline = time.monotonic() + within_s
    query = "SELECT count(*) FROM inbound_messages WHERE state = 'processed'"
    while await conn.fetchval(query) < count:
        if time.monotonic() > deadline:
            raise TimeoutError("inbound messages not processed in time")
        await asyncio.sleep(0.05)
