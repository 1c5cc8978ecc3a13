"""Prometheus metrics of the send engine (mailer_*), on a registry of their own.

A registry per engine (not the process-global one) lets tests run several
workers in one process; `serve()` exposes it on the configured port.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class EngineMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.messages = Counter(
            "mailer_messages",
            "Deliveries by outcome and SMTP reply class",
            ["outcome", "reply_class"],
            registry=r,
        )
        self.send_seconds = Histogram(
            "mailer_send_duration_seconds",
            "Time to hand one message to the SMTP relay",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.render_seconds = Histogram(
            "mailer_render_duration_seconds",
            "Time to render, sign and assemble one message",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.throttle_wait = Counter(
            "mailer_throttle_wait_seconds",
            "Time senders waited for throttle tokens, by recipient domain",
            ["domain"],
            registry=r,
        )
        self.deferrals = Counter(
            "mailer_deferrals",
            "Temporary failures (4xx, connection errors) by recipient domain",
            ["domain"],
            registry=r,
        )
        self.slowdowns = Counter(
            "mailer_throttle_slowdowns",
            "Times a domain asked us to slow down (421, too many connections)",
            ["domain"],
            registry=r,
        )
        self.cuts = Counter(
            "mailer_throttle_cuts",
            "Cuts of a domain's rate made by this worker, by reason (421, busy, deferral_share)",
            ["domain", "reason"],
            registry=r,
        )
        self._domain_rates = _DomainRates()
        r.register(self._domain_rates)
        self.queue_depth = Gauge(
            "mailer_queue_depth",
            "Items waiting between pipeline stages (send: rendered, waiting for a sender; "
            "record: outcomes not yet written)",
            ["stage"],
            registry=r,
        )
        self.connections = Gauge(
            "mailer_smtp_connections_open", "SMTP connections currently open", registry=r
        )
        self.claimed = Counter(
            "mailer_claimed_deliveries", "Deliveries claimed from the ledger", registry=r
        )
        self.released = Counter(
            "mailer_released_deliveries",
            "Claimed deliveries handed back (shutdown, pause), never sent",
            registry=r,
        )
        self.requeued = Counter(
            "mailer_requeued_deliveries",
            "Deliveries claimed by a worker that died, never started: queued again",
            registry=r,
        )
        self.uncertain = Counter(
            "mailer_uncertain_deliveries",
            "Deliveries started by a worker that died, without an outcome (not resent)",
            registry=r,
        )
        self.progress = Gauge(
            "mailer_campaign_deliveries",
            "Deliveries of running campaigns by status",
            ["campaign", "status"],
            registry=r,
        )

    def serve(self, port: int) -> None:
        """Expose /metrics on 127.0.0.1:port (0 disables)."""
        if port:
            start_http_server(port, addr="127.0.0.1", registry=self.registry)

    def watch_domain_rates(self, source: Callable[[], Iterable[tuple[str, float]]]) -> None:
        """Report mailer_throttle_domain_rate from `source` at each scrape."""
        self._domain_rates.source = source

    def watch_queue(self, stage: str, depth: Callable[[], float]) -> None:
        """Report a stage's queue depth from `depth` at each scrape: never stale."""
        self.queue_depth.labels(stage).set_function(depth)


class _DomainRates(Collector):
    """The effective rate of each domain, computed when scraped (it recovers with time)."""

    NAME = "mailer_throttle_domain_rate"
    HELP = "Messages per second a recipient domain is allowed now (configured rate after cuts)"

    def __init__(self) -> None:
        self.source: Callable[[], Iterable[tuple[str, float]]] = lambda: ()

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(self.NAME, self.HELP, labels=["domain"])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(self.NAME, self.HELP, labels=["domain"])
        for domain, rate in self.source():
            family.add_metric([domain], rate)
        yield family
