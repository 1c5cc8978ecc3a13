"""A campaign's report figures: what the terminal, HTML and JSON renderings show.

Pure: ReportStore.campaign_report_rows gathers the rows (delivery ledger, event
rollups, opt-outs, complaints) and `assemble` makes the figures; `figures` at
the end is the only function here that does I/O (through the store).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

# Every delivery state, in ledger order (DESIGN: the delivery ledger); a report
# shows them all, zeros included, so its total is visibly the whole ledger.
OUTCOMES = (
    "queued",
    "claimed",
    "sending",
    "sent",
    "deferred",
    "bounced",
    "failed",
    "skipped",
    "uncertain",
)
# Bucket widths for the time charts, smallest first: a chart gets the finest that fits.
_STEPS = tuple(timedelta(hours=h) for h in (1, 2, 3, 6, 12, 24, 48, 168))


@dataclass(frozen=True, slots=True)
class Engagement:
    """Opens or clicks: events by people and machines, and deliveries with at least one."""

    human_events: int = 0
    machine_events: int = 0
    unique_all: int = 0
    unique_human: int = 0

    @property
    def events(self) -> int:
        """Every event, people's and machines'."""
        return self.human_events + self.machine_events


@dataclass(frozen=True, slots=True)
class LinkFigures:
    """Clicks on one registered link of the campaign."""

    link_id: int
    url: str
    clicks: Engagement


@dataclass(frozen=True, slots=True)
class HourFigures:
    """Opens and clicks in one time bucket starting at `hour` (UTC)."""

    hour: datetime
    opens_human: int = 0
    opens_machine: int = 0
    clicks_human: int = 0
    clicks_machine: int = 0


@dataclass(frozen=True, slots=True)
class Unsubscribes:
    """People who opted out from this campaign's messages, split three ways."""

    people: int = 0
    by_scope: dict[str, int] = field(default_factory=dict)  # email, sms…, or topic
    by_method: dict[str, int] = field(default_factory=dict)  # one-click, form, preference centre
    reasons: dict[str, int] = field(default_factory=dict)  # the free-text reasons given


@dataclass(frozen=True)
class ReportFigures:
    """Everything a campaign report shows; renderings only format these."""

    campaign_id: int
    slug: str
    name: str
    status: str
    topic: str
    generated_at: datetime
    audience_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    audience: dict[str, int]  # campaigns.audience_counts: eligible and exclusions by reason
    outcomes: dict[str, int]  # deliveries by state, every state present
    outcome_details: dict[str, dict[str, int]]  # skip reasons; SMTP codes of bounces…
    opens: Engagement
    clicks: Engagement
    links: tuple[LinkFigures, ...]
    hourly: tuple[HourFigures, ...]
    unsubscribes: Unsubscribes
    complaints: int
    # Deliveries with a soft bounce reported after the relay took them (still `sent`).
    soft_bounces: int = 0
    # Why the reputation guard paused the campaign (campaigns.pause_reason), if it did.
    pause_reason: dict[str, Any] | None = None

    @property
    def deliveries(self) -> int:
        """Rows in the delivery ledger, whatever their state."""
        return sum(self.outcomes.values())

    @property
    def adds_up(self) -> bool:
        """The ledger holds one row per eligible contact (DESIGN: the report adds up)."""
        return not self.audience or self.audience.get("eligible", 0) == self.deliveries

    def rates(self) -> dict[str, float | None]:
        """Rates over messages sent (None while nothing was sent)."""
        sent, bounced = self.outcomes.get("sent", 0), self.outcomes.get("bounced", 0)
        return {
            "open_rate": ratio(self.opens.unique_all, sent),
            "human_open_rate": ratio(self.opens.unique_human, sent),
            "click_through_rate": ratio(self.clicks.unique_all, sent),
            "human_click_through_rate": ratio(self.clicks.unique_human, sent),
            "human_click_to_open_rate": ratio(self.clicks.unique_human, self.opens.unique_human),
            "unsubscribe_rate": ratio(self.unsubscribes.people, sent),
            "complaint_rate": ratio(self.complaints, sent),
            "bounce_rate": ratio(bounced, sent + bounced),
        }


def ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


# ---------------------------------------------------------------- assembly


