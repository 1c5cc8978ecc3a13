"""Adaptive domain rates: additive increase, multiplicative decrease (AIMD), and when to cut.

A receiving domain that asks us to slow down (421, "too many connections",
"try again later" before any recipient is named) gets its rate multiplied by
`decrease`, never below `floor` of the configured rate; it then climbs back by
`increase` of the configured rate every `increase_every_s` without a new cut,
up to the configured rate. This is TCP's congestion rule (RFC 5681 s.3.1):
back off fast, probe back slowly, so a domain that complained once is not
pushed straight back to the rate it complained about, and one that complained
by mistake is back at full rate within a minute or two.

A 4xx to one recipient (greylisting, a full mailbox) is that recipient's
problem and is retried for that recipient only; it cuts the domain's rate
only when a large share of a recent window of replies is 4xx
(`DeferralWindow`), with a minimum sample so a handful of greylisted
addresses never slows a whole domain.

Pure: every function takes the state and the time as values. The state
itself (factor at the last cut, seconds since it) lives in Postgres, shared
by every worker (mailer.send.pacer).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Aimd:
    """The controller's parameters (settings `throttle.slowdown_*` and `throttle.recovery_*`)."""

    decrease: float = 0.5  # a cut multiplies the current factor by this
    increase: float = 0.1  # each recovery step adds this share of the configured rate
    increase_every_s: float = 10.0
    floor: float = 0.125  # never below this share of the configured rate
    # Signals within this many seconds of a cut are the same complaint (several
    # senders and workers see one burst of 421s): one cut, not eight.
    hold_s: float = 5.0

    def factor(self, at_cut: float, since_cut_s: float | None) -> float:
        """The share of the configured rate allowed now (1.0: never cut, or fully recovered)."""
        if since_cut_s is None:
            return 1.0
        steps = math.floor(max(0.0, since_cut_s) / self.increase_every_s)
        return min(1.0, max(self.floor, at_cut + self.increase * steps))

    def cut(self, at_cut: float, since_cut_s: float | None) -> float | None:
        """The factor after one more cut; None when the last cut is too recent to cut again."""
        if since_cut_s is not None and since_cut_s < self.hold_s:
            return None
        return max(self.floor, self.factor(at_cut, since_cut_s) * self.decrease)

    def recovered_after_s(self, at_cut: float) -> float:
        """Seconds after a cut to `at_cut` until the full configured rate is back."""
        steps = math.ceil(max(0.0, 1.0 - at_cut) / self.increase - 1e-9)
        return steps * self.increase_every_s


@dataclass
class DeferralWindow:
    """Share of 4xx replies from one domain over the last `window_s` seconds.

    Counts live in one-second buckets, so memory stays small at any rate.
    """

    window_s: float = 60.0
    share: float = 0.3  # cut when more than this share of replies is 4xx …
    min_sample: int = 50  # … out of at least this many replies
    # [second, replies, 4xx replies], oldest first.
    _buckets: deque[list[int]] = field(default_factory=deque, init=False, repr=False)
    _replies: int = field(default=0, init=False, repr=False)
    _deferred: int = field(default=0, init=False, repr=False)

    def observe(self, now_s: float, deferred: bool) -> bool:
        """Count one reply; True when the window calls for a cut (then it starts afresh)."""
        second = math.floor(now_s)
        while self._buckets and self._buckets[0][0] <= second - self.window_s:
            _, replies, deferrals = self._buckets.popleft()
            self._replies -= replies
            self._deferred -= deferrals
        if not self._buckets or self._buckets[-1][0] != second:
            self._buckets.append([second, 0, 0])
        self._buckets[-1][1] += 1
        self._replies += 1
        if deferred:
            self._buckets[-1][2] += 1
            self._deferred += 1
        if self._replies >= self.min_sample and self._deferred > self.share * self._replies:
            # Replies before the cut describe the old rate: judge the new one afresh.
            self._buckets.clear()
            self._replies = self._deferred = 0
            return True
        return False
