"""Throttle arithmetic: rates per recipient domain, warm-up caps, adaptive slow-down.

The limits hold across every worker because the buckets live in Postgres
(`throttle_take` in the migrations): a worker takes a small grant of tokens
at a time and spends it locally. This module holds the pure parts: which
limit applies to a domain, how large a grant to ask for, how long to wait,
and the warm-up cap of a given day.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date

from mailer.core.aimd import Aimd, DeferralWindow
from mailer.core.settings import DomainThrottle, ThrottleSettings

GLOBAL_KEY = "global"
# A grant covers at most this much time at the current rate: small enough that
# a paused or slowed domain reacts within a fraction of a second, large enough
# that workers do not hit Postgres for every message.
GRANT_SECONDS = 0.25


@dataclass(frozen=True)
class Limit:
    """The rate and concurrency that apply to one bucket."""

    key: str
    rate: float  # messages per second
    concurrency: int

    @property
    def burst(self) -> float:
        """Tokens a bucket holds at most: one grant's worth, at least one message."""
        return max(1.0, self.rate * GRANT_SECONDS)

    def grant_size(self) -> int:
        """How many tokens to ask for at once: a full bucket (GRANT_SECONDS of the rate).

        Asking for what is queued right now was measured to cost a Postgres round
        trip every two or three messages at high rates; a worker holds at most
        one burst locally, so the rate still holds across workers.
        """
        return max(1, math.floor(self.burst))


def domain_key(domain: str) -> str:
    return f"domain:{domain}"


def limit_for(domain: str, settings: ThrottleSettings) -> Limit:
    """The configured limit of a recipient domain, shared by every campaign and worker."""
    configured = settings.domains.get(domain)
    rate = configured.rate if configured else settings.default_domain_rate
    concurrency = configured.concurrency if configured else settings.default_domain_concurrency
    return Limit(domain_key(domain), rate, concurrency)


def campaign_limit(
    campaign_id: int, domain: str, settings: ThrottleSettings, overrides: DomainThrottle
) -> Limit:
    """A campaign's own limit for one domain, taken on top of the domain's shared one.

    A campaign may only tighten the domain's limit. Its own bucket (not the
    domain's at a lower rate: a bucket refills at the rate its callers pass,
    so two campaigns sharing one would blur both limits) holds it to its rate
    across workers, while other campaigns keep the domain's.
    """
    shared = limit_for(domain, settings)
    return Limit(
        f"campaign:{campaign_id}:{domain}",
        min(shared.rate, overrides.rate),
        min(shared.concurrency, overrides.concurrency),
    )


def slowed(limit: Limit, factor: float) -> Limit:
    """The limit at `factor` of its rate (a domain cut by mailer.core.aimd): smaller grants too."""
    return limit if factor >= 1.0 else Limit(limit.key, limit.rate * factor, limit.concurrency)


def aimd_for(settings: ThrottleSettings) -> Aimd:
    """The adaptive slow-down controller the settings describe."""
    return Aimd(
        decrease=settings.slowdown_factor,
        increase=settings.recovery_step,
        increase_every_s=settings.recovery_every_s,
        floor=settings.slowdown_floor,
        hold_s=settings.slowdown_hold_s,
    )


def deferral_window(settings: ThrottleSettings) -> DeferralWindow:
    """A fresh window of one domain's replies, judged by the settings' share and sample."""
    return DeferralWindow(
        settings.deferral_window_s, settings.deferral_share, settings.deferral_min_sample
    )


def global_limit(settings: ThrottleSettings) -> Limit:
    return Limit(GLOBAL_KEY, settings.global_rate, 1_000_000)


def warmup_cap(settings: ThrottleSettings, first_day: date | None, today: date) -> int | None:
    """Messages allowed today under the warm-up schedule; None when warm-up is off.

    Day 0 (the first day anything was sent) allows `warmup_daily_cap`; each
    following day multiplies it by `warmup_growth`, as mailbox providers
    expect of a new sending IP or domain.
    """
    if settings.warmup_daily_cap <= 0:
        return None
    days = 0 if first_day is None else max(0, (today - first_day).days)
    ceiling = 2**31 - 1
    # In logarithms: a float power overflows after a few years of growth.
    growth = days * math.log(settings.warmup_growth) if settings.warmup_growth > 0 else 0.0
    if math.log(settings.warmup_daily_cap) + growth >= math.log(ceiling):
        return ceiling
    return int(settings.warmup_daily_cap * settings.warmup_growth**days)


def wait_for(tokens_short: float, rate: float) -> float:
    """Seconds until `tokens_short` more tokens accrue at `rate` (at least 10 ms)."""
    return max(0.01, tokens_short / rate) if rate > 0 else 1.0


# Mailbox providers that get their own metric series even when not configured.
_PROVIDERS = frozenset(
    {
        "gmail.com",
        "googlemail.com",
        "outlook.com",
        "hotmail.com",
        "live.com",
        "yahoo.com",
        "icloud.com",
        "me.com",
        "aol.com",
        "gmx.com",
        "orange.fr",
        "free.fr",
        "videotron.ca",
        "bell.net",
        "sympatico.ca",
        "shaw.ca",
        "rogers.com",
    }
)


def metric_domain(domain: str, settings: ThrottleSettings) -> str:
    """The domain as a metric label: configured domains and big providers, else "other".

    A 10 M-address list has hundreds of thousands of domains; one series each
    would swamp Prometheus.
    """
    return domain if domain in settings.domains or domain in _PROVIDERS else "other"
