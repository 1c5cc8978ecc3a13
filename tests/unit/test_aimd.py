"""The adaptive domain rate (AIMD), the 4xx-share window, and which replies ask to slow down."""

from __future__ import annotations

import random
from pathlib import Path

import aiosmtplib
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailer.core import outcome
from mailer.core.aimd import Aimd, DeferralWindow
from mailer.core.settings import ConfigError, load
from mailer.core.throttle import aimd_for

AIMD = Aimd(decrease=0.5, increase=0.1, increase_every_s=10.0, floor=0.125, hold_s=5.0)


def test_a_domain_never_cut_runs_at_its_configured_rate() -> None:
    assert AIMD.factor(1.0, None) == 1.0


def test_a_cut_halves_the_rate_and_recovers_by_a_tenth_every_ten_seconds() -> None:
    first = AIMD.cut(1.0, None)
    assert first == 0.5
    assert [AIMD.factor(0.5, s) for s in (0, 9.9, 10, 25, 49.9, 50, 500)] == pytest.approx(
        [0.5, 0.5, 0.6, 0.7, 0.9, 1.0, 1.0]
    )
    assert AIMD.recovered_after_s(0.5) == 50
    assert AIMD.recovered_after_s(0.125) == 90


def test_complaints_within_the_hold_are_one_cut() -> None:
    assert AIMD.cut(0.5, 0.1) is None
    assert AIMD.cut(0.5, 4.9) is None
    assert AIMD.cut(0.5, 5.0) == 0.25


def test_repeated_cuts_stop_at_the_floor() -> None:
    factor, since = 1.0, None
    for _ in range(10):
        cut = AIMD.cut(factor, since)
        assert cut is not None
        factor, since = cut, 5.0
    assert factor == 0.125


def test_a_cut_during_recovery_starts_from_the_rate_reached() -> None:
    # Cut to 0.5, recovered to 0.8 after 30 s, cut again: 0.4, not 0.25.
    assert AIMD.cut(0.5, 30.0) == pytest.approx(0.4)


@given(
    events=st.lists(
        st.tuples(st.floats(0, 120, allow_nan=False), st.booleans()), min_size=1, max_size=40
    ),
    floor=st.floats(0.01, 1.0),
    decrease=st.floats(0.05, 0.95),
)
def test_the_factor_stays_between_the_floor_and_one_whatever_happens(
    events: list[tuple[float, bool]], floor: float, decrease: float
) -> None:
    aimd = Aimd(decrease=decrease, floor=floor)
    factor, since = 1.0, None
    for elapsed, complaint in events:
        since = None if since is None else since + elapsed
        assert floor - 1e-9 <= aimd.factor(factor, since) <= 1.0
        if complaint:
            cut = aimd.cut(factor, since)
            if cut is not None:
                factor, since = cut, 0.0
        # Recovery never goes down with time.
        if since is not None:
            assert aimd.factor(factor, since + 1) >= aimd.factor(factor, since)


def test_five_percent_of_4xx_never_calls_for_a_cut() -> None:
    window = DeferralWindow(window_s=60, share=0.3, min_sample=50)
    rng = random.Random(7)
    # 20,000 replies at 160 msg/s: the rate at which greylisting once crawled a domain.
    assert not any(window.observe(i / 160, rng.random() < 0.05) for i in range(20_000))


def test_a_large_share_of_4xx_calls_for_a_cut_once_the_sample_is_large_enough() -> None:
    window = DeferralWindow(window_s=60, share=0.3, min_sample=50)
    verdicts = [window.observe(i / 10, i % 2 == 0) for i in range(50)]
    assert verdicts.index(True) == 49  # the 50th reply: 25 of 50 deferred
    # The window starts afresh after a cut: the next 49 replies cannot cut again.
    assert not any(window.observe(6 + i / 10, True) for i in range(49))


def test_old_replies_leave_the_window() -> None:
    window = DeferralWindow(window_s=10, share=0.3, min_sample=20)
    for i in range(19):
        assert not window.observe(i * 0.1, True)
    # Twenty seconds later the 19 deferrals are gone: 19 fresh successes and one 4xx.
    assert not any(window.observe(22 + i * 0.01, False) for i in range(19))
    assert not window.observe(23, True)


@pytest.mark.parametrize(
    ("stage", "code", "text", "slow"),
    [
        ("rcpt", 451, "4.7.1 Greylisting in action, please try again later", False),
        ("rcpt", 450, "4.2.1 mailbox busy", False),
        ("rcpt", 421, "4.7.0 closing connection", True),
        ("rcpt", 451, "4.7.650 The mail server has been temporarily rate limited", True),
        ("data", 452, "4.2.2 mailbox full", False),
        ("mail", 451, "4.7.1 Try again later", True),
        ("mail", 421, "4.7.0 [TSS04] Messages temporarily deferred", True),
        ("mail", 553, "5.1.8 sender address rejected", False),
        ("connect", 421, "4.7.0 Too many connections from your IP", True),
        ("connect", 554, "5.7.1 no service", False),
    ],
)
def test_only_replies_about_the_sender_ask_to_slow_the_domain(
    stage: str, code: int, text: str, slow: bool
) -> None:
    if stage in ("rcpt", "data"):
        result = outcome.from_reply(code, text)
    elif stage == "mail":
        result = outcome.from_sender_refusal(code, text)
    else:
        result = outcome.from_connection_error(aiosmtplib.SMTPConnectResponseError(code, text))
    assert result.slow_down is slow
    assert result.code == code


def test_the_controller_is_built_from_the_documented_defaults() -> None:
    example = Path(__file__).parents[2] / "config" / "mailer.example.toml"
    assert aimd_for(load(example, environ={}).throttle) == AIMD


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"MAILER_THROTTLE_SLOWDOWN_FACTOR": "1"}, "throttle.slowdown_factor"),
        ({"MAILER_THROTTLE_SLOWDOWN_FLOOR": "0"}, "throttle.slowdown_floor"),
        ({"MAILER_THROTTLE_RECOVERY_STEP": "1.5"}, "throttle.recovery_step"),
        ({"MAILER_THROTTLE_RECOVERY_EVERY_S": "0"}, "throttle.recovery_every_s"),
        ({"MAILER_THROTTLE_DEFERRAL_SHARE": "0"}, "throttle.deferral_share"),
        ({"MAILER_THROTTLE_DEFERRAL_MIN_SAMPLE": "0"}, "throttle.deferral_min_sample"),
        ({"MAILER_THROTTLE_DEFERRAL_WINDOW_S": "fast"}, "MAILER_THROTTLE_DEFERRAL_WINDOW_S"),
    ],
)
def test_a_bad_slowdown_setting_fails_at_start_naming_it(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load(environ=env)
