"""The demo's sign-up form: a form created, visitors subscribing through the real tracker over
HTTP, their confirmation mails, and all but one of them confirming.

The confirmation mails are queued on the transactional lane by the tracker (as in
production); until the lane's sender runs in `mailer worker` (issue 18), this step delivers
what the lane queued with the lane's own pieces (claim, template, composer) into the demo's
mailbox, so each visitor can read the link in their mail.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path

import aiohttp
from rich.console import Console
from rich.table import Table

from mailer.core.settings import Settings
from mailer.core.tokens import Keyring
from mailer.db import Pool
from mailer.demo.sink import Sink
from mailer.forms.store import FormStore, PoolLender
from mailer.transactional import template as template_file
from mailer.transactional.compose import compose, composer_for
from mailer.transactional.store import TransactionalStore

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


async def deliver(pool: Pool, settings: Settings, mailbox: Sink) -> dict[str, bytes]:
    """What the lane queued, composed as the lane does, into the mailbox; by recipient."""
    keyring = Keyring.from_spec(settings.require_token_keys())
    store = TransactionalStore(pool, Path(settings.transactional.templates_dir))
    delivered: dict[str, bytes] = {}
    for claimed in await store.claim(100, 60.0, "demo"):
        tpl = template_file.load(store.templates_dir, claimed.template)
        composed = compose(
            composer_for(tpl, keyring, settings),
            message_id=claimed.id,
            email=claimed.email,
            name=claimed.name,
            locale=claimed.locale,
            data=claimed.data,
            tracking=claimed.tracking,
            consent=None,
            now=datetime.now(UTC),
        )
        mailbox.store(composed.return_path, [claimed.email], composed.data)
        await store.record_outcome(claimed.id, "demo", "sent", code=250)
        delivered[claimed.email] = composed.data
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
        mails = await deliver(pool, settings, Sink(run_folder / "signup-mail"))
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
