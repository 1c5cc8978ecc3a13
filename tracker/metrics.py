"""The tracker's Prometheus metrics (tracker_*), one registry per app.

A registry per app, not the global one, so tests can build several apps in one process.
The per-request counters (requests, events) are plain ints read at scrape time by a
collector: a prometheus_client Counter takes a lock and a few calls per increment, and on
this 2-core machine the pixel's whole budget is ~70 µs, so the hot path only bumps a dict.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from mailer.optouts.metrics import OptOutMetrics
from tracker.buffer import BufferObserver


class Tally(Collector):
    """A labelled counter kept as ints; safe because the tracker is one event loop."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = list(labels)
        self.counts: dict[tuple[str, ...], int] = {}

    def add(self, key: tuple[str, ...], amount: int = 1) -> None:
        """Count `amount` under the label values `key`."""
        self.counts[key] = self.counts.get(key, 0) + amount

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for key, value in sorted(self.counts.items()):
            family.add_metric(list(key), value)
        yield family

    def describe(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(self.name, self.documentation, labels=self.labels)


class Metrics(BufferObserver):
    """Every tracker_* metric, registered in this object's own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Tally(
            "tracker_requests", "HTTP requests by route and status", ["route", "status"]
        )
        self.events = Tally(
            "tracker_events", "Opens and clicks recorded, by kind and agent", ["kind", "agent"]
        )
        self.machine_reasons = Tally(
            "tracker_machine_events",
            "Events flagged machine, by kind and reason",
            ["kind", "reason"],
        )
        for tally in (self.requests, self.events, self.machine_reasons):
            r.register(tally)
        self.buffer_size = Gauge(
            "tracker_event_buffer_size", "Events waiting to be written", registry=r
        )
        self.flush_seconds = Histogram(
            "tracker_flush_seconds",
            "Time to write one batch of events",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.written = Counter("tracker_events_written", "Events written to Postgres", registry=r)
        self.flush_failures = Counter(
            "tracker_flush_failures", "Batches that failed to write (kept and retried)", registry=r
        )
        self.drops = Counter(
            "tracker_events_dropped", "Events lost, by reason", ["reason"], registry=r
        )
        self.token_rejections = Counter(
            "tracker_token_rejections",
            "Refused tokens by route and reason",
            ["route", "reason"],
            registry=r,
        )
        # Shared with inbound's mailto unsubscribe (mailer/optouts/metrics.py).
        shared = OptOutMetrics(r)
        self.optouts = shared.optouts
        self.optout_seconds = shared.optout_seconds
        self.database_unavailable = Counter(
            "tracker_database_unavailable",
            "Requests Postgres could not serve in time, by route and outcome "
            "(503, or a click served from the link cache)",
            ["route", "outcome"],
            registry=r,
        )
        self.preference_changes = Counter(
            "tracker_preference_changes",
            "Preference centre switches changed",
            ["change"],
            registry=r,
        )
        # Sign-up forms: each step of a request by form (mailer.forms.signup.Step), refusals
        # included, so a flood or a bombing shows as refused_* without reading logs.
        self.signups = Counter(
            "tracker_signup", "Sign-up form steps by form and step", ["form", "step"], registry=r
        )
        self.signup_limited = Gauge(
            "tracker_signup_prefixes_tracked", "IP prefixes the sign-up rate limit remembers",
            registry=r,
        )  # fmt: skip

    def request(self, route: str, status: int) -> None:
        """Count one answered request."""
        self.requests.add((route, str(status)))

    def event(self, kind: str, machine_reason: str | None, count: int = 1) -> None:
        """Count recorded events of one kind and verdict."""
        if machine_reason is None:
            self.events.add((kind, "human"), count)
        else:
            self.events.add((kind, "machine"), count)
            self.machine_reasons.add((kind, machine_reason), count)

    def watch_buffer(self, size: Callable[[], int]) -> None:
        """Report the buffer's length at scrape time (no work per event)."""
        self.buffer_size.set_function(lambda: float(size()))

    # BufferObserver
    def dropped(self, reason: str, count: int) -> None:
        self.drops.labels(reason).inc(count)

    def flushed(self, count: int, seconds: float) -> None:
        self.flush_seconds.observe(seconds)
        self.written.inc(count)

    def flush_failed(self) -> None:
        self.flush_failures.inc()
