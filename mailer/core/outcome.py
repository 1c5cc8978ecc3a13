"""What an SMTP reply means for a delivery: sent, deferred (and when to retry), bounced, failed.

One place classifies every reply and every aiosmtplib error, so the engine,
the metrics and the report use one vocabulary.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import aiosmtplib


class Status(StrEnum):
    SENT = "sent"
    DEFERRED = "deferred"
    BOUNCED = "bounced"
    FAILED = "failed"
    SKIPPED = "skipped"
    # The connection failed after the message was handed over: it may have been
    # delivered. Never retried on its own (no duplicates); reported.
    UNCERTAIN = "uncertain"


@dataclass(frozen=True, slots=True)
class Outcome:
    status: Status
    code: int | None
    reply: str
    # 5.1.x (bad mailbox/domain), 5.2.1 (disabled): the address is dead; suppress it.
    hard_bounce: bool = False
    # The server asks us, not one recipient, to slow down (see _asks_to_slow_down):
    # the domain's rate is cut (mailer.core.aimd). Greylisting one recipient is not that.
    slow_down: bool = False
    skip_reason: str | None = None  # SKIPPED: why the message was never offered

    @property
    def reply_class(self) -> str:
        """'2xx', '4xx', '5xx' or 'none' (connection errors): a metric label."""
        return f"{self.code // 100}xx" if self.code else "none"


_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
# Words by which a server asks the sender to slow down at any stage.
_RATE_LIMIT_WORDS = ("too many", "rate limit", "throttl")
# Before any recipient is named (greeting, EHLO, MAIL FROM), "try again later"
# can only be about us. After RCPT it is what greylisting tells one recipient
# (451 4.7.1, RFC 6647 s.2.1): that recipient is retried, the domain not slowed.
_SESSION_WORDS = (*_RATE_LIMIT_WORDS, "try again later", "try later")


def _asks_to_slow_down(code: int, text: str, words: tuple[str, ...]) -> bool:
    # 421: the service is closing the channel (RFC 5321 s.3.8), whatever the stage.
    if code == 421:
        return True
    lowered = text.lower()
    return 400 <= code < 500 and any(word in lowered for word in words)


def _enhanced(reply: str) -> tuple[int, int, int] | None:
    match = _ENHANCED.search(reply)
    return None if match is None else (int(match[1]), int(match[2]), int(match[3]))


def dead_address(status: tuple[int, int, int]) -> bool:
    """RFC 3463: X.1.x addressing (no such user/domain) or X.2.1 mailbox disabled, permanent.

    What makes a bounce suppress the address, for a reply at the first hop and a DSN from
    further on alike; other permanent failures (5.7.1 policy, 5.3.4 too big) bounce the
    message, not the address.
    """
    return status[0] == 5 and (status[1] == 1 or status[1:] == (2, 1))


def from_reply(code: int, reply: str) -> Outcome:
    """Classify a reply to RCPT or DATA: about this recipient unless it says otherwise."""
    text = reply.strip()[:500]
    if 200 <= code < 300:
        return Outcome(Status.SENT, code, text)
    if 400 <= code < 500:
        slow = _asks_to_slow_down(code, text, _RATE_LIMIT_WORDS)
        return Outcome(Status.DEFERRED, code, text, slow_down=slow)
    if 500 <= code < 600:
        enhanced = _enhanced(text)
        # RFC 3463: X.1.x addressing (no such user/domain), X.2.1 mailbox disabled.
        hard = enhanced is not None and dead_address((5, *enhanced[1:]))
        if enhanced is None and code in (550, 551, 553):
            hard = "user" in text.lower() or "mailbox" in text.lower()
        return Outcome(Status.BOUNCED, code, text, hard_bounce=hard)
    return Outcome(Status.DEFERRED, code, text)


def from_connection_error(error: BaseException, *, after_data: bool = False) -> Outcome:
    """A dropped connection, a timeout or a refused connect: try again later.

    After the message body was sent the server may have queued it and the reply
    was lost: retrying could deliver twice, so the outcome is `uncertain`.
    """
    status = Status.UNCERTAIN if after_data else Status.DEFERRED
    text = f"{type(error).__name__}: {error}"[:500]
    if isinstance(error, aiosmtplib.SMTPResponseException) and not after_data:
        # The greeting or EHLO was refused: a reply before any recipient was named.
        slow = _asks_to_slow_down(error.code, error.message, _SESSION_WORDS)
        return Outcome(status, error.code, text, slow_down=slow)
    return Outcome(status, None, text)


def too_large(size: int, limit: int) -> Outcome:
    """A message over the relay's advertised SIZE (RFC 1870): never offered, skipped.

    Not deferred: the same bytes would be refused again. The relay would answer 552 after
    the whole message crossed the network, or worse, accept it and bounce it later.
    """
    return Outcome(
        Status.SKIPPED,
        None,
        f"{size:,} bytes, over the relay's SIZE {limit:,} (RFC 1870)",
        skip_reason="message_too_large",
    )


def from_sender_refusal(code: int, reply: str) -> Outcome:
    """MAIL FROM refused: our envelope sender or account is the problem, not the recipient.

    Never a bounce (suppressing recipients for our own misconfiguration would
    be permanent damage); deferred so it is retried once the operator fixes it.
    A 421 or "try again later" here asks us to slow down.
    """
    slow = _asks_to_slow_down(code, reply, _SESSION_WORDS)
    return Outcome(Status.DEFERRED, code, f"sender refused: {reply}"[:500], slow_down=slow)


def retry_delay(
    attempt: int, *, base_s: float = 60.0, cap_s: float = 3600.0, rng: random.Random | None = None
) -> timedelta:
    """Exponential backoff with full jitter: 1, 2, 4 … minutes, capped at an hour.

    Full jitter (a random delay up to the exponential bound) spreads the
    retries of many recipients of one throttling domain instead of sending
    them back in one wave (AWS architecture blog, "Exponential Backoff and Jitter").
    """
    bound = min(cap_s, base_s * 2 ** max(0, attempt - 1))
    draw = (rng or random).uniform(bound / 2, bound)
    return timedelta(seconds=draw)


def after_deferral(
    outcome: Outcome,
    *,
    attempt: int,
    first_try: datetime,
    now: datetime,
    deadline: timedelta,
    rng: random.Random | None = None,
) -> tuple[Outcome, datetime | None]:
    """A deferral becomes a retry time, or `failed` once the next try would pass the deadline."""
    retry_at = now + retry_delay(attempt, rng=rng)
    if retry_at - first_try > deadline:
        return Outcome(
            Status.FAILED, outcome.code, f"gave up after {attempt} attempts: {outcome.reply}"[:500]
        ), None
    return outcome, retry_at
