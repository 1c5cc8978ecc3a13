"""ENQUEUE: accept one transactional message durably, then answer. The CLI and the API call this.

    result = await enqueue(store, template="parts_received", to="a@example.com",
                           data={"part": "…"}, idempotency_key="dms-4411")

`store` is a TransactionalStore (it knows the templates folder, `transactional.templates_dir`).
What the call guarantees when it returns an `Enqueued`:

- The message's row (template version, data, recipient, basis, key, and the rule that let it
  through or refused it) is COMMITTED: a crash after the return loses nothing, and the
  lanes are woken (NOTIFY at commit).
- `duplicate=True`: a message with this idempotency key existed already; `message_id` is that
  first message's, nothing new was written or will be sent. Two identical requests at once
  give one message (the second waits on the key's unique index for the first to commit).
- `refusal` set: the message was refused (row kept, status `refused`, never sent): `reason` is
  the rule (erased, hard_bounced, complained, or for a commercial template any consent
  rule), `detail` its words. Refusal is an answer, not an exception: a retry with the same
  key gives the same answer.
- `note`: an exempt message to a person who opted out of commercial mail says so (e.g.
  "delivered despite: unsubscribed from this channel (CASL s.6(6)(c) …)").
- An unknown recipient gets a contact row, with NO consent recorded.

`await status(store, message_id)` is the other operation the API exposes: the message as
`mailer transactional show` prints it (store.MessageRecord), or None.

Bad requests raise `EnqueueError` (nothing written), whose `field` names what is wrong
(`template`, `to`, `data`, `idempotency_key`, `locale`) and whose message says why; an HTTP
face maps it to 422 (404 for `UnknownTemplate`, 409 for `IdempotencyConflict`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mailer.campaigns.definition import CampaignFileError
from mailer.campaigns.render import MessageError
from mailer.campaigns.render_inputs import CampaignFields, RenderInputs, resolve_locale
from mailer.campaigns.template_set import TemplateFileError, TemplateSet
from mailer.contacts.store import ContactStore
from mailer.core.addresses import InvalidAddress, address_hash, domain_of, mailable, normalise
from mailer.core.consent import Channel, Policy, Verdict
from mailer.core.eligibility import AudienceSpec, ContactFacts, evaluate
from mailer.core.footer import SUPPORTED_LOCALES
from mailer.transactional import template as template_file
from mailer.transactional.basis import Basis, Decision, decide
from mailer.transactional.compose import TransactionalRenderer, reproduce_message
from mailer.transactional.store import (
    AddressFacts,
    KnownMessage,
    MessageRecord,
    NewMessage,
    TransactionalStore,
)
from mailer.transactional.template import TransactionalTemplate

__all__ = [
    "EnqueueError",
    "Enqueued",
    "IdempotencyConflict",
    "Judged",
    "Refusal",
    "UnknownTemplate",
    "enqueue",
    "judge",
    "load_template",
    "status",
]

_MAX_KEY = 200
_MAX_DATA_BYTES = 64_000  # a notice's values, not an attachment store


class EnqueueError(ValueError):
    """The request is invalid; nothing was written. `field` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class UnknownTemplate(EnqueueError):
    """No such transactional template (or its file is invalid)."""


class IdempotencyConflict(EnqueueError):
    """The key was used before for another template or recipient."""


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str  # a mailer.core.consent.Reason value
    detail: str


@dataclass(frozen=True, slots=True)
class Enqueued:
    message_id: int
    duplicate: bool = False
    refusal: Refusal | None = None
    note: str | None = None

    @property
    def accepted(self) -> bool:
        return self.refusal is None


@dataclass
class _Compiled:
    template: TransactionalTemplate
    renderer: TransactionalRenderer


# Per (folder, template): the files' stamps when read, and the template compiled from them.
_compiled: dict[tuple[Path, str], tuple[tuple[tuple[str, int, int], ...], _Compiled]] = {}


def load_template(templates_dir: Path, name: str) -> TransactionalTemplate:
    """The template as its files stand now; UnknownTemplate names the file and field."""
    return _load(templates_dir, name).template


