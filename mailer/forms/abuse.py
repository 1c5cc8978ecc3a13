"""Fending off the ways sign-up forms are attacked: floods, bots, subscription bombing.

Subscription bombing (a victim's address signed up to thousands of lists, so the real mail
drowns) and list poisoning (bots filling a list with strangers' or trap addresses) are met by:
double opt-in (elsewhere), at most one confirmation mail per address per interval (the
store), a per-IP-prefix rate limit (here, in memory: refusing must cost less than accepting),
a honeypot field humans never see, and an optional proof-of-work (ALTCHA) per form.
"""

from __future__ import annotations

import base64
import binascii
import json
import statistics
import time
from collections import OrderedDict, deque
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs

from altcha import v1 as altcha

HONEYPOT_FIELD = "website"  # a name bots like to fill; hidden from people and screen readers
POW_FIELD = "altcha"
# ~50,000 SHA-256 on average for a browser (well under a second), paid per submission.
POW_MAX_NUMBER = 100_000
POW_LIFETIME_S = 600


class PrefixLimiter:
    """At most `limit` accepted requests per IP prefix in a sliding `window_s`, per process.

    A fixed-size map (least recently seen prefixes dropped first) keeps memory flat under a
    flood spread over many prefixes; a dropped prefix only starts again from zero. Each entry
    is a short list of accept times, so a refusal is a dict lookup and a comparison.
    """

    def __init__(self, limit: int, window_s: float, tracked: int) -> None:
        self.limit = limit
        self.window_s = window_s
        self.tracked = tracked
        self._seen: OrderedDict[str, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def allow(self, prefix: str | None, now: float | None = None) -> bool:
        """Count one request from `prefix`; False when its window is already full."""
        if prefix is None:
            return True  # no peer address (a Unix socket in tests): nothing to key on
        now = time.monotonic() if now is None else now
        times = self._seen.get(prefix)
        if times is None:
            if len(self._seen) >= self.tracked:
                self._seen.popitem(last=False)
            self._seen[prefix] = [now]
            return True
        self._seen.move_to_end(prefix)
        horizon = now - self.window_s
        if times[0] <= horizon:
            times[:] = [t for t in times if t > horizon]
        if len(times) >= self.limit:
            return False
        times.append(now)
        return True


def honeypot_tripped(value: object) -> bool:
    """Whether the hidden field was filled (only a bot sees it)."""
    return isinstance(value, str) and value.strip() != ""


def pow_challenge(key: bytes, form_slug: str, now: datetime | None = None) -> dict[str, object]:
    """A fresh ALTCHA (v1) challenge for a form's page, as JSON for the page's solver."""
    expires = (now or datetime.now(UTC)) + timedelta(seconds=POW_LIFETIME_S)
    challenge = altcha.create_challenge(
        altcha.ChallengeOptions(
            hmac_key=key, max_number=POW_MAX_NUMBER, expires=expires, params={"form": form_slug}
        )
    )
    return dict(challenge.to_dict())


def pow_ok(key: bytes, form_slug: str, payload: object) -> bool:
    """Whether a submitted ALTCHA payload solves an unexpired challenge we issued for this form.

    The challenge names its form in its signed salt, so a solution for one form cannot serve
    another. (A solution can be replayed until it expires, ten minutes: the per-prefix limit
    still counts each use.)
    """
    if not isinstance(payload, str) or not payload or len(payload) > 2000:
        return False
    ok, _ = altcha.verify_solution(payload, key, check_expires=True)
    return bool(ok) and _salt_form(payload) == form_slug


def _salt_form(payload: str) -> str | None:
    try:
        data = json.loads(base64.b64decode(payload, validate=True))
    except (ValueError, binascii.Error):
        return None
    salt = data.get("salt") if isinstance(data, dict) else None
    if not isinstance(salt, str):
        return None
    forms = parse_qs(salt.partition("?")[2]).get("form")
    return forms[0] if forms and len(forms) == 1 else None


class Equaliser:
    """Makes the silent refusals take as long as a request that queues a mail.

    Whether an address hard-bounced, complained, was erased or got a mail an hour ago must
    not show in the answer (no enumeration), and that includes its timing: queueing the
    confirmation costs milliseconds that a silent refusal would not spend. The silent path
    sleeps (no CPU) until the median of the last mailed requests' durations, with a little
    jitter, has passed since the request began. A median, so one stalled request does not
    make every silent answer slow, and it follows the machine's load within a few requests.
    """

    def __init__(self, initial_s: float = 0.02, keep: int = 31) -> None:
        self._recent: deque[float] = deque([initial_s], maxlen=keep)
        self.typical_s = initial_s

    def observe(self, seconds: float) -> None:
        """Note how long a request that queued a mail took."""
        self._recent.append(seconds)
        self.typical_s = statistics.median(self._recent)

    def remaining(self, elapsed_s: float, jitter: float) -> float:
        """How long a silent answer still waits, `jitter` in [0, 1) spreading it ±10 %."""
        return max(0.0, self.typical_s * (0.9 + 0.2 * jitter) - elapsed_s)
