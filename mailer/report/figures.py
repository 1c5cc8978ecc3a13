"""A campaign's report: the figures, and their terminal, HTML and JSON renderings.

Pure: values in, text or rich renderables out. Store.campaign_report_rows gathers
the rows (delivery ledger, event rollups, opt-outs, complaints) and `assemble`
makes the figures; `figures` and `report`, at the end, are the only functions
here that do I/O (through the store, and the --html file).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import html
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from mailer.core.consent import REASON_TEXT, Reason

if TYPE_CHECKING:
    from mailer.store import Store

# Every delivery state, in ledger order (DESIGN: the delivery ledger); a report
# shows them all, zeros included, so its total is visibly the whole ledger.
OUTCOMES = ("queued", "sending", "sent", "deferred", "bounced", "failed", "skipped", "uncertain")
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
            "open_rate": _ratio(self.opens.unique_all, sent),
            "human_open_rate": _ratio(self.opens.unique_human, sent),
            "click_through_rate": _ratio(self.clicks.unique_all, sent),
            "human_click_through_rate": _ratio(self.clicks.unique_human, sent),
            "human_click_to_open_rate": _ratio(self.clicks.unique_human, self.opens.unique_human),
            "unsubscribe_rate": _ratio(self.unsubscribes.people, sent),
            "complaint_rate": _ratio(self.complaints, sent),
            "bounce_rate": _ratio(bounced, sent + bounced),
        }


def _ratio(part: int, whole: int) -> float | None:
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
    )


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


# ---------------------------------------------------------------- JSON


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
    )


# ---------------------------------------------------------------- sections


@dataclass(frozen=True, slots=True)
class Section:
    """One titled table of the report, shared by the terminal and HTML renderings."""

    key: str
    title: str
    head: tuple[str, ...]
    align: str  # one letter per column: l(eft) or r(ight)
    rows: Sequence[tuple[str, ...]]
    detail_rows: frozenset[int] = frozenset()  # indices of rows shown dimmed, indented
    notes: tuple[str, ...] = ()


def _n(value: int) -> str:
    return f"{value:,}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _when(value: datetime | None) -> str:
    return "–" if value is None else f"{value.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def _step_text(step: timedelta) -> str:
    hours = round(step.total_seconds() / 3600)
    return f"{hours // 24} d" if hours % 24 == 0 else f"{hours} h"


def headline(f: ReportFigures) -> str:
    """The campaign, its state and the report's time, on two lines."""
    return (
        f"{f.slug} — {f.name}: {f.status}, topic {f.topic}\n"
        f"audience frozen {_when(f.audience_at)}, started {_when(f.started_at)}, "
        f"finished {_when(f.finished_at)}, report at {_when(f.generated_at)}"
    )


def sections(f: ReportFigures, *, reasons: int = 10, time_rows: int = 24) -> list[Section]:
    """The report's tables, in order; `reasons` and `time_rows` bound the longest lists."""
    rates = f.rates()
    return [
        _audience(f),
        _deliveries(f),
        _engagement(f, rates),
        _links(f),
        _optouts(f, rates, reasons),
        _over_time(f, time_rows),
    ]


def _audience(f: ReportFigures) -> Section:
    rows: list[tuple[str, ...]] = [("not frozen yet", "", "")]
    if f.audience:
        known = [r for r in Reason if r.value in f.audience]
        other = sorted(k for k in f.audience if k != "eligible" and k not in known)
        rows = [("eligible", _n(f.audience.get("eligible", 0)), "")]
        rows += [(r.value, _n(f.audience[r.value]), REASON_TEXT[r]) for r in known]
        rows += [(k, _n(f.audience[k]), "") for k in other]
        rows.append(("considered", _n(sum(f.audience.values())), ""))
    return Section("audience", "Audience", ("", "contacts", "excluded because"), "lrl", rows)


def _deliveries(f: ReportFigures) -> Section:
    rows: list[tuple[str, ...]] = []
    detail = set()
    for state, n in f.outcomes.items():
        rows.append((state, _n(n), _pct(_ratio(n, f.deliveries))))
        for why, count in f.outcome_details.get(state, {}).items():
            detail.add(len(rows))
            rows.append((f"  {why}", _n(count), ""))
    rows.append(("total", _n(f.deliveries), ""))
    eligible = f.audience.get("eligible", 0)
    notes = (
        ()
        if f.adds_up
        else (
            f"The ledger holds {f.deliveries:,} deliveries for {eligible:,} eligible contacts: "
            "the report does not add up.",
        )
    )
    head = ("state", "deliveries", "share")
    return Section("deliveries", "Deliveries", head, "lrr", rows, frozenset(detail), notes)


