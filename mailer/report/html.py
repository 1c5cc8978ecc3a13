"""The report as one self-contained HTML page, with its charts as inline SVG."""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping

from mailer.report.figures import HourFigures, ReportFigures, timeline
from mailer.report.sections import Section, headline, number, percent, sections, step_text

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
    "claimed": "#9a6700",
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
    title, meta = headline(f).split("\n", 1)
    cards = (
        ("sent", number(f.outcomes.get("sent", 0))),
        ("opened, human", f"{number(f.opens.unique_human)} · {percent(rates['human_open_rate'])}"),
        ("click-through, human", percent(rates["human_click_through_rate"])),
        ("click-through, all", percent(rates["click_through_rate"])),
        ("unsubscribed", f"{number(f.unsubscribes.people)} · {percent(rates['unsubscribe_rate'])}"),
        ("complaints", f"{number(f.complaints)} · {percent(rates['complaint_rate'])}"),
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
            body.append(bar_chart(f.outcomes))
        if s.key == "time":
            body.append(line_chart(f.hourly))
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


def bar_chart(outcomes: Mapping[str, int]) -> str:
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


def line_chart(hourly: Iterable[HourFigures]) -> str:
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
        f'<p class="note">Per {step_text(step)}, UTC.</p>'
    )
