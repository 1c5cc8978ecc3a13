"""The report as a JSON document, for machines, and read back."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from typing import Any

from mailer.report.figures import (
    Engagement,
    HourFigures,
    LinkFigures,
    ReportFigures,
    Unsubscribes,
)


def to_dict(figures: ReportFigures) -> dict[str, Any]:
    """The figures as JSON-ready values, with derived rates and totals for convenience."""
    out = dataclasses.asdict(figures)
    out["rates"] = figures.rates()
    out["totals"] = {
        "deliveries": figures.deliveries,
        "eligible": figures.audience.get("eligible"),
        "excluded": sum(n for k, n in figures.audience.items() if k != "eligible"),
        "adds_up": figures.adds_up,
    }
    return out


def render_json(figures: ReportFigures) -> str:
    """The report for machines: every figure, datetimes in ISO 8601."""
    return json.dumps(to_dict(figures), default=_iso, indent=2, ensure_ascii=False)


def _iso(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def figures_from_json(text: str) -> ReportFigures:
    """Read back what render_json wrote (derived rates and totals are ignored)."""
    d = json.loads(text)

    def when(value: str | None) -> datetime | None:
        return None if value is None else datetime.fromisoformat(value)

    return ReportFigures(
        campaign_id=d["campaign_id"],
        slug=d["slug"],
        name=d["name"],
        status=d["status"],
        topic=d["topic"],
        generated_at=datetime.fromisoformat(d["generated_at"]),
        audience_at=when(d["audience_at"]),
        started_at=when(d["started_at"]),
        finished_at=when(d["finished_at"]),
        audience=d["audience"],
        outcomes=d["outcomes"],
        outcome_details=d["outcome_details"],
        opens=Engagement(**d["opens"]),
        clicks=Engagement(**d["clicks"]),
        links=tuple(
            LinkFigures(x["link_id"], x["url"], Engagement(**x["clicks"])) for x in d["links"]
        ),
        hourly=tuple(HourFigures(datetime.fromisoformat(h.pop("hour")), **h) for h in d["hourly"]),
        unsubscribes=Unsubscribes(**d["unsubscribes"]),
        complaints=d["complaints"],
        soft_bounces=d.get("soft_bounces", 0),
        pause_reason=d.get("pause_reason"),
    )
