"""Shared setup of the sign-up form tests: settings, a form, the confirmation mail's delivery.

`deliver_queued` runs the worker's transactional lane (issue 18) until idle against an SMTP
sink: the confirmation mail goes out exactly as in production.
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
import re
from email.message import EmailMessage
from pathlib import Path

from mailer.core.settings import FormsSettings, Settings, TransactionalSettings
from mailer.db import connect
from mailer.forms.store import FormStore, PoolLender
from mailer.send.worker import build_engine, build_lane
from tests.integration.test_tracker_app import settings_for

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
    """Run the worker's transactional lane until idle against the sink at `port`; how many
    messages it sent."""
    settings = dataclasses.replace(
        settings,
        smtp=dataclasses.replace(settings.smtp, host="127.0.0.1", port=port, tls="none"),
        relays=(),
        transactional=dataclasses.replace(settings.transactional, poll_ms=50),
    )
    async with connect(db_url, max_size=4) as pool:
        engine = build_engine(pool, settings)
        progress = await build_lane(pool, settings, engine).run(until_idle=True)
    return progress.by_status["sent"]


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
