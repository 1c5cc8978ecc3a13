"""The values a classification produces: what a message is, what names its delivery, what it
said. Shared by the classifiers of each kind (dsn, arf, replies) and the ESP mappers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Kind(StrEnum):
    """What a message is; the value is inbound_messages.kind and the metric label."""

    DSN_HARD = "dsn_hard"
    DSN_SOFT = "dsn_soft"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"
    AUTOREPLY = "autoreply"
    UNMATCHED = "unmatched"


@dataclass(frozen=True, slots=True)
class Envelope:
    """Who the message was for and from, as SMTP said (or as an ingested file's headers say)."""

    mail_from: str | None
    rcpt_to: Sequence[str]


@dataclass(frozen=True, slots=True)
class References:
    """What in the message may name the delivery, strongest first; the store resolves them."""

    token_delivery_id: int | None = None
    token_where: str | None = None  # rcpt, return-path, list-unsubscribe…
    message_id: str | None = None  # the original's Message-ID, as sent
    message_id_delivery_id: int | None = None  # the delivery id it claims
    recipient: str | None = None  # normalised address of the recipient reported


@dataclass(frozen=True)
class Classification:
    """The verdict on one message: its kind, what names its delivery, what it said."""

    kind: Kind
    refs: References = field(default_factory=References)
    # Status, action, diagnostic, feedback type, reason unmatched: kept with the message.
    detail: dict[str, Any] = field(default_factory=dict)
    # A hard bounce whose status says the address is dead (5.1.x, 5.2.1): suppress it.
    dead_address: bool = False
    # Tokens that failed verification (forged, or from a retired key): counted, never used.
    bad_tokens: int = 0


# The references of a report's returned original, given the recipient the report names, and
# how many forged tokens it holds: the classifier's, which knows our keys.
RefsOf = Callable[[str | None], tuple[References, int]]
