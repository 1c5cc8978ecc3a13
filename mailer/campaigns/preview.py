"""The exact message one contact would get, without sending or recording anything.

One operation under `mailer campaign preview` and the console's preview page.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

from mailer.campaigns.limits import RenderLimits, timed
from mailer.campaigns.message import (
    CampaignContent,
    Composed,
    Composer,
    Recipient,
    campaign_composer,
)
from mailer.campaigns.render import MessageError, UnregisteredLinks
from mailer.core.consent import Action, ContactRecord
from mailer.core.settings import Settings
from mailer.core.tokens import Keyring


class PreviewError(ValueError):
    """The contact's message cannot be built; the message says why."""


def recipient_for(record: ContactRecord, locale: str | None = None) -> Recipient:
    """The contact as the engine would address it, with its latest grant as consent origin."""
    best = next((e for e in reversed(record.ledger) if e.action is Action.GRANT and e.kind), None)
    return Recipient(
        delivery_id=0,
        email=record.email,
        name=record.name,
        locale=locale or record.locale,
        attributes=record.attributes,
        consent_kind=None if best is None else best.kind,
        consent_source="" if best is None else best.source,
        consent_obtained_at=None if best is None else best.obtained_at,
        consent_date_only=best is not None and best.obtained_date_only,
    )


def compose_preview(
    content: CampaignContent,
    record: ContactRecord,
    keyring: Keyring,
    settings: Settings,
    at: datetime,
    *,
    limits: RenderLimits | None = None,
    locale: str | None = None,
) -> tuple[Composed, Composer]:
    """The message `record` would get at `at` (in `locale` if given), under the engine's time
    and size limits; links not yet registered get id 0 (a preview registers nothing)."""
    _, composer = campaign_composer(
        dataclasses.replace(content, links=dict(content.links)), keyring, settings
    )
    recipient = recipient_for(record, locale)
    for _ in range(20):
        try:
            return timed(limits or RenderLimits(), composer.compose, recipient, at), composer
        except UnregisteredLinks as exc:
            composer.add_links({url: 0 for url in exc.urls})
        except MessageError as exc:
            raise PreviewError(f"{record.email} would be skipped ({exc.reason}): {exc}") from None
    raise PreviewError("the template keeps producing new links")
