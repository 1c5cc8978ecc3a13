"""The campaign file (`mailer campaign create campaign.toml`): parse and validate it.

Re-permission campaigns (`kind = "repermission"`): under CASL a request for consent is
itself a commercial electronic message, so it may only be sent while a valid implied
consent still exists. Its audience is the contacts whose implied consent is valid at send
time and lapses within `repermission_window_days` (default 60): never those already
lapsed, never those holding express consent (nothing to ask). `consent_text` is the exact
wording the message and the tracker's "I agree" page show and the ledger's evidence keeps.

```toml
slug = "service-reminder-2024-10"     # [a-z0-9][a-z0-9_-]{0,62}
name = "Service reminder, October"
topic = "service"                      # an existing topic slug (the caller checks the DB)
template = "service_reminder"          # templates/<template>.html must exist
subject = "Your {{ attributes.vehicle }} is due"   # or a table: [subject] fr = "…" en = "…"
from_name = "Garage Tremblay Automobiles"
from_address = "service@garage-tremblay.example"
reply_to = "rendez-vous@garage-tremblay.example"   # optional
locales = ["fr", "en"]                 # first = fallback for contacts in other languages
timezone = "America/Toronto"           # dates in the footer; default UTC
channel = "email"                      # only email is sent by this engine
policy = "casl"                        # casl | can_spam | gdpr
kind = "regular"                       # regular | repermission
repermission_window_days = 60          # repermission: ask those whose implied consent lapses
                                       # within this many days of the send (default 60)
consent_text = "Yes, …"                # repermission: the exact wording agreed to (required)
tracking = true
segment = "attributes.make = toyota"   # optional audience filter (mailer.core.segment)
active_within_months = 24              # optional
schedule = 2024-10-01T09:00:00-04:00   # optional, with an offset

[sender]                               # CASL s.6(2)(b): who sends and how to reach them
business_name = "Garage Tremblay Automobiles"
postal_address = "2450, boulevard Laurier, Québec (Québec)  G1V 2L1"
phone = "+1 418-555-0142"              # at least one of phone, email, web

[throttle]                             # optional overrides
rate = 20.0
concurrency = 4

[reputation]                           # optional: the guard's thresholds for this campaign
max_hard_bounce_rate = 0.05            # pause past 5 % hard bounces (default [guard])
max_complaint_rate = 0.001             # pause past 0.1 % complaints

[sample]                               # optional: the contact lint and previews render for
name = "Marie Tremblay"
attributes = { vehicle = "Toyota RAV4 2019" }
```

Every problem names its field (`sender.postal_address: required`); all are reported at once.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment

from mailer.core import segment, segment_parser
from mailer.core.addresses import InvalidAddress, normalise
from mailer.core.consent import Channel, Policy
from mailer.core.footer import SUPPORTED_LOCALES

__all__ = [
    "CampaignDefinition",
    "CampaignFileError",
    "Reputation",
    "Sample",
    "Sender",
    "Throttle",
    "from_mapping",
    "load",
    "parse",
    "template_exists",
]

_SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")  # the campaigns/topics CHECK constraint
_TEMPLATE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")  # a bare name: no path tricks
# Header values from the file: CR/LF would inject headers, other controls break parsers.
_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")
_KINDS = ("regular", "repermission")
_E = TypeVar("_E", Policy, Channel)
_TOP_KEYS = frozenset(
    {
        "slug",
        "name",
        "topic",
        "template",
        "subject",
        "from_name",
        "from_address",
        "reply_to",
        "locales",
        "timezone",
        "channel",
        "policy",
        "kind",
        "repermission_window_days",
        "consent_text",
        "tracking",
        "segment",
        "active_within_months",
        "schedule",
        "sender",
        "throttle",
        "reputation",
        "sample",
    }
)
_SENDER_KEYS = frozenset({"business_name", "postal_address", "phone", "email", "web"})
_THROTTLE_KEYS = frozenset({"rate", "concurrency"})
_REPUTATION_KEYS = frozenset({"max_hard_bounce_rate", "max_complaint_rate"})
_SAMPLE_KEYS = frozenset({"name", "email", "attributes"})


class CampaignFileError(ValueError):
    """The campaign file is invalid; `problems` lists each one as `field: reason`."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(f"{source}:\n  " + "\n  ".join(problems))
        self.source = source
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Sender:
    """The sender identification every message must carry."""

    business_name: str
    postal_address: str
    phone: str | None = None
    email: str | None = None
    web: str | None = None