def _stamp(
    templates_dir: Path, name: str, files: Iterable[str]
) -> tuple[tuple[str, int, int], ...]:
    """(file, mtime, size) of the template's TOML, its files, and any new `<name>.*` variant."""
    paths = {templates_dir / f"{name}.toml", *(templates_dir / f for f in files)}
    paths.update(templates_dir.glob(f"{name}.*"))
    stamps = []
    for path in sorted(paths):
        try:
            stat = path.stat()
        except OSError:
            return ()  # a file went away: read everything again (and report it)
        stamps.append((path.name, stat.st_mtime_ns, stat.st_size))
    return tuple(stamps)


def _load(templates_dir: Path, name: str) -> _Compiled:
    # Reading, validating and compiling a template costs ~5-15 ms of CPU; an API serving
    # notices does it once per change of its files (a few stat calls per request otherwise).
    cached = _compiled.get((templates_dir, name))
    if cached is not None:
        stamps, compiled = cached
        if stamps and stamps == _stamp(templates_dir, name, compiled.template.files.files):
            return compiled
    try:
        loaded = template_file.load(templates_dir, name)
    except (TemplateFileError, CampaignFileError) as exc:
        raise UnknownTemplate("template", str(exc)) from None
    compiled = _Compiled(
        loaded, TransactionalRenderer(loaded.files, loaded.basis, max_output=1_000_000)
    )
    _compiled[templates_dir, name] = (_stamp(templates_dir, name, loaded.files.files), compiled)
    return compiled


async def enqueue(
    store: TransactionalStore,
    *,
    template: str,
    to: str,
    data: Mapping[str, object],
    idempotency_key: str | None = None,
    locale: str | None = None,
) -> Enqueued:
    """Commit one transactional message (or its refusal) and say which; see the module doc."""
    if idempotency_key is not None and not 0 < len(idempotency_key) <= _MAX_KEY:
        raise EnqueueError("idempotency_key", f"1 to {_MAX_KEY} characters")
    try:
        email = normalise(to)
    except InvalidAddress as exc:
        raise EnqueueError("to", f"{to!r} is not a valid address: {exc}") from None
    if not mailable(email):  # accepted now, the lane would only skip it (invalid_address)
        raise EnqueueError(
            "to", f"{to!r}: a non-ASCII local part needs SMTPUTF8, which the mailer does not send"
        )
    if idempotency_key is not None:
        # The fast path of a retry: the first answer, without loading anything.
        known = await store.message_by_key(idempotency_key)
        if known is not None:
            return _again(known, template, email)
    if locale is not None and locale not in SUPPORTED_LOCALES:
        raise EnqueueError("locale", f"{locale!r}: expected one of {', '.join(SUPPORTED_LOCALES)}")
    compiled = _load(store.templates_dir, template)
    tpl = compiled.template
    values = _checked_data(data)
    _trial_render(compiled, email, values, locale)
    email_hash = address_hash(email)
    judged = await judge(store, tpl, email)
    verdict, decision = judged.verdict, judged.decision
    erased = decision.refused is not None and decision.refused.value == "erased"
    consent = None
    if verdict is not None and verdict.consent is not None:
        c = verdict.consent
        assert c.kind is not None
        consent = (c.id, c.kind.value, c.source, c.obtained_at, c.obtained_date_only)
    new = NewMessage(
        template=tpl.name,
        version_name=f"transactional/{tpl.name}",
        version_sha256=bytes.fromhex(tpl.files.sha256()),
        version_files=tpl.files.files,
        definition=tpl.to_json(),
        basis=tpl.basis.value,
        # An erased address is never written back, not even into a refused message.
        email=None if erased else email,
        contact_id=None if erased else judged.facts.contact_id,
        email_hash=email_hash,
        domain=None if erased else domain_of(email),
        locale=locale,
        data={} if erased else values,
        idempotency_key=idempotency_key,
        status="queued" if decision.allowed else "refused",
        refusal=None if decision.allowed else _refusal_text(decision),
        note=decision.note(),
        consent=consent,
    )
    message_id, duplicate = await store.insert(new)
    if duplicate:
        assert idempotency_key is not None
        known = await store.message_by_key(idempotency_key)
        assert known is not None
        return _again(known, template, email)
    refusal = None if decision.allowed else Refusal(str(decision.refused), decision.detail)
    return Enqueued(message_id, False, refusal, decision.note())


@dataclass(frozen=True, slots=True)
class Judged:
    """The rules' answer for one address and template, and what they read."""

    decision: Decision
    facts: AddressFacts
    verdict: Verdict | None  # the consent rules' verdict, for a commercial template