def _engagement(f: ReportFigures, rates: Mapping[str, float | None]) -> Section:
    rows = [
        (
            label,
            _n(e.unique_human),
            _n(e.unique_all),
            _n(e.human_events),
            _n(e.events),
            _pct(rates[human]),
            _pct(rates[every]),
        )
        for label, e, human, every in (
            ("opens", f.opens, "human_open_rate", "open_rate"),
            ("clicks", f.clicks, "human_click_through_rate", "click_through_rate"),
        )
    ]
    note = (
        f"Rates are over messages sent. Click-through rate {_pct(rates['click_through_rate'])} "
        f"(human {_pct(rates['human_click_through_rate'])}); click-to-open (human) "
        f"{_pct(rates['human_click_to_open_rate'])}. Machine events come from mail privacy "
        "proxies, image prefetchers and link scanners."
    )
    head = (
        "",
        "unique human",
        "unique all",
        "events human",
        "events all",
        "rate human",
        "rate all",
    )
    return Section("engagement", "Opens and clicks", head, "lrrrrrr", rows, notes=(note,))


def _links(f: ReportFigures) -> Section:
    rows = [
        (
            x.url,
            _n(x.clicks.human_events),
            _n(x.clicks.events),
            _n(x.clicks.unique_human),
            _n(x.clicks.unique_all),
        )
        for x in f.links
    ]
    head = ("link", "clicks human", "clicks all", "unique human", "unique all")
    return Section("links", "Links", head, "lrrrr", rows or [("no tracked links", "", "", "", "")])


def _optouts(f: ReportFigures, rates: Mapping[str, float | None], reasons: int) -> Section:
    u = f.unsubscribes
    rows = [(f"unsubscribed ({_pct(rates['unsubscribe_rate'])} of sent)", _n(u.people))]
    detail = set()
    for label, counts in (("scope", u.by_scope), ("method", u.by_method)):
        for key, n in counts.items():
            detail.add(len(rows))
            rows.append((f"  {label}: {key}", _n(n)))
    for text, n in list(u.reasons.items())[:reasons]:
        detail.add(len(rows))
        rows.append((f"  “{text}”", _n(n)))
    rows.append((f"complaints ({_pct(rates['complaint_rate'])} of sent)", _n(f.complaints)))
    more = len(u.reasons) - reasons
    notes = (f"{more:,} more reasons in the JSON output.",) if more > 0 else ()
    title = "Unsubscribes and complaints"
    return Section("optouts", title, ("", "people"), "lr", rows, frozenset(detail), notes)


def _over_time(f: ReportFigures, time_rows: int) -> Section:
    step, points = timeline(f.hourly, time_rows)
    rows = [
        (
            f"{p.hour:%Y-%m-%d %H:%M}",
            _n(p.opens_human),
            _n(p.opens_human + p.opens_machine),
            _n(p.clicks_human),
            _n(p.clicks_human + p.clicks_machine),
        )
        for p in points
    ]
    start = f"from (UTC, per {_step_text(step)})"
    head = (start, "opens human", "opens all", "clicks human", "clicks all")
    empty = [("no opens or clicks yet", "", "", "", "")]
    return Section("time", "Opens and clicks over time", head, "lrrrr", rows or empty)


# ---------------------------------------------------------------- terminal


def render_rich(figures: ReportFigures) -> RenderableType:
    """The report as rich tables for the terminal."""
    parts: list[RenderableType] = [Text(headline(figures), style="bold")]
    for s in sections(figures):
        table = Table(title=s.title, title_justify="left", title_style="bold")
        for name, align in zip(s.head, s.align, strict=True):
            table.add_column(name, justify="right" if align == "r" else "left", overflow="fold")
        for i, row in enumerate(s.rows):
            # Text cells, not markup: URLs and reasons are other people's text.
            table.add_row(*(Text(c) for c in row), style="dim" if i in s.detail_rows else None)
        parts.append(table)
        parts.extend(Text(note, style="italic") for note in s.notes)
    if not figures.adds_up:
        parts.append(Text("the report does not add up to the audience", style="bold red"))
    return Group(*parts)