@dataclass(frozen=True, slots=True)
class Throttle:
    """Per-campaign overrides of the global sending rate and concurrency."""

    rate: float | None = None
    concurrency: int | None = None


@dataclass(frozen=True, slots=True)
class Reputation:
    """Per-campaign thresholds of the reputation guard (default: the [guard] settings)."""

    max_hard_bounce_rate: float | None = None
    max_complaint_rate: float | None = None


@dataclass(frozen=True, slots=True)
class Sample:
    """The made-up contact that lint and previews render for."""

    name: str = "Alex Sample"
    email: str = "alex.sample@example.com"
    attributes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CampaignDefinition:
    """A validated campaign file; `to_json()` is what campaigns.definition stores."""

    slug: str
    name: str
    topic: str
    template: str
    subject: Mapping[str, str]  # locale -> Jinja source (plain text, no autoescape)
    from_name: str
    from_address: str
    reply_to: str | None
    sender: Sender
    locales: tuple[str, ...] = ("en",)
    timezone: str = "UTC"
    channel: Channel = Channel.EMAIL
    policy: Policy = Policy.CASL
    kind: str = "regular"
    repermission_window_days: int = 60
    consent_text: str | None = None  # what an "I agree" records, word for word
    tracking: bool = True
    segment: str | None = None
    active_within_months: int | None = None
    schedule: datetime | None = None
    throttle: Throttle = field(default_factory=Throttle)
    reputation: Reputation = field(default_factory=Reputation)
    sample: Sample = field(default_factory=Sample)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict in the campaign file's own shape (parse() reads it back)."""
        out: dict[str, Any] = {
            "slug": self.slug,
            "name": self.name,
            "topic": self.topic,
            "template": self.template,
            "subject": dict(self.subject),
            "from_name": self.from_name,
            "from_address": self.from_address,
            "locales": list(self.locales),
            "timezone": self.timezone,
            "channel": str(self.channel),
            "policy": str(self.policy),
            "kind": self.kind,
            "repermission_window_days": self.repermission_window_days,
            "tracking": self.tracking,
            "sender": {k: v for k, v in _sender_items(self.sender) if v is not None},
            "sample": {
                "name": self.sample.name,
                "email": self.sample.email,
                "attributes": dict(self.sample.attributes),
            },
        }
        optional = {
            "reply_to": self.reply_to,
            "segment": self.segment,
            "active_within_months": self.active_within_months,
            "consent_text": self.consent_text,
            "schedule": self.schedule.isoformat() if self.schedule else None,
        }
        out.update({k: v for k, v in optional.items() if v is not None})
        throttle = {"rate": self.throttle.rate, "concurrency": self.throttle.concurrency}
        if any(v is not None for v in throttle.values()):
            out["throttle"] = {k: v for k, v in throttle.items() if v is not None}
        reputation = {
            "max_hard_bounce_rate": self.reputation.max_hard_bounce_rate,
            "max_complaint_rate": self.reputation.max_complaint_rate,
        }
        if any(v is not None for v in reputation.values()):
            out["reputation"] = {k: v for k, v in reputation.items() if v is not None}
        return out


def load(path: Path, templates_dir: Path) -> CampaignDefinition:
    """Read and validate a campaign file; errors name the file and each field."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CampaignFileError(str(path), [f"cannot read: {exc.strerror}"]) from None
    return parse(text, templates_dir=templates_dir, source=str(path))


def parse(
    text: str, *, templates_dir: Path | None, source: str = "campaign file"
) -> CampaignDefinition:
    """Validate campaign TOML; `templates_dir=None` skips the template-exists check."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CampaignFileError(source, [f"not valid TOML: {exc}"]) from None
    return from_mapping(raw, templates_dir=templates_dir, source=source)