def assemble(
    *,
    campaign: Mapping[str, Any],
    generated_at: datetime,
    outcomes: Iterable[Mapping[str, Any]],
    outcome_details: Iterable[Mapping[str, Any]],
    event_totals: Iterable[Mapping[str, Any]],
    event_hours: Iterable[Mapping[str, Any]],
    links: Iterable[Mapping[str, Any]],
    unsubscribes: Iterable[Mapping[str, Any]],
    complaints: int,
    soft_bounces: int = 0,
) -> ReportFigures:
    """Figures from the rows of the report_* queries (mailer/sql/report.sql)."""
    by_state = {state: 0 for state in OUTCOMES}
    for row in outcomes:
        by_state[row["status"]] = int(row["n"])
    details: dict[str, dict[str, int]] = {}
    for row in outcome_details:
        details.setdefault(row["status"], {})[row["detail"]] = int(row["n"])
    totals = {
        (r["kind"], int(r["link_id"])): Engagement(
            int(r["human_events"]),
            int(r["machine_events"]),
            int(r["unique_all"]),
            int(r["unique_human"]),
        )
        for r in event_totals
    }
    hours: dict[datetime, dict[str, int]] = {}
    for r in event_hours:
        slot = hours.setdefault(r["hour"], {})
        slot[f"{r['kind']}s_human"] = int(r["human_events"])
        slot[f"{r['kind']}s_machine"] = int(r["machine_events"])
    audience = campaign["audience_counts"]
    if isinstance(audience, str):  # jsonb arrives as text without a codec
        audience = json.loads(audience)
    return ReportFigures(
        campaign_id=int(campaign["id"]),
        slug=campaign["slug"],
        name=campaign["name"],
        status=campaign["status"],
        topic=campaign["topic"],
        generated_at=generated_at,
        audience_at=campaign["audience_at"],
        started_at=campaign["started_at"],
        finished_at=campaign["finished_at"],
        audience={str(k): int(v) for k, v in (audience or {}).items()},
        outcomes=by_state,
        outcome_details=details,
        opens=totals.get(("open", 0), Engagement()),
        clicks=totals.get(("click", 0), Engagement()),
        links=tuple(
            LinkFigures(int(r["id"]), r["url"], totals.get(("click", int(r["id"])), Engagement()))
            for r in links
        ),
        hourly=tuple(HourFigures(hour, **counts) for hour, counts in sorted(hours.items())),
        unsubscribes=_unsubscribes(unsubscribes),
        complaints=complaints,
        soft_bounces=soft_bounces,
        pause_reason=_json(campaign.get("pause_reason")),
    )


def _json(value: Any) -> dict[str, Any] | None:
    if isinstance(value, str):  # jsonb arrives as text without a codec
        value = json.loads(value)
    return dict(value) if value else None


def _unsubscribes(rows: Iterable[Mapping[str, Any]]) -> Unsubscribes:
    # grouped_out is the GROUPING(scope, method, reason) mask of report_unsubscribes.
    people, by_scope, by_method, reasons = 0, {}, {}, {}
    for r in rows:
        grouped, n = r["grouped_out"], int(r["people"])
        if grouped == 7:
            people = n
        elif grouped == 3:
            by_scope[r["scope"]] = n
        elif grouped == 5:
            by_method[r["method"]] = n
        elif grouped == 6 and r["reason"] is not None:
            reasons[r["reason"]] = n
    return Unsubscribes(people, _by_count(by_scope), _by_count(by_method), _by_count(reasons))


def _by_count(counts: dict[str, int]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def timeline(hourly: Iterable[HourFigures], max_points: int) -> tuple[timedelta, list[HourFigures]]:
    """Hourly figures in the finest bucket width giving at most `max_points`, gaps as zeros."""
    hours = sorted(hourly, key=lambda h: h.hour)
    if not hours:
        return _STEPS[0], []
    first, last = hours[0].hour, hours[-1].hour
    step = next((s for s in _STEPS if (last - first) // s < max_points), None)
    if step is None:  # longer than the widest steps allow: widen to fit
        step = (last - first) / (max_points - 1) + timedelta(hours=1)
    sums: dict[int, list[int]] = {}
    for h in hours:
        slot = sums.setdefault((h.hour - first) // step, [0, 0, 0, 0])
        for i, value in enumerate(
            (h.opens_human, h.opens_machine, h.clicks_human, h.clicks_machine)
        ):
            slot[i] += value
    count = (last - first) // step + 1
    return step, [HourFigures(first + i * step, *sums.get(i, [0, 0, 0, 0])) for i in range(count)]


class ReportRows(Protocol):
    """Where a campaign's report rows come from (mailer.report.store.ReportStore)."""

    async def campaign_report_rows(self, campaign_id: int) -> dict[str, Any]: ...


async def figures(store: ReportRows, campaign_id: int) -> ReportFigures:
    """One campaign's figures: the store folds new events in, then reads rollups and ledger."""
    return assemble(**await store.campaign_report_rows(campaign_id))