async def judge(store: TransactionalStore, tpl: TransactionalTemplate, email: str) -> Judged:
    """May a message of this template go to `email` now? (enqueue and `contacts explain`)."""
    facts = await store.address_facts(email, address_hash(email))
    verdict = None
    if tpl.basis is Basis.COMMERCIAL:
        verdict = await _commercial_verdict(store, tpl, email, facts)
    decision = decide(
        tpl.basis,
        erased=facts.erased,
        suppressions=facts.suppressions,
        channel_enabled=facts.email_enabled,
        commercial_verdict=verdict,
    )
    return Judged(decision, facts, verdict)


async def status(store: TransactionalStore, message_id: int) -> MessageRecord | None:
    """One message's state, rule, SMTP reply and archive (None: no such message)."""
    return await store.message(message_id)


def archive_reproduces(record: MessageRecord) -> bool | None:
    """Whether the archive renders the very bytes sent (their SHA-256); None before a send."""
    if record.render_inputs is None or record.sha256 is None:
        return None
    files = TemplateSet(record.template, dict(record.files))
    again = reproduce_message(files, Basis(record.basis), record.render_inputs)
    return hashlib.sha256(again).digest() == bytes(record.sha256)


def _refusal_text(decision: Decision) -> str:
    return f"{decision.refused}: {decision.detail}"


def _again(known: KnownMessage, template: str, email: str) -> Enqueued:
    """The answer to a retried request: the first message, checked to be the same request."""
    if known.template != template or (known.email is not None and known.email != email):
        raise IdempotencyConflict(
            "idempotency_key",
            f"already used for message {known.id} (another template or recipient)",
        )
    refusal = None
    if known.status == "refused" and known.refusal:
        reason, _, detail = known.refusal.partition(": ")
        refusal = Refusal(reason, detail)
    return Enqueued(known.id, True, refusal)


def _checked_data(data: Mapping[str, object]) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise EnqueueError("data", "expected a JSON object")
    try:
        encoded = json.dumps(data, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise EnqueueError("data", f"not JSON: {exc}") from None
    if len(encoded.encode()) > _MAX_DATA_BYTES:
        raise EnqueueError("data", f"over {_MAX_DATA_BYTES:,} bytes of JSON")
    decoded: dict[str, Any] = json.loads(encoded)
    return decoded


def _trial_render(
    compiled: _Compiled, email: str, data: Mapping[str, Any], locale: str | None
) -> None:
    """Render once now, so that data the template needs but lacks is the caller's error, now."""
    definition = compiled.template.definition
    chosen = resolve_locale(locale or definition.locales[0], definition.locales)
    inputs = RenderInputs(
        delivery_id=0,
        email=email,
        name=None,
        locale=chosen,
        attributes=data,
        consent_kind=None,
        consent_source="",
        consent_obtained_at=None,
        campaign=CampaignFields.from_definition(definition),
        unsubscribe_url="https://tracker.invalid/u/trial",
        preferences_url="https://tracker.invalid/p/trial",
    )
    try:
        compiled.renderer.render(inputs)
    except MessageError as exc:
        raise EnqueueError(
            "data", f"template {compiled.template.name} does not render: {exc}"
        ) from None


async def _commercial_verdict(
    store: TransactionalStore, tpl: TransactionalTemplate, email: str, facts: AddressFacts
) -> Verdict:
    """A commercial template goes through the campaign rules (DESIGN "Consent")."""
    definition = tpl.definition
    topic = await store.topic_for_rules(definition.topic)
    if topic is None:
        raise UnknownTemplate("template", f"{tpl.name}: topic {definition.topic!r} does not exist")
    record = await ContactStore(store.pool).contact_rule_inputs(email)
    now = datetime.now(UTC)
    spec = AudienceSpec(Channel.EMAIL, topic[0], topic[1], Policy(definition.policy), now)
    if record is None:
        ledger: tuple[Any, ...] = ()
        contact = ContactFacts(
            erased=facts.erased, last_activity_at=None, channel_prefs={}, topic_prefs={}
        )
    else:
        ledger = record.ledger
        contact = ContactFacts(
            erased=record.erased,
            last_activity_at=record.last_activity_at,
            channel_prefs=record.channel_prefs,
            topic_prefs=record.topic_prefs,
        )
    return evaluate(contact, ledger, facts.suppressions, spec)