def from_mapping(
    raw: Mapping[str, Any], *, templates_dir: Path | None, source: str = "campaign definition"
) -> CampaignDefinition:
    """Validate an already-decoded campaign (TOML or campaigns.definition JSON)."""
    check = _Checker()
    check.unknown(raw, _TOP_KEYS, "")
    slug = check.pattern(raw, "slug", _SLUG, "lower-case letters, digits, - and _")
    topic = check.pattern(raw, "topic", _SLUG, "an existing topic slug")
    template = check.pattern(raw, "template", _TEMPLATE_NAME, "a template name without suffix")
    # Only a valid bare name is looked up: "../etc/passwd" never reaches the file system.
    named = bool(template) and _TEMPLATE_NAME.fullmatch(template) is not None
    if named and templates_dir is not None and not template_exists(templates_dir, template):
        check.problem("template", f"unknown template: {templates_dir / (template + '.html')}")
    locales = _locales(check, raw.get("locales", ["en"]))
    definition = CampaignDefinition(
        slug=slug,
        name=check.text(raw, "name", header=False),
        topic=topic,
        template=template,
        subject=_subject(check, raw.get("subject"), locales),
        from_name=check.text(raw, "from_name"),
        from_address=check.address(raw, "from_address", required=True) or "",
        reply_to=check.address(raw, "reply_to", required=False),
        sender=_sender(check, raw.get("sender")),
        locales=locales,
        timezone=_timezone(check, raw.get("timezone", "UTC")),
        channel=_channel(check, raw.get("channel", "email")),
        policy=check.choice(raw, "policy", Policy, Policy.CASL),
        kind=(kind := check.choice_text(raw, "kind", _KINDS, "regular")),
        repermission_window_days=check.positive_int(raw, "repermission_window_days") or 60,
        consent_text=_consent_text(check, raw, kind),
        tracking=check.boolean(raw, "tracking", True),
        segment=_segment(check, raw.get("segment")),
        active_within_months=check.positive_int(raw, "active_within_months"),
        schedule=_schedule(check, raw.get("schedule")),
        throttle=_throttle(check, raw.get("throttle", {})),
        reputation=_reputation(check, raw.get("reputation", {})),
        sample=_sample(check, raw.get("sample", {})),
    )
    if check.problems:
        raise CampaignFileError(source, check.problems)
    return definition


def template_exists(templates_dir: Path, name: str) -> bool:
    """True when templates/<name>.html exists (the HTML part is the one every campaign needs)."""
    return bool(_TEMPLATE_NAME.fullmatch(name)) and (templates_dir / f"{name}.html").is_file()


