"""The two steps of a sign-up, as operations every door calls (tracker today, the API later).

request_signup: a visitor submitted a form. Double opt-in (the default) stores a pending
request, which is not a consent, and queues the confirmation mail; single opt-in records the
grant at once. confirm_signup: the person pressed the button behind the mail's link; the
express grant is recorded with the evidence of both steps (CASL s.10(1) and s.13, GDPR
art. 7(1)): when, from which address and browser, on which page, and the exact words agreed
to, by form, version and SHA-256.

No account enumeration: whatever the database knows about the address (a contact, an old
unsubscribe, a hard bounce, a mail sent an hour ago), the visitor gets the same answer; only
the mail differs, and it goes to the address's owner.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from mailer.core.addresses import InvalidAddress, address_hash, mailable, normalise
from mailer.core.settings import FormsSettings
from mailer.core.tokens import Keyring, Purpose, Token, TokenError
from mailer.forms.model import ConsentText, Form, clean_name
from mailer.forms.store import FormStore, PendingRequest

log = logging.getLogger(__name__)


class Step(StrEnum):
    """A sign-up's outcome: the label of tracker_signup_total{form,step}."""

    REQUESTED = "requested"  # pending request stored, confirmation mail queued
    CONFIRMED = "confirmed"  # express grant recorded
    EXPIRED = "expired"  # a pending request deleted unconfirmed
    REFUSED_RATE = "refused_rate"  # its IP prefix's window was full
    REFUSED_ADDRESS = "refused_address"  # a confirmation mail went to it within the interval
    REFUSED_BLOCKED = "refused_blocked"  # hard bounce, complaint, erasure, registry, manual
    REFUSED_INVALID = "refused_invalid"  # bad address, no consent box, stale or forged form
    REFUSED_BOT = "refused_bot"  # honeypot filled, proof-of-work missing or wrong


# What the visitor is told, per step: the silent refusals read exactly like success.
SAME_AS_SUCCESS = frozenset({Step.REQUESTED, Step.REFUSED_ADDRESS, Step.REFUSED_BLOCKED})


@dataclass(frozen=True, slots=True)
class Submission:
    """What the visitor sent, as read from the form."""

    email: str
    name: str | None
    locale: str | None
    topics: Sequence[str]  # topic slugs ticked
    consent: bool  # the consent checkbox


@dataclass(frozen=True, slots=True)
class Visit:
    """Where a step came from: the evidence a server can see."""

    ip: str | None  # the client's address as believed (X-Forwarded-For only from our proxy)
    ip_prefix: str | None  # its /24 or /48
    user_agent: str | None
    referrer: str | None = None
    page_url: str | None = None


@dataclass(frozen=True, slots=True)
class ConfirmationMail:
    """Everything the confirmation message says (its template renders these)."""

    request_id: int
    to: str
    name: str | None
    locale: str
    confirm_url: str
    form_source: str
    consent_text: str
    consent_version: int
    consent_sha256: str
    topics: tuple[str, ...]  # labels in the reader's language
    expires_at: datetime


class Confirmer(Protocol):
    """Queues a confirmation mail durably (the transactional lane); raises if it cannot."""

    async def send(self, mail: ConfirmationMail) -> None: ...

    async def welcome(self, template: str, request: PendingRequest, to: str) -> None:
        """Queue the form's welcome message once the person confirmed (forms add --welcome)."""
        ...


@dataclass(frozen=True, slots=True)
class Requested:
    step: Step
    request_id: int | None = None


@dataclass(frozen=True, slots=True)
class Confirmed:
    """confirm_signup's answer: the step taken (or why none) and the request it was about."""

    outcome: str  # confirmed | already | expired | unknown | blocked
    request: PendingRequest | None = None
    grant_id: int | None = None


def form_token(keyring: Keyring, form_id: int, now: float | None = None) -> str:
    """The signed, time-limited token a served form carries (its CSRF field)."""
    issued = int(time.time() if now is None else now)
    return keyring.sign(Token(Purpose.SIGNUP_FORM, form_id, None, issued))