# ---------------------------------------------------------------- HTML

# No external asset of any kind: the page is one file that opens offline and
# calls nothing when an operator forwards it. The CSP holds that even if some
# text ever escaped its escaping.
_CSP = "default-src 'none'; style-src 'unsafe-inline'"
_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:62rem;padding:0 1rem}
h1{font-size:1.5rem;margin-bottom:.2rem}
h2{font-size:1.1rem;margin-top:2rem;border-bottom:1px solid #d0d7de}
.meta,.note{color:#57606a}table{border-collapse:collapse;margin:.5rem 0}
td,th{padding:.2rem .7rem;border-bottom:1px solid #eaeef2;text-align:left;vertical-align:top}
.r{text-align:right;font-variant-numeric:tabular-nums}tr.sub td{color:#57606a}
tr.sub td:first-child{padding-left:1.8rem}
td{overflow-wrap:anywhere}.cards{display:flex;flex-wrap:wrap;gap:.8rem}
.card{border:1px solid #d0d7de;border-radius:6px;padding:.5rem .9rem}
.card b{display:block;font-size:1.3rem}svg text{font:11px system-ui,sans-serif;fill:#57606a}
"""
_COLOURS = {
    "queued": "#8c959f",
    "sending": "#bf8700",
    "sent": "#1a7f37",
    "deferred": "#d4a72c",
    "bounced": "#cf222e",
    "failed": "#82071e",
    "skipped": "#6e7781",
    "uncertain": "#8250df",
}
# Chart series: (label, colour, dashed); every event solid, people only dashed.
_SERIES = (
    ("opens", "#0969da", False),
    ("opens, human", "#0969da", True),
    ("clicks", "#bf3989", False),
    ("clicks, human", "#bf3989", True),
)


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _html_table(s: Section) -> str:
    def cells(tag: str, row: tuple[str, ...]) -> str:
        return "".join(
            f'<{tag} class="r">{_e(c)}</{tag}>' if a == "r" else f"<{tag}>{_e(c)}</{tag}>"
            for c, a in zip(row, s.align, strict=True)
        )

    body = "".join(
        f'<tr class="sub">{cells("td", row)}</tr>'
        if i in s.detail_rows
        else f"<tr>{cells('td', row)}</tr>"
        for i, row in enumerate(s.rows)
    )
    return f"<table><thead><tr>{cells('th', s.head)}</tr></thead><tbody>{body}</tbody></table>"


def render_html(figures: ReportFigures) -> str:
    """A self-contained HTML page: inline CSS and SVG charts; no script, link or image."""
    f, rates = figures, figures.rates()
    title, meta = headline(f).split("\n")
    cards = (
        ("sent", _n(f.outcomes.get("sent", 0))),
        ("opened, human", f"{_n(f.opens.unique_human)} · {_pct(rates['human_open_rate'])}"),
        ("click-through, human", _pct(rates["human_click_through_rate"])),
        ("click-through, all", _pct(rates["click_through_rate"])),
        ("unsubscribed", f"{_n(f.unsubscribes.people)} · {_pct(rates['unsubscribe_rate'])}"),
        ("complaints", f"{_n(f.complaints)} · {_pct(rates['complaint_rate'])}"),
    )
    body = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">{_e(meta)}</p>',
        '<div class="cards">'
        + "".join(f'<div class="card">{_e(k)}<b>{_e(v)}</b></div>' for k, v in cards)
        + "</div>",
    ]
    # Tracked URLs appear as text only, never as links: the page must not call
    # out, and a click from it would be counted as the campaign's.
    for s in sections(f, reasons=50):
        body.append(f"<h2>{_e(s.title)}</h2>")
        if s.key == "deliveries":
            body.append(_bar_chart(f.outcomes))
        if s.key == "time":
            body.append(_line_chart(f.hourly))
        else:
            body.append(_html_table(s))
        body.extend(f'<p class="note">{_e(note)}</p>' for note in s.notes)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Campaign report: {_e(f.slug)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _bar_chart(outcomes: Mapping[str, int]) -> str:
    """Deliveries by state as horizontal bars (inline SVG)."""
    width, row, label_w, value_w = 640, 22, 90, 90
    peak = max(outcomes.values(), default=0) or 1
    bars = []
    for i, (state, n) in enumerate(outcomes.items()):
        y, length = i * row, (width - label_w - value_w) * n / peak
        bars.append(
            f'<text x="0" y="{y + 15}">{_e(state)}</text>'
            f'<rect x="{label_w}" y="{y + 4}" width="{length:.1f}" height="{row - 8}" '
            f'fill="{_COLOURS.get(state, "#57606a")}"><title>{_e(state)}: {n:,}</title></rect>'
            f'<text x="{label_w + length + 6:.1f}" y="{y + 15}">{n:,}</text>'
        )
    height = row * len(outcomes)
    return (
        f'<svg role="img" aria-label="deliveries by state" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">{"".join(bars)}</svg>'
    )


def _line_chart(hourly: Iterable[HourFigures]) -> str:
    """Opens and clicks per time bucket, all and human only, as an inline SVG line chart."""
    step, points = timeline(hourly, 400)
    if not points:
        return '<p class="note">No opens or clicks yet.</p>'
    width, height, left, right, top, bottom = 720, 260, 56, 16, 28, 36
    span_x, span_y = width - left - right, height - top - bottom
    series = [
        [p.opens_human + p.opens_machine for p in points],
        [p.opens_human for p in points],
        [p.clicks_human + p.clicks_machine for p in points],
        [p.clicks_human for p in points],
    ]
    peak = max(max(values) for values in series) or 1

    def x(i: int) -> float:
        return left + (span_x * i / (len(points) - 1) if len(points) > 1 else span_x / 2)

    def y(v: int) -> float:
        return top + span_y * (1 - v / peak)

    parts = [
        f'<path d="M{left} {top}V{top + span_y}H{width - right}" fill="none" stroke="#d0d7de"/>',
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end">{peak:,}</text>',
        f'<text x="{left - 6}" y="{top + span_y}" text-anchor="end">0</text>',
    ]
    for i in sorted({0, len(points) // 2, len(points) - 1}):
        anchor = "start" if i == 0 else "end" if i == len(points) - 1 else "middle"
        parts.append(
            f'<text x="{x(i):.1f}" y="{height - 12}" text-anchor="{anchor}">'
            f"{points[i].hour:%Y-%m-%d %H:%M}</text>"
        )
    for k, ((label, colour, dashed), values) in enumerate(zip(_SERIES, series, strict=True)):
        dash = ' stroke-dasharray="5 3"' if dashed else ""
        coords = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
        parts.append(
            f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="1.6"{dash}>'
            f"<title>{_e(label)}</title></polyline>"
            f'<line x1="{left + k * 150}" y1="10" x2="{left + k * 150 + 22}" y2="10" '
            f'stroke="{colour}" stroke-width="2"{dash}/>'
            f'<text x="{left + k * 150 + 28}" y="14">{_e(label)}</text>'
        )
    return (
        f'<svg role="img" aria-label="opens and clicks over time" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">{"".join(parts)}</svg>'
        f'<p class="note">Per {_step_text(step)}, UTC.</p>'
    )


# ---------------------------------------------------------------- CLI


async def figures(store: Store, campaign_id: int) -> ReportFigures:
    """One campaign's figures: the store folds new events in, then reads rollups and ledger."""
    return assemble(**await store.campaign_report_rows(campaign_id))


async def report(args: argparse.Namespace, store: Store, console: Console) -> int:
    """`mailer campaign report C [--html FILE] [--json]`: print the report, write the page."""
    spec = await store.campaign_spec(args.campaign)
    if spec is None:
        console.print(f"[red]error:[/] no campaign {args.campaign!r}")
        return 2
    found = await figures(store, spec.id)
    if args.json:
        # Raw text: no wrapping, markup or highlighting, so the output parses.
        console.out(render_json(found), highlight=False)
    else:
        console.print(render_rich(found))
    if args.html:
        out = Path(args.html)
        await asyncio.to_thread(out.write_text, render_html(found), encoding="utf-8")
        if not args.json:
            console.print(f"wrote {out}")
    return 0
