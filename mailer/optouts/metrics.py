"""The opt-out metrics, one definition for every process that records opt-outs.

The tracker (one-click, page, preference centre) and inbound (mailto) register the same
families in their own registries: `sum by (method)` over both jobs is every opt-out.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class OptOutMetrics:
    """tracker_optouts_total and tracker_optout_seconds, in `registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.optouts = Counter(
            "tracker_optouts",
            "Opt-outs by scope, method and outcome (recorded, or already in force)",
            ["scope", "method", "outcome"],
            registry=registry,
        )
        # The unsubscribe SLA (CASL: 10 business days; Gmail/Yahoo: 2 days; ours: before
        # the answer): time from the request to the opt-out committed, after which the
        # engine's send-time re-check of every batch skips the person.
        self.optout_seconds = Histogram(
            "tracker_optout_seconds",
            "Time from an opt-out request to the opt-out being in force (committed)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )

    def recorded(self, scope: str, method: str, changed: bool, seconds: float) -> None:
        """Count one opt-out committed, and how long it took to be in force."""
        self.optouts.labels(scope, method, "recorded" if changed else "already").inc()
        self.optout_seconds.observe(seconds)
