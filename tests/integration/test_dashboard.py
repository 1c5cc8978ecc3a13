"""The Grafana dashboard only queries metrics the processes export, and what they export
passes Prometheus' own lint (promtool), as does the scrape config."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mailer.inbound.metrics import InboundMetrics
from mailer.send.lane import LaneMetrics
from mailer.send.metrics import EngineMetrics
from tracker.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "config" / "grafana" / "mailer.json"
SCRAPE_CONFIG = ROOT / "config" / "prometheus.yml"
ALERT_RULES = ROOT / "config" / "prometheus" / "alerts.yml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not on PATH (Debian: apt-get install prometheus, which provides it)",
)

METRIC = re.compile(r"\b(?:mailer|tracker)_[a-z0-9_]+\b")
# Label names a query groups by or matches on: `by (a, b)` and `{a="x", b=~"y"}`.
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
MATCHERS = re.compile(r"\{([^}]*)\}")
MATCHER_LABEL = re.compile(r'([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)\s*"')
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
}


def exercised_engine() -> EngineMetrics:
    """Engine metrics with a sample in every family, so each shows its labels."""
    m = EngineMetrics()
    m.messages.labels("sent", "2xx").inc()
    m.send_seconds.observe(0.004)
    m.render_seconds.observe(0.0003)
    m.throttle_wait.labels("gmail.com").inc(0.5)
    m.slowdowns.labels("gmail.com").inc()
    m.cuts.labels("gmail.com", "421").inc()
    m.watch_domain_rates(lambda: [("gmail.com", 25.0)])
    m.deferrals.labels("gmail.com").inc()
    m.queue_depth.labels("send").set(3)
    m.connections.set(4)
    m.claimed.inc(500)
    m.released.inc(2)
    m.uncertain.inc()
    m.progress.labels("spring", "sent").set(10)
    lane = LaneMetrics(m.registry)  # the transactional lane's, on the worker's registry
    lane.messages.labels("parts_received", "sent").inc()
    lane.latency.observe(0.05)
    return m


def exercised_tracker() -> Metrics:
    """Tracker metrics with a sample in every family."""
    m = Metrics()
    m.request("open", 200)
    m.event("open", None)
    m.event("click", "scanner_agent")
    m.watch_buffer(lambda: 7)
    m.dropped("overflow", 3)
    m.flushed(120, 0.012)
    m.flush_failed()
    m.token_rejections.labels("click", "bad_signature").inc()
    m.optouts.labels("digital", "one-click", "recorded").inc()
    m.optout_seconds.observe(0.004)
    m.preference_changes.labels("topic_off").inc()
    m.database_unavailable.labels("unsubscribe", "503").inc()
    return m


def exercised_inbound() -> InboundMetrics:
    """inbound serve's metrics with a sample in every family."""
    m = InboundMetrics()
    m.messages.labels("dsn_hard").inc()
    m.received.labels("smtp", "stored").inc()
    m.rejected.labels("unknown_recipient").inc()
    m.forged_tokens.labels("rcpt").inc()
    m.processing_seconds.observe(0.2)
    m.unmatched_backlog.set(3)
    m.connections.set(2)
    m.webhooks.labels("ses", "stored").inc()
    m.guard_pauses.labels("hard_bounce_rate").inc()
    m.guard_rate.labels("spring", "hard_bounce").set(0.01)
    m.guard_threshold.labels("spring", "hard_bounce").set(0.05)
    m.optouts.recorded("digital", "mailto", True, 0.3)
    return m


def expositions() -> dict[str, bytes]:
    return {
        "mailer": generate_latest(exercised_engine().registry),
        "tracker": generate_latest(exercised_tracker().registry),
        "inbound": generate_latest(exercised_inbound().registry),
    }


def exported() -> dict[str, set[str]]:
    """Every series name the two processes can expose, with the label names each carries."""
    names: dict[str, set[str]] = {}
    for text in expositions().values():
        for family in text_string_to_metric_families(text.decode("utf-8")):
            for suffix in ("", *SUFFIXES.get(family.type, ())):
                names.setdefault(family.name + suffix, set())
            for sample in family.samples:
                names.setdefault(sample.name, set()).update(sample.labels)
    return names