def form_token_ok(keyring: Keyring, text: object, form_id: int, max_age_s: int) -> bool:
    """Whether a submitted form token is ours, for this form, and fresh."""
    if not isinstance(text, str):
        return False
    try:
        token = keyring.verify(text, now=int(time.time()), max_age={Purpose.SIGNUP_FORM: max_age_s})
    except TokenError:
        return False
    return token.purpose is Purpose.SIGNUP_FORM and token.delivery_id == form_id


def confirmation_token(keyring: Keyring, request_id: int) -> str:
    """The token of the confirmation link: names the pending request (the id field)."""
    return keyring.sign(Token(Purpose.SIGNUP_CONFIRM, request_id, None, int(time.time())))


def read_confirmation(keyring: Keyring, text: str, max_age_s: int) -> int | str:
    """The request id a confirmation token names, or the reason it is refused."""
    try:
        token = keyring.verify(
            text, now=int(time.time()), max_age={Purpose.SIGNUP_CONFIRM: max_age_s}
        )
    except TokenError as exc:
        return exc.reason
    if token.purpose is not Purpose.SIGNUP_CONFIRM:
        return "wrong_purpose"
    return token.delivery_id


def _kept_ip(visit: Visit, settings: FormsSettings) -> str | None:
    # forms.ip_policy: the whole address as proof (default), or only its prefix.
    return visit.ip if settings.ip_policy == "full" else visit.ip_prefix


def request_evidence(
    form: Form, text: ConsentText, lang: str, topics: Sequence[str], visit: Visit,
    settings: FormsSettings, *, double: bool,
) -> dict[str, Any]:  # fmt: skip
    """The request step's evidence, kept with the pending request and then in the ledger."""
    return {
        "method": "double opt-in" if double else "single opt-in",
        "form": {
            "id": form.id,
            "slug": form.slug,
            "source": form.source,
            "locale": lang,
            "text_id": text.id,
            "text_version": text.version,
            "text": text.text,
            "text_sha256": text.sha256_hex,
        },
        "topics": list(topics),
        "ip_policy": settings.ip_policy,
        "request": {
            "ip": _kept_ip(visit, settings),
            "user_agent": visit.user_agent,
            "referrer": visit.referrer,
            "page_url": visit.page_url,
        },
    }


