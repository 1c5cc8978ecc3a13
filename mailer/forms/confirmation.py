"""The confirmation mail, queued on the transactional lane (issue 18), never behind a campaign.

The lane commits the message before `enqueue` returns (idempotency key: the request id, so a
retried POST never queues two) and sends it on connections of its own. The template
(`templates/transactional/signup_confirmation.*`) carries the sender identification and
quotes the exact consent text with its version and SHA-256: the mail the person keeps is a
copy of what they are agreeing to.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from mailer.core.footer import format_date
from mailer.db import Pool
from mailer.forms.signup import ConfirmationMail
from mailer.forms.store import CONFIRMATION_KEY_PREFIX, PendingRequest
from mailer.transactional.enqueue import enqueue
from mailer.transactional.store import TransactionalStore

log = logging.getLogger(__name__)


def template_data(mail: ConfirmationMail) -> dict[str, object]:
    """What the template reads as `data` (JSON values only).

    No name: the lane keeps `data` with the message, and a request that is never confirmed
    should leave as little behind as it can (the greeting uses the contact's own name).
    """
    return {
        "confirm_url": mail.confirm_url,
        "form_source": mail.form_source,
        "consent_text": mail.consent_text,
        "consent_version": mail.consent_version,
        "consent_sha256": mail.consent_sha256,
        "topics": list(mail.topics),
        "expires_on": format_date(mail.expires_at.date(), mail.locale),
    }


class TransactionalConfirmer:
    """Queues each confirmation on the transactional lane (a Confirmer)."""

    def __init__(self, pool: Callable[[], Pool], templates_dir: Path, template: str) -> None:
        # The pool is asked for at each send: the tracker's pool opens after the app is built.
        self._pool = pool
        self.templates_dir = templates_dir
        self.template = template

    async def send(self, mail: ConfirmationMail) -> None:
        store = TransactionalStore(self._pool(), self.templates_dir)
        result = await enqueue(
            store,
            template=self.template,
            to=mail.to,
            data=template_data(mail),
            idempotency_key=f"{CONFIRMATION_KEY_PREFIX}{mail.request_id}",
            locale=mail.locale,
        )
        if result.refusal is not None:
            # The lane refuses hard bounces, complaints and erasures, which the sign-up
            # refused already; a refusal here is a race with one of them: nothing is sent.
            log.info(
                "confirmation of sign-up %d refused by the lane: %s",
                mail.request_id,
                result.refusal.reason,
            )

    async def welcome(self, template: str, request: PendingRequest, to: str) -> None:
        store = TransactionalStore(self._pool(), self.templates_dir)
        form = (request.evidence or {}).get("form") or {}
        await enqueue(
            store,
            template=template,
            to=to,
            data={"form_source": form.get("source", "")},
            idempotency_key=f"signup-welcome-{request.id}",
            locale=request.locale,
        )
