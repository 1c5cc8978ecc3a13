"""Figures across campaigns over a period: one line per campaign and their total.

The same figures as a campaign's report (report/figures.py), for the console's
cross-campaign report and its CSV: opens and clicks by people and in all,
bounces by type, opt-outs by scope, complaints. Pure; ReportStore.across_campaigns
reads the lines.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime

from mailer.report.figures import Engagement, ratio


@dataclass(frozen=True, slots=True)
class CampaignLine:
    """One campaign's figures (or, slug None, the total of several)."""

    slug: str | None
    name: str
    status: str
    started_at: datetime | None
    sent: int = 0
    opens: Engagement = field(default_factory=Engagement)
    clicks: Engagement = field(default_factory=Engagement)
    hard_bounces: int = 0
    soft_bounces: int = 0
    unsubscribed: int = 0  # people who opted out from the campaign's messages
    unsubscribes_by_scope: dict[str, int] = field(default_factory=dict)
    complaints: int = 0

    @property
    def human_open_rate(self) -> float | None:
        return ratio(self.opens.unique_human, self.sent)

    @property
    def human_click_rate(self) -> float | None:
        return ratio(self.clicks.unique_human, self.sent)


def _add(a: Engagement, b: Engagement) -> Engagement:
    return Engagement(
        a.human_events + b.human_events,
        a.machine_events + b.machine_events,
        a.unique_all + b.unique_all,
        a.unique_human + b.unique_human,
    )


def total(lines: Iterable[CampaignLine], name: str = "total") -> CampaignLine:
    """The sum of the lines. A person who opted out from two campaigns counts in each."""
    out = CampaignLine(None, name, "", None)
    scopes: dict[str, int] = {}
    for line in lines:
        for scope, n in line.unsubscribes_by_scope.items():
            scopes[scope] = scopes.get(scope, 0) + n
        out = CampaignLine(
            None,
            name,
            "",
            None,
            sent=out.sent + line.sent,
            opens=_add(out.opens, line.opens),
            clicks=_add(out.clicks, line.clicks),
            hard_bounces=out.hard_bounces + line.hard_bounces,
            soft_bounces=out.soft_bounces + line.soft_bounces,
            unsubscribed=out.unsubscribed + line.unsubscribed,
            complaints=out.complaints + line.complaints,
        )
    return replace(out, unsubscribes_by_scope=scopes)


def scopes_of(lines: Iterable[CampaignLine]) -> list[str]:
    """Every opt-out scope the lines name (email, sms…, topic), in a stable order."""
    return sorted({scope for line in lines for scope in line.unsubscribes_by_scope})


HEAD = (
    "campaign",
    "name",
    "status",
    "started",
    "sent",
    "opened (people)",
    "opened (all)",
    "opens (people)",
    "opens (all)",
    "clicked (people)",
    "clicked (all)",
    "clicks (people)",
    "clicks (all)",
    "hard bounces",
    "soft bounces",
    "unsubscribed",
)


def table(lines: list[CampaignLine]) -> tuple[list[str], list[list[object]]]:
    """Head and rows (campaigns, then the total): the page's table and the CSV's."""
    scopes = scopes_of(lines)
    head = [*HEAD, *(f"unsubscribed ({s})" for s in scopes), "complaints"]
    rows: list[list[object]] = []
    for line in [*lines, total(lines)]:
        rows.append(
            [
                line.slug or line.name,
                line.name if line.slug else "",
                line.status,
                "" if line.started_at is None else f"{line.started_at:%Y-%m-%d %H:%M}",
                line.sent,
                line.opens.unique_human,
                line.opens.unique_all,
                line.opens.human_events,
                line.opens.events,
                line.clicks.unique_human,
                line.clicks.unique_all,
                line.clicks.human_events,
                line.clicks.events,
                line.hard_bounces,
                line.soft_bounces,
                line.unsubscribed,
                *(line.unsubscribes_by_scope.get(s, 0) for s in scopes),
                line.complaints,
            ]
        )
    return head, rows