async def request_signup(
    store: FormStore,
    form: Form,
    submission: Submission,
    visit: Visit,
    *,
    settings: FormsSettings,
    keyring: Keyring,
    confirmer: Confirmer,
    base_url: str,
) -> Requested:
    """Step one. Refusals the visitor may learn of (a malformed address, no consent box) are
    REFUSED_INVALID; every other outcome reads as REQUESTED to them (SAME_AS_SUCCESS)."""
    if not submission.consent:
        return Requested(Step.REFUSED_INVALID)
    try:
        email = normalise(submission.email)
    except InvalidAddress:
        return Requested(Step.REFUSED_INVALID)
    if not mailable(email):  # no confirmation mail could reach it: say so, as for a typo
        return Requested(Step.REFUSED_INVALID)
    lang = form.language(submission.locale)
    text = form.texts.get(lang)
    if text is None:
        return Requested(Step.REFUSED_INVALID)
    offered = {t.slug: t for t in form.topics}
    chosen = [slug for slug in dict.fromkeys(submission.topics) if slug in offered]
    hashed = address_hash(email)
    interval = timedelta(hours=settings.mail_interval_hours)
    state = await store.address_state(hashed, interval)
    if state.blocked:
        return Requested(Step.REFUSED_BLOCKED)
    # Item 6 of the issue: someone who unsubscribed comes back only by confirming by email.
    double = form.double_opt_in or state.unsubscribed
    if double and state.recently_mailed:
        return Requested(Step.REFUSED_ADDRESS)
    evidence = request_evidence(form, text, lang, chosen, visit, settings, double=double)
    request_id, _ = await store.insert_request(
        form_id=form.id,
        text_id=text.id,
        email_hash=hashed,
        email=email,
        name=clean_name(submission.name),
        locale=lang,
        topic_ids=[offered[slug].id for slug in chosen],
        evidence=evidence,
        mailed=double,
        lifetime=timedelta(days=settings.pending_days),
    )
    if not double:
        # Single opt-in: the same grant, at once, with no confirmation step (and the evidence
        # says so: "method": "single opt-in", "confirmation": null).
        _, grant = await store.confirm(request_id, _single_compose, interval)
        return Requested(Step.CONFIRMED if grant is not None else Step.REFUSED_BLOCKED)
    token = confirmation_token(keyring, request_id)
    mail = ConfirmationMail(
        request_id=request_id,
        to=email,
        name=clean_name(submission.name),
        locale=lang,
        confirm_url=f"{base_url.rstrip('/')}/confirm/{token}",
        form_source=form.source,
        consent_text=text.text,
        consent_version=text.version,
        consent_sha256=text.sha256_hex,
        topics=tuple(offered[slug].label(lang) for slug in chosen),
        expires_at=datetime.now(UTC) + timedelta(days=settings.pending_days),
    )
    try:
        await confirmer.send(mail)
    except BaseException:
        # Not queued: forget the request, so the visitor's retry is not refused by the
        # per-address limit for a mail that never left.
        await store.drop_request(request_id)
        raise
    return Requested(Step.REQUESTED, request_id)


def _single_compose(request: PendingRequest) -> tuple[str, Mapping[str, Any]]:
    evidence = dict(request.evidence or {})
    evidence["request"] = {**evidence.get("request", {}), "at": request.requested_at.isoformat()}
    evidence["confirmation"] = None
    return evidence["form"]["source"], evidence


async def confirm_signup(
    store: FormStore,
    request_id: int,
    visit: Visit,
    *,
    settings: FormsSettings,
    confirmer: Confirmer | None = None,
) -> Confirmed:
    """Step two (a POST, never a GET): record the express grant with both steps' evidence,
    then queue the form's welcome message if it has one."""

    def compose(request: PendingRequest) -> tuple[str, Mapping[str, Any]]:
        evidence = dict(request.evidence or {})
        evidence["request"] = {
            **evidence.get("request", {}),
            "at": request.requested_at.isoformat(),
        }
        evidence["confirmation"] = {
            "at": datetime.now(UTC).isoformat(),
            "ip": _kept_ip(visit, settings),
            "user_agent": visit.user_agent,
        }
        return evidence["form"]["source"], evidence

    interval = timedelta(hours=settings.mail_interval_hours)
    request, grant = await store.confirm(request_id, compose, interval)
    if request is None:
        return Confirmed("unknown")
    if grant is not None:
        if confirmer is not None and request.email is not None:
            await _welcome(store, confirmer, request, request.email)
        return Confirmed("confirmed", request, grant)
    if request.state == "confirmed":
        return Confirmed("already", request)
    if request.expired:
        return Confirmed("expired", request)
    return Confirmed("blocked", request)


async def _welcome(
    store: FormStore, confirmer: Confirmer, request: PendingRequest, to: str
) -> None:
    slug = ((request.evidence or {}).get("form") or {}).get("slug")
    form = await store.form(slug) if isinstance(slug, str) else None
    if form is None or not form.welcome:
        return
    try:
        await confirmer.welcome(form.welcome, request, to)
    except Exception:
        # The consent is recorded and committed; a welcome that could not be queued is
        # logged, never a reason to tell the person their confirmation failed.
        log.exception("welcome message of sign-up %d not queued", request.id)


async def expire_requests(store: FormStore) -> dict[str, int]:
    """Delete requests past their time; pending ones deleted per form slug (for the metric)."""
    return await store.expire()
