"""Throttle arithmetic: which limits apply to a message."""

from __future__ import annotations

import dataclasses
from datetime import date

from hypothesis import given
from hypothesis import strategies as st

from mailer.core import throttle
from mailer.core.settings import DomainThrottle, ThrottleSettings, load
from mailer.core.throttle import campaign_limit, limit_for

rates = st.floats(min_value=0.1, max_value=10_000, allow_nan=False)
counts = st.integers(min_value=1, max_value=64)


@given(configured=rates, wanted=rates, cap=counts, wanted_cap=counts, campaign=st.integers(1, 99))
def test_a_campaign_may_only_tighten_a_domains_limit_and_has_its_own_bucket(
    configured: float, wanted: float, cap: int, wanted_cap: int, campaign: int
) -> None:
    settings = ThrottleSettings(domains={"gmail.com": DomainThrottle(configured, cap)})
    shared = limit_for("gmail.com", settings)
    own = campaign_limit(campaign, "gmail.com", settings, DomainThrottle(wanted, wanted_cap))
    assert own.rate == min(configured, wanted) <= shared.rate
    assert own.concurrency == min(cap, wanted_cap) <= shared.concurrency
    assert own.key != shared.key
    other = campaign_limit(campaign + 1, "gmail.com", settings, DomainThrottle(wanted, wanted_cap))
    assert other.key != own.key


def test_a_domain_without_settings_gets_the_defaults() -> None:
    settings = ThrottleSettings(default_domain_rate=7.0, default_domain_concurrency=3)
    limit = limit_for("example.net", settings)
    assert (limit.rate, limit.concurrency) == (7.0, 3)


def test_warm_up_is_off_without_a_daily_cap() -> None:
    settings = dataclasses.replace(load(environ={}).throttle, warmup_daily_cap=0)
    assert throttle.warmup_cap(settings, None, date(2026, 12, 7)) is None


def test_warm_up_allows_the_cap_on_day_zero_and_grows_it_each_day_after() -> None:
    settings = dataclasses.replace(
        load(environ={}).throttle, warmup_daily_cap=1000, warmup_growth=1.5
    )
    first = date(2026, 12, 1)
    assert throttle.warmup_cap(settings, None, first) == 1000  # nothing sent yet: day zero
    assert throttle.warmup_cap(settings, first, first) == 1000
    assert throttle.warmup_cap(settings, first, date(2026, 12, 3)) == 2250
    # A clock behind the first sending day never goes below day zero.
    assert throttle.warmup_cap(settings, first, date(2026, 11, 30)) == 1000
    # Years of growth stay a bounded integer.
    assert throttle.warmup_cap(settings, first, date(2036, 12, 1)) == 2**31 - 1
