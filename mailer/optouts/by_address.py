"""An opt-out told by another system or an operator: by address, with its source and proof.

`mailer contacts opt-out` and POST /api/v1/contacts/{email}/opt-out call this; it
withdraws through the same statements as the tracker and inbound (OptOutStore), in the
caller's transaction, so the ledger rows, suppressions and the webhook event commit
together.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from mailer.core.addresses import InvalidAddress, normalise
from mailer.optouts.rules import DIGITAL
from mailer.optouts.store import Conn, OptOutStore, Withdrawal


class OptOutRefused(ValueError):
    """The request names no one we hold, or an unknown channel or topic."""

    def __init__(self, pointer: str, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.pointer = pointer
        self.missing = missing  # the address is not a contact (404, not 422)


@dataclass(frozen=True, slots=True)
class OptOutResult:
    contact_id: int
    email: str
    channels: list[str]
    topics: list[str]
    changed: bool  # False: already in force (the request is idempotent)


async def opt_out_address(
    conn: Conn,
    address: str,
    *,
    channels: Collection[str] | None,
    topics: Collection[str] = (),
    source: str,
    evidence: Mapping[str, Any],
) -> OptOutResult:
    """Withdraw `channels` (None: every digital channel) and `topics` for an address.

    DESIGN: an opt-out from one digital channel applies to all digital channels unless
    the person chose otherwise, so no channel list means all of them.
    """
    try:
        email = normalise(address)
    except InvalidAddress as exc:
        raise OptOutRefused("/email", f"{address!r} is not a valid address: {exc}") from None
    digital = [c.value for c in DIGITAL]
    known_channels = {"email", "sms", "postal", "phone"}
    wanted = sorted(set(channels)) if channels is not None else ([] if topics else digital)
    unknown = [c for c in wanted if c not in known_channels]
    if unknown:
        raise OptOutRefused("/channels", f"unknown channel(s) {', '.join(unknown)}")
    ids = await OptOutStore.topic_ids(conn, topics)
    missing = sorted(set(topics) - set(ids))
    if missing:
        raise OptOutRefused("/topics", f"unknown topic(s) {', '.join(missing)}")
    contact_id = await OptOutStore.contact_by_email(conn, email)
    if contact_id is None:
        raise OptOutRefused("/email", f"no contact {email}", missing=True)
    changed = await OptOutStore.opt_out(
        conn,
        Withdrawal(
            contact_id=contact_id,
            channels=wanted,
            topic_ids=sorted(ids.values()),
            source=source,
            evidence=evidence,
        ),
    )
    if changed is None:  # erased between the lookup and the lock
        raise OptOutRefused("/email", f"no contact {email}", missing=True)
    return OptOutResult(contact_id, email, wanted, sorted(ids), changed)
