"""SMTP replies and connection errors classified into delivery outcomes, and retry timing."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from mailer.core import outcome
from mailer.core.outcome import Status

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def test_a_2xx_reply_is_sent() -> None:
    result = outcome.from_reply(250, "2.0.0 Ok: queued as 4ABC")
    assert (result.status, result.code, result.reply_class) == (Status.SENT, 250, "2xx")


@pytest.mark.parametrize(
    ("code", "reply", "slow"),
    [
        (451, "4.7.1 Greylisted, try again in 5 minutes", False),
        (421, "4.7.0 Too many connections from your IP", True),
        (450, "4.2.1 Rate limit exceeded for this sender", True),
        (452, "4.5.3 Too many recipients", True),
    ],
)
def test_a_4xx_reply_defers_and_only_rate_signals_ask_to_slow_down(
    code: int, reply: str, slow: bool
) -> None:
    result = outcome.from_reply(code, reply)
    assert (result.status, result.slow_down, result.hard_bounce) == (Status.DEFERRED, slow, False)


@pytest.mark.parametrize(
    ("reply", "hard"),
    [
        ("5.1.1 <x@example.com>: Recipient address rejected: User unknown", True),
        ("5.2.1 The email account that you tried to reach is disabled", True),
        ("5.7.1 Message rejected as spam", False),
        ("Mailbox unavailable", True),  # no enhanced code: the words decide
        ("Service refused", False),
    ],
)
def test_a_5xx_reply_bounces_and_only_a_dead_address_is_a_hard_bounce(
    reply: str, hard: bool
) -> None:
    result = outcome.from_reply(550, reply)
    assert (result.status, result.hard_bounce) == (Status.BOUNCED, hard)


def test_a_connection_error_defers_before_data_and_is_uncertain_after() -> None:
    before = outcome.from_connection_error(ConnectionResetError("reset"))
    after = outcome.from_connection_error(TimeoutError("no reply"), after_data=True)
    assert (before.status, before.code, before.reply_class) == (Status.DEFERRED, None, "none")
    assert after.status is Status.UNCERTAIN
    assert after.reply == "TimeoutError: no reply"


def test_a_refused_envelope_sender_defers_and_never_bounces_the_recipient() -> None:
    result = outcome.from_sender_refusal(550, "5.1.0 Sender address rejected")
    assert (result.status, result.hard_bounce) == (Status.DEFERRED, False)
    assert result.reply.startswith("sender refused: ")


def test_retries_back_off_exponentially_with_jitter_up_to_an_hour() -> None:
    rng = random.Random(1)
    for attempt, bound in ((1, 60), (2, 120), (3, 240), (10, 3600)):
        delay = outcome.retry_delay(attempt, rng=rng).total_seconds()
        assert bound / 2 <= delay <= bound


def test_a_deferral_is_retried_until_the_next_try_would_pass_the_deadline() -> None:
    deferred = outcome.from_reply(451, "4.7.1 try later")
    same, retry_at = outcome.after_deferral(
        deferred, attempt=1, first_try=NOW, now=NOW, deadline=timedelta(hours=24)
    )
    assert same is deferred
    assert retry_at is not None
    assert NOW < retry_at <= NOW + timedelta(minutes=1)
    final, never = outcome.after_deferral(
        deferred,
        attempt=30,
        first_try=NOW - timedelta(hours=24),
        now=NOW,
        deadline=timedelta(hours=24),
    )
    assert (final.status, never) == (Status.FAILED, None)
    assert final.reply.startswith("gave up after 30 attempts: ")
