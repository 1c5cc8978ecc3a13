"""The campaign file (`mailer campaign create campaign.toml`): parse and validate it.

The file's fields and their meaning are CampaignDefinition's (mailer/campaigns/definition.py).
Every problem names its field (`sender.postal_address: required`); all are reported at once.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from datetime import date, datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment

from mailer.campaigns.definition import (
    CampaignDefinition,
    CampaignFileError,
    Reputation,
    Sample,
    Sender,
    Throttle,
)
from mailer.campaigns.field_checker import CONTROL, FieldChecker
from mailer.core import segment, segment_parser
from mailer.core.addresses import InvalidAddress, normalise
from mailer.core.consent import Channel, Policy
from mailer.core.footer import SUPPORTED_LOCALES

__all__ = ["from_mapping", "load", "parse", "template_exists"]

_SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")  # the campaigns/topics CHECK constraint
_TEMPLATE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")  # a bare name: no path tricks
_KINDS = ("regular", "repermission")
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


def load(path: Path, templates_dir: Path) -> CampaignDefinition:
    """Read and validate a campaign file; errors name the file and each field."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CampaignFileError(str(path), [f"cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:  # TOML is UTF-8 (TOML 1.0): say where it is not
        line = exc.object[: exc.start].count(b"\n") + 1
        bad = exc.object[exc.start : exc.end + 3]
        raise CampaignFileError(
            str(path), [f"line {line}: not UTF-8 text (bytes {bad!r}); save the file as UTF-8"]
        ) from None
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
    check = FieldChecker()
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


def _locales(check: FieldChecker, value: Any) -> tuple[str, ...]:
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


def _subject(check: FieldChecker, value: Any, locales: tuple[str, ...]) -> dict[str, str]:
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
        elif CONTROL.search(source):
            check.problem(name, "must be one line without control characters")
        else:
            try:
                SandboxedEnvironment().parse(source)
            except TemplateSyntaxError as exc:
                check.problem(name, f"template syntax error: {exc.message}")
            subjects[locale] = source
    return subjects


def _consent_text(check: FieldChecker, raw: Mapping[str, Any], kind: str) -> str | None:
    if kind != "repermission" and raw.get("consent_text") in (None, ""):
        return None
    # A request for consent must state what is agreed to; the tracker shows and records it.
    return check.text(raw, "consent_text", header=False) or None


def _sender(check: FieldChecker, value: Any) -> Sender:
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


def _timezone(check: FieldChecker, value: Any) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        check.problem("timezone", f"{value!r} is not an IANA time zone (e.g. America/Toronto)")
        return "UTC"
    return str(value)


def _channel(check: FieldChecker, value: Any) -> Channel:
    channel = check.choice({"channel": value}, "channel", Channel, Channel.EMAIL)
    if channel is not Channel.EMAIL:
        check.problem("channel", f"{channel} campaigns are not supported; only email is sent")
    return channel


def _segment(check: FieldChecker, value: Any) -> str | None:
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


def _schedule(check: FieldChecker, value: Any) -> datetime | None:
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


def _throttle(check: FieldChecker, value: Any) -> Throttle:
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


def _reputation(check: FieldChecker, value: Any) -> Reputation:
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


def _sample(check: FieldChecker, value: Any) -> Sample:
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
