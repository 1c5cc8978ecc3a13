"""Shared setup of the sign-up form tests: settings, a form, the confirmation mail's delivery.

`deliver_queued` sends what the transactional lane holds to an SMTP sink with the lane's own
pieces (its store's claim, its template loader, its composer): the stand-in for the lane's
sending loop, which is being built on another branch (issue 18). The message bytes are the
ones the lane composes.
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
import re
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib

from mailer.core.settings import FormsSettings, Settings, TransactionalSettings
from mailer.core.tokens import Keyring
from mailer.db import connect
from mailer.forms.store import FormStore, PoolLender
from mailer.transactional import template as template_file
from mailer.transactional.compose import compose, composer_for
from mailer.transactional.store import TransactionalStore
from tests.integration.test_tracker_app import KEYS, settings_for

ROOT = Path(__file__).resolve().parents[1]
FR = "J'accepte de recevoir l'infolettre de Garage Tremblay Automobiles par courriel."
EN = "I agree to receive Garage Tremblay Automobiles' newsletter by email."
IDENTITY = FormsSettings(
    business_name="Garage Tremblay Automobiles",
    postal_address="2450, boulevard Laurier, Québec (Québec)  G1V 2L1, Canada",
    contact="+1 418-555-0142",
)


def signup_settings(db_url: str, **forms: object) -> Settings:
    """Tracker settings for the tests, with the forms' identity and the real templates."""
    base = settings_for(db_url)
    return dataclasses.replace(
        base,
        forms=dataclasses.replace(IDENTITY, **forms),  # type: ignore[arg-type]
        transactional=TransactionalSettings(templates_dir=str(ROOT / "templates/transactional")),
    )


async def make_form(
    db_url: str,
    slug: str = "infolettre",
    *,
    double_opt_in: bool = True,
    origins: tuple[str, ...] = (),
    proof_of_work: bool = False,
    redirect_url: str | None = None,
) -> int:
    """A form with two topics (created here) in French and English."""
    async with connect(db_url, max_size=2) as pool:
        for topic, name in (("service", "Rappels d'entretien"), ("promotions", "Promotions")):
            await pool.execute(
                "INSERT INTO topics (slug, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                topic,
                name,
            )
        store = FormStore(PoolLender(pool))
        topics = await store.topic_ids(["service", "promotions"])
        form_id = await store.add(
            slug=slug,
            source="Site web — infolettre",
            topic_ids=[topics["service"], topics["promotions"]],
            locales=["fr", "en"],
            double_opt_in=double_opt_in,
            welcome=None,
            redirect_url=redirect_url,
            origins=list(origins),
            proof_of_work=proof_of_work,
            texts={"fr": FR, "en": EN},
        )
    assert form_id is not None
    return form_id


def hidden(page: str, name: str) -> str:
    """A hidden field's value on a served page."""
    match = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert match is not None, f"no hidden field {name}"
    return match.group(1)


async def deliver_queued(db_url: str, settings: Settings, port: int) -> int:
    """Send every queued transactional message to the sink at `port`; how many were sent."""
    keyring = Keyring.from_spec(KEYS)
    sent = 0
    async with connect(db_url, max_size=2) as pool:
        store = TransactionalStore(pool, Path(settings.transactional.templates_dir))
        for claimed in await store.claim(100, 60.0, "test-lane"):
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
            await aiosmtplib.send(
                composed.data,
                sender=composed.return_path,
                recipients=[claimed.email],
                hostname="127.0.0.1",
                port=port,
            )
            await store.record_outcome(claimed.id, "test-lane", "sent", code=250)
            sent += 1
    return sent


def parsed(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def text_part(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


def confirm_path(message: EmailMessage) -> str:
    """The confirmation link's path, read from the mail's text part."""
    match = re.search(r"https?://[^/\s]+(/confirm/[A-Za-z0-9_-]+)", text_part(message))
    assert match is not None, text_part(message)
    return match.group(1)
