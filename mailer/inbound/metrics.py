"""inbound serve's Prometheus metrics (mailer_inbound_*, mailer_guard_*), one registry each.

The mailto unsubscribe is counted by the opt-out metrics the tracker also exports
(mailer/optouts/metrics.py): one family for every opt-out, whatever the door.
"""

from __future__ import annotations

import logging
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from mailer.inbound.classify import Kind
from mailer.optouts.metrics import OptOutMetrics

log = logging.getLogger(__name__)


class GuardMetrics:
    """The reputation guard's metrics, in the registry of whichever process runs it.

    `inbound serve` and `mailer worker` both run the guard: each exports these on its own
    /metrics, so the alert rules see a pause whichever process made it.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.pauses = Counter(
            "mailer_guard_pauses",
            "Campaigns paused by the reputation guard, by reason (hard_bounce_rate, "
            "complaint_rate)",
            ["reason"],
            registry=r,
        )
        self.rate = Gauge(
            "mailer_guard_rate",
            "A running campaign's rate in the guard's window, by campaign and rate "
            "(hard_bounce, complaint); compare with mailer_guard_threshold",
            ["campaign", "rate"],
            registry=r,
        )
        self.threshold = Gauge(
            "mailer_guard_threshold",
            "The rate at which the guard pauses a campaign, by campaign and rate",
            ["campaign", "rate"],
            registry=r,
        )


class InboundMetrics:
    """Every inbound metric, registered in this object's own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.messages = Counter(
            "mailer_inbound_messages",
            "Inbound messages processed, by kind (dsn_hard, dsn_soft, complaint, unsubscribe, "
            "autoreply, unmatched)",
            ["kind"],
            registry=r,
        )
        for kind in Kind:  # every kind shows, zeros included, from the first scrape
            self.messages.labels(kind.value)
        self.received = Counter(
            "mailer_inbound_received",
            "Messages stored before answering, by source and outcome (stored, duplicate)",
            ["source", "outcome"],
            registry=r,
        )
        self.rejected = Counter(
            "mailer_inbound_rejected",
            "SMTP commands refused, by reason (unknown_recipient, bad_token, "
            "too_many_recipients, too_big, store_failed, too_many_connections)",
            ["reason"],
            registry=r,
        )
        self.forged_tokens = Counter(
            "mailer_inbound_forged_tokens",
            "Tokens of our shape that failed verification, by where they were seen",
            ["where"],
            registry=r,
        )
        self.processing_seconds = Histogram(
            "mailer_inbound_processing_seconds",
            "Time from a message stored to its effects committed",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=r,
        )
        self.unmatched_backlog = Gauge(
            "mailer_inbound_unmatched_backlog",
            "Unmatched messages kept for the operator and not yet dismissed",
            registry=r,
        )
        self.connections = Gauge("mailer_inbound_connections", "SMTP connections open", registry=r)
        self.webhooks = Counter(
            "mailer_inbound_webhooks",
            "ESP webhook calls, by provider and outcome (stored, duplicate, refused)",
            ["provider", "outcome"],
            registry=r,
        )
        self.guard = GuardMetrics(r)
        self.optouts = OptOutMetrics(r)

    def unmatched_added(self, count: int) -> None:
        """Unmatched messages just processed raise the backlog until the next refresh."""
        if count:
            self.unmatched_backlog.inc(count)

    def serve(self, port: int, host: str = "127.0.0.1") -> WSGIServer | None:
        """Serve /metrics on `port` (0: don't); the server runs in a daemon thread."""
        if not port:
            return None
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        log.debug("metrics on %s:%d", host, port)
        return server