class _Checker:
    """Collects `field: reason` problems so the operator sees them all in one go."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def problem(self, name: str, reason: str) -> None:
        self.problems.append(f"{name}: {reason}")

    def unknown(self, raw: Mapping[str, Any], allowed: frozenset[str], prefix: str) -> None:
        # A typo must not silently fall back to a default (same rule as mailer.core.settings).
        for key in sorted(set(raw) - allowed):
            self.problem(f"{prefix}{key}", "unknown field")

    def text(
        self, raw: Mapping[str, Any], key: str, *, prefix: str = "", header: bool = True
    ) -> str:
        value = raw.get(key)
        name = f"{prefix}{key}"
        if value is None or (isinstance(value, str) and not value.strip()):
            self.problem(name, "required")
            return ""
        if not isinstance(value, str):
            self.problem(name, f"expected a string, got {value!r}")
            return ""
        if header and _CONTROL.search(value):
            self.problem(name, "must not contain line breaks or control characters")
        return value.strip()

    def optional_text(self, raw: Mapping[str, Any], key: str, prefix: str) -> str | None:
        if raw.get(key) in (None, ""):
            return None
        return self.text(raw, key, prefix=prefix) or None

    def pattern(self, raw: Mapping[str, Any], key: str, regex: re.Pattern[str], hint: str) -> str:
        value = self.text(raw, key)
        if value and not regex.fullmatch(value):
            self.problem(key, f"{value!r} is not valid ({hint})")
        return value

    def address(self, raw: Mapping[str, Any], key: str, *, required: bool) -> str | None:
        if not required and raw.get(key) in (None, ""):
            return None
        value = self.text(raw, key)
        if not value:
            return None
        try:
            return normalise(value)
        except InvalidAddress as exc:
            self.problem(key, f"not a valid address: {exc}")
            return None

    def boolean(self, raw: Mapping[str, Any], key: str, default: bool) -> bool:
        value = raw.get(key, default)
        if not isinstance(value, bool):
            self.problem(key, f"expected true or false, got {value!r}")
            return default
        return value

    def positive_int(self, raw: Mapping[str, Any], key: str, prefix: str = "") -> int | None:
        value = raw.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            self.problem(f"{prefix}{key}", f"expected a positive integer, got {value!r}")
            return None
        return value

    def choice(self, raw: Mapping[str, Any], key: str, enum: type[_E], default: _E) -> _E:
        value = raw.get(key, str(default))
        try:
            return enum(value)
        except ValueError:
            allowed = ", ".join(member.value for member in enum)
            self.problem(key, f"{value!r} is not one of {allowed}")
            return default

    def choice_text(
        self, raw: Mapping[str, Any], key: str, allowed: tuple[str, ...], default: str
    ) -> str:
        value = raw.get(key, default)
        if value not in allowed:
            self.problem(key, f"{value!r} is not one of {', '.join(allowed)}")
            return default
        return str(value)


def _locales(check: _Checker, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        check.problem("locales", f"expected a non-empty list of locale codes, got {value!r}")
        return ("en",)
    locales = tuple(v.strip().lower() for v in value)
    for locale in locales:
        # The footer's consent sentence must exist in every language we may send in.
        if locale not in SUPPORTED_LOCALES:
            check.problem(
                "locales",
                f"{locale!r} has no footer wording (supported: {', '.join(SUPPORTED_LOCALES)})",
            )
    if len(set(locales)) != len(locales):
        check.problem("locales", "a locale is listed twice")
    return locales


def _subject(check: _Checker, value: Any, locales: tuple[str, ...]) -> dict[str, str]:
    if isinstance(value, str):
        value = dict.fromkeys(locales, value)
    if not isinstance(value, Mapping) or not value:
        check.problem("subject", "required (a string, or a table with one line per locale)")
        return {}
    subjects: dict[str, str] = {}
    for locale in locales:
        if locale not in value:
            check.problem(f"subject.{locale}", "required: every listed locale needs a subject")
    for locale, source in value.items():
        name = f"subject.{locale}"
        if locale not in locales:
            check.problem(name, f"locale {locale!r} is not in locales")
        elif not isinstance(source, str) or not source.strip():
            check.problem(name, "expected a non-empty string")
        elif _CONTROL.search(source):
            check.problem(name, "must be one line without control characters")
        else:
            try:
                SandboxedEnvironment().parse(source)
            except TemplateSyntaxError as exc:
                check.problem(name, f"template syntax error: {exc.message}")
            subjects[locale] = source
    return subjects


def _consent_text(check: _Checker, raw: Mapping[str, Any], kind: str) -> str | None:
    if kind != "repermission" and raw.get("consent_text") in (None, ""):
        return None
    # A request for consent must state what is agreed to; the tracker shows and records it.
    return check.text(raw, "consent_text", header=False) or None


def _sender(check: _Checker, value: Any) -> Sender:
    if not isinstance(value, Mapping):
        check.problem("sender", "required: business_name, postal_address and a contact method")
        return Sender("", "")
    check.unknown(value, _SENDER_KEYS, "sender.")
    sender = Sender(
        business_name=check.text(value, "business_name", prefix="sender."),
        postal_address=check.text(value, "postal_address", prefix="sender."),
        phone=check.optional_text(value, "phone", "sender."),
        email=check.optional_text(value, "email", "sender."),
        web=check.optional_text(value, "web", "sender."),
    )
    # CASL regulations s.2(1)(c): a mailing address and one of phone, email or web address.
    if not (sender.phone or sender.email or sender.web):
        check.problem("sender", "one contact method required (phone, email or web)")
    if sender.email:
        try:
            normalise(sender.email)
        except InvalidAddress as exc:
            check.problem("sender.email", f"not a valid address: {exc}")
    if sender.web and not sender.web.startswith(("https://", "http://")):
        check.problem("sender.web", "expected an http(s):// URL")
    return sender


def _timezone(check: _Checker, value: Any) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        check.problem("timezone", f"{value!r} is not an IANA time zone (e.g. America/Toronto)")
        return "UTC"
    return str(value)


def _channel(check: _Checker, value: Any) -> Channel:
    channel = check.choice({"channel": value}, "channel", Channel, Channel.EMAIL)
    if channel is not Channel.EMAIL:
        check.problem("channel", f"{channel} campaigns are not supported; only email is sent")
    return channel


def _segment(check: _Checker, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        check.problem("segment", f"expected a string, got {value!r}")
        return None
    try:
        segment_parser.parse(value)
    except segment.SegmentError as exc:
        check.problem("segment", str(exc))
    return value


def _schedule(check: _Checker, value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            check.problem("schedule", f"{value!r} is not an ISO 8601 date-time")
            return None
    if not isinstance(value, datetime) or value.tzinfo is None:
        check.problem(
            "schedule", "expected a date-time with an offset, e.g. 2024-10-01T09:00-04:00"
        )
        return None
    return value


def _throttle(check: _Checker, value: Any) -> Throttle:
    if not isinstance(value, Mapping):
        check.problem("throttle", "expected a table")
        return Throttle()
    check.unknown(value, _THROTTLE_KEYS, "throttle.")
    rate = value.get("rate")
    if rate is not None and (
        isinstance(rate, bool) or not isinstance(rate, int | float) or rate <= 0
    ):
        check.problem("throttle.rate", f"expected a positive number, got {rate!r}")
        rate = None
    concurrency = check.positive_int(value, "concurrency", "throttle.")
    return Throttle(None if rate is None else float(rate), concurrency)


def _reputation(check: _Checker, value: Any) -> Reputation:
    if not isinstance(value, Mapping):
        check.problem("reputation", "expected a table")
        return Reputation()
    check.unknown(value, _REPUTATION_KEYS, "reputation.")
    rates: list[float | None] = []
    for key in ("max_hard_bounce_rate", "max_complaint_rate"):
        rate = value.get(key)
        if rate is not None and (
            isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate <= 1
        ):
            check.problem(f"reputation.{key}", f"expected a share in (0, 1], got {rate!r}")
            rate = None
        rates.append(None if rate is None else float(rate))
    return Reputation(rates[0], rates[1])


def _sample(check: _Checker, value: Any) -> Sample:
    if not isinstance(value, Mapping):
        check.problem("sample", "expected a table")
        return Sample()
    check.unknown(value, _SAMPLE_KEYS, "sample.")
    attributes = value.get("attributes", {})
    if not isinstance(attributes, Mapping):
        check.problem("sample.attributes", "expected a table")
        attributes = {}
    default = Sample()
    name = value.get("name", default.name)
    email = value.get("email", default.email)
    if not isinstance(name, str) or not isinstance(email, str):
        check.problem("sample", "name and email must be strings")
        return default
    return Sample(name, email, _jsonable(attributes))


def _jsonable(value: Any) -> Any:
    # TOML has dates and times; render inputs are JSON, so they become ISO strings here.
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return value


def _sender_items(sender: Sender) -> list[tuple[str, str | None]]:
    return [
        ("business_name", sender.business_name),
        ("postal_address", sender.postal_address),
        ("phone", sender.phone),
        ("email", sender.email),
        ("web", sender.web),
    ]