def queries(node: Any) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel, rows' panels included."""
    if isinstance(node, dict):
        for target in node.get("targets", []):
            yield node.get("title", "?"), target["expr"]
        for child in node.get("panels", []):
            yield from queries(child)
    elif isinstance(node, list):
        for child in node:
            yield from queries(child)


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def test_every_metric_the_dashboard_queries_is_exported() -> None:
    names = exported()
    used = {name for _, expr in queries(dashboard()["panels"]) for name in METRIC.findall(expr)}
    assert used, "the dashboard queries no mailer_* or tracker_* metric"
    assert sorted(used - set(names)) == []


def labels_used(expr: str) -> set[str]:
    """Label names a query groups by or matches on."""
    grouped = {label.strip() for group in GROUPING.findall(expr) for label in group.split(",")}
    matched = {label for group in MATCHERS.findall(expr) for label in MATCHER_LABEL.findall(group)}
    return (grouped | matched) - {""}


def test_every_label_the_dashboard_groups_or_filters_by_exists_on_its_metrics() -> None:
    names = exported()
    # Prometheus adds job and instance to every scraped series; histograms carry le.
    always = {"job", "instance", "le"}
    for title, expr in queries(dashboard()["panels"]):
        labels = always.union(*(names.get(n, set()) for n in METRIC.findall(expr)))
        unknown = labels_used(expr) - labels
        assert not unknown, f"{title}: {expr} uses labels {sorted(unknown)}"


def test_the_dashboard_covers_what_operators_watch() -> None:
    board = dashboard()
    used = {name for _, expr in queries(board["panels"]) for name in METRIC.findall(expr)}
    for name in (
        "mailer_messages_total",  # send rate by outcome, deferrals
        "mailer_throttle_slowdowns_total",  # slow-downs by domain
        "mailer_throttle_cuts_total",
        "mailer_throttle_domain_rate",  # the rate a domain is allowed after cuts
        "mailer_throttle_wait_seconds_total",
        "mailer_queue_depth",
        "mailer_render_duration_seconds_bucket",
        "mailer_send_duration_seconds_bucket",
        "tracker_events_total",  # human vs machine
        "tracker_optouts_total",
        "tracker_event_buffer_size",
        "tracker_events_dropped_total",
        "mailer_inbound_messages_total",  # bounces, complaints, unsubscribes by kind
        "mailer_inbound_processing_seconds_bucket",
        "mailer_inbound_unmatched_backlog",
        "mailer_guard_pauses_total",
        "mailer_guard_rate",
        "mailer_transactional_total",  # transactional notices by template and outcome
        "mailer_transactional_latency_seconds_bucket",
    ):
        assert name in used, name
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    assert all(
        t["datasource"]["uid"] == "${DS_PROMETHEUS}"
        for p in board["panels"]
        for t in p.get("targets", [])
    )


@needs_promtool
@pytest.mark.parametrize("process", ["mailer", "tracker", "inbound"])
def test_exported_metrics_pass_promtool_lint(process: str) -> None:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"],
        input=expositions()[process],
        capture_output=True,
        timeout=30,
        check=False,
    )
    problems = (result.stdout + result.stderr).decode("utf-8", "replace")
    assert result.returncode == 0, problems
    assert problems.strip() == ""


@needs_promtool
def test_the_scrape_config_is_valid_for_prometheus() -> None:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "check", "config", str(SCRAPE_CONFIG)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, (result.stdout + result.stderr).decode("utf-8", "replace")


@needs_promtool
def test_the_alert_rules_are_valid_and_query_only_exported_metrics() -> None:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(ALERT_RULES)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, (result.stdout + result.stderr).decode("utf-8", "replace")
    text = ALERT_RULES.read_text(encoding="utf-8")
    assert "mailer_guard_pauses_total" in text  # the guard's pause is an alert
    assert sorted(set(METRIC.findall(text)) - set(exported())) == []


def test_the_scrape_config_names_every_process_on_its_default_port() -> None:
    text = SCRAPE_CONFIG.read_text(encoding="utf-8")
    assert re.search(r"job_name: inbound\n(?:.*\n)*?.*targets: \[\"127\.0\.0\.1:9102\"\]", text)
    assert "prometheus/alerts.yml" in text
    assert re.search(r"job_name: mailer\n(?:.*\n)*?.*targets: \[\"127\.0\.0\.1:9101\"\]", text)
    assert re.search(r"job_name: tracker\n(?:.*\n)*?.*targets: \[\"127\.0\.0\.1:8080\"\]", text)
