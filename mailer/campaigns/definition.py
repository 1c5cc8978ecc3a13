"""A campaign as its file (`mailer campaign create campaign.toml`) states it: the values.

mailer/campaigns/campaign_file.py parses and validates the file into a CampaignDefinition;
`to_json()` writes it back in the file's own shape (what campaigns.definition stores).

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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mailer.core.consent import Channel, Policy

__all__ = [
    "CampaignDefinition",
    "CampaignFileError",
    "Reputation",
    "Sample",
    "Sender",
    "Throttle",
]


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


def _sender_items(sender: Sender) -> list[tuple[str, str | None]]:
    return [
        ("business_name", sender.business_name),
        ("postal_address", sender.postal_address),
        ("phone", sender.phone),
        ("email", sender.email),
        ("web", sender.web),
    ]
