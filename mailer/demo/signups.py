"""The demo's sign-up form: a form created, visitors subscribing through the real tracker over
HTTP, their confirmation mails, and all but one of them confirming.

The confirmation mails are queued on the transactional lane by the tracker and sent by the
worker's lane, as in production, into a mailbox of their own (run folder, signup-mail/), where
each visitor reads the link in their mail.
"""

from __future__ import annotations

import dataclasses
import html
import re
import socket
from dataclasses import dataclass
from email import message_from_bytes, policy
from pathlib import Path

import aiohttp
from rich.console import Console
from rich.table import Table

from mailer.core.settings import Settings
from mailer.db import Pool
from mailer.demo.sink import Sink
from mailer.demo.sink import serve as serve_sink
from mailer.forms.store import FormStore, PoolLender
from mailer.send.worker import build_engine, build_lane

SLUG = "infolettre"
SOURCE = "Site web — infolettre"
TEXTS = {
    "fr": (
        "J'accepte de recevoir par courriel l'infolettre et les promotions de Garage Tremblay "
        "Automobiles. Je peux me désabonner en tout temps."
    ),
    "en": (
        "I agree to receive Garage Tremblay Automobiles' newsletter and offers by email. "
        "I can unsubscribe at any time."
    ),
}
# (address, language, topics, confirms?): one visitor never confirms; their request expires.
VISITORS = (
    ("josee.gagnon@example.net", "fr", ("promotions",), True),
    ("olivier.roy@example.net", "fr", ("service", "promotions"), True),
    ("emily.clark@example.org", "en", ("promotions",), True),
    ("never.confirms@example.org", "fr", ("promotions",), False),
)
_HIDDEN = re.compile(r'name="([a-z_]+)" value="([^"]*)"')
_LINK = re.compile(r"https?://[^\s]+/confirm/[A-Za-z0-9_-]+")


@dataclass
class Visit:
    email: str
    status: int = 0
    mailed: bool = False
    confirmed: bool = False


async def ensure_form(pool: Pool) -> None:
    """The demo's form (created on the first run; later runs reuse it)."""
    store = FormStore(PoolLender(pool))
    if await store.form(SLUG) is not None:
        return
    topics = await store.topic_ids(["service", "promotions"])
    await store.add(
        slug=SLUG,
        source=SOURCE,
        topic_ids=list(topics.values()),
        locales=["fr", "en"],
        double_opt_in=True,
        welcome=None,
        redirect_url=None,
        origins=[],
        proof_of_work=False,
        texts=TEXTS,
    )


def _fields(page: str) -> dict[str, str]:
    return {name: html.unescape(value) for name, value in _HIDDEN.findall(page)}


async def deliver(pool: Pool, settings: Settings, folder: Path) -> dict[str, bytes]:
    """Run the worker's transactional lane until idle against a sink of its own (so the sign-up
    mail stays apart from the campaign's mailbox); what it delivered, by recipient."""
    sink = Sink(folder)
    delivered: dict[str, bytes] = {}
    sink.on_message = lambda _from, rcpts, data: delivered.update(dict.fromkeys(rcpts, data))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = await serve_sink(sink, "127.0.0.1", port)
    try:
        lane_settings = dataclasses.replace(
            settings,
            smtp=dataclasses.replace(settings.smtp, host="127.0.0.1", port=port, tls="none"),
            relays=(),
        )
        engine = build_engine(pool, lane_settings)
        await build_lane(pool, lane_settings, engine).run(until_idle=True)
    finally:
        server.close()
        await server.wait_closed()
    return delivered


async def run(pool: Pool, settings: Settings, run_folder: Path, console: Console) -> list[Visit]:
    """Visitors sign up and (all but one) confirm; prints what happened."""
    await ensure_form(pool)
    base = settings.tracker.base_url.rstrip("/")
    visits = [Visit(email) for email, *_ in VISITORS]
    async with aiohttp.ClientSession() as http:
        for visit, (email, lang, topics, _) in zip(visits, VISITORS, strict=True):
            async with http.get(f"{base}/s/{SLUG}?lang={lang}") as page:
                fields = _fields(await page.text())
            form = [*fields.items(), ("email", email), ("consent", "yes"), ("website", "")]
            form += [("topic", t) for t in topics]
            async with http.post(f"{base}/s/{SLUG}", data=form) as answer:
                visit.status = answer.status
        mails = await deliver(pool, settings, run_folder / "signup-mail")
        for visit, (email, _, _, confirms) in zip(visits, VISITORS, strict=True):
            data = mails.get(email)
            visit.mailed = data is not None
            if data is None or not confirms:
                continue
            message = message_from_bytes(data, policy=policy.default)
            text = message.get_body(("plain",))
            link = _LINK.search(text.get_content() if text is not None else "")
            if link is None:
                continue
            async with http.get(link.group(0)) as page:  # a GET records nothing
                fields = _fields(await page.text())
            async with http.post(link.group(0), data=fields) as answer:
                visit.confirmed = answer.status == 200
    table = Table("visitor", "form answer", "confirmation mail", "confirmed")
    for visit in visits:
        table.add_row(
            visit.email,
            str(visit.status),
            "received" if visit.mailed else "-",
            "yes" if visit.confirmed else "no (the request expires, data and all)",
        )
    console.print(f"form [bold]{SLUG}[/]: {base}/s/{SLUG}")
    console.print(table)
    return visits
