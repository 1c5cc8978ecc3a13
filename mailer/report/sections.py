"""The report as titled tables, shared by the terminal and HTML renderings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from mailer.core.consent import REASON_TEXT, Reason
from mailer.core.reputation import describe
from mailer.report.figures import ReportFigures, ratio, timeline


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


def number(value: int) -> str:
    return f"{value:,}"


def percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def when(value: datetime | None) -> str:
    return "–" if value is None else f"{value.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def step_text(step: timedelta) -> str:
    hours = round(step.total_seconds() / 3600)
    return f"{hours // 24} d" if hours % 24 == 0 else f"{hours} h"


def headline(f: ReportFigures) -> str:
    """The campaign, its state and the report's time, on two lines."""
    text = (
        f"{f.slug} — {f.name}: {f.status}, topic {f.topic}\n"
        f"audience frozen {when(f.audience_at)}, started {when(f.started_at)}, "
        f"finished {when(f.finished_at)}, report at {when(f.generated_at)}"
    )
    if f.pause_reason and f.status == "paused":
        text += "\n" + describe(f.pause_reason)
    return text


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
        rows = [("eligible", number(f.audience.get("eligible", 0)), "")]
        rows += [(r.value, number(f.audience[r.value]), REASON_TEXT[r]) for r in known]
        rows += [(k, number(f.audience[k]), "") for k in other]
        rows.append(("considered", number(sum(f.audience.values())), ""))
    return Section("audience", "Audience", ("", "contacts", "excluded because"), "lrl", rows)


def _deliveries(f: ReportFigures) -> Section:
    rows: list[tuple[str, ...]] = []
    detail = set()
    for state, n in f.outcomes.items():
        rows.append((state, number(n), percent(ratio(n, f.deliveries))))
        for why, count in f.outcome_details.get(state, {}).items():
            detail.add(len(rows))
            rows.append((f"  {why}", number(count), ""))
    rows.append(("total", number(f.deliveries), ""))
    if f.soft_bounces:
        # Reported by DSN after the relay took the message: still sent, retried by the relay.
        rows.append(("soft-bounced after sending", number(f.soft_bounces), ""))
    eligible = f.audience.get("eligible", 0)
    notes: tuple[str, ...] = (
        ()
        if f.adds_up
        else (
            f"The ledger holds {f.deliveries:,} deliveries for {eligible:,} eligible contacts: "
            "the report does not add up.",
        )
    )
    if f.outcomes.get("uncertain"):
        notes += (
            f"{f.outcomes['uncertain']:,} uncertain: a worker died after handing these "
            "messages to the SMTP relay and before their outcome was recorded, so each may or "
            "may not have been delivered. They are not resent unless the operator runs "
            f"`mailer campaign resend-uncertain {f.slug} --yes`; those already delivered would "
            "then arrive twice.",
        )
    head = ("state", "deliveries", "share")
    return Section("deliveries", "Deliveries", head, "lrr", rows, frozenset(detail), notes)


def _engagement(f: ReportFigures, rates: Mapping[str, float | None]) -> Section:
    rows = [
        (
            label,
            number(e.unique_human),
            number(e.unique_all),
            number(e.human_events),
            number(e.events),
            percent(rates[human]),
            percent(rates[every]),
        )
        for label, e, human, every in (
            ("opens", f.opens, "human_open_rate", "open_rate"),
            ("clicks", f.clicks, "human_click_through_rate", "click_through_rate"),
        )
    ]
    note = (
        f"Rates are over messages sent. Click-through rate {percent(rates['click_through_rate'])} "
        f"(human {percent(rates['human_click_through_rate'])}); click-to-open (human) "
        f"{percent(rates['human_click_to_open_rate'])}. Machine events come from mail privacy "
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
            number(x.clicks.human_events),
            number(x.clicks.events),
            number(x.clicks.unique_human),
            number(x.clicks.unique_all),
        )
        for x in f.links
    ]
    head = ("link", "clicks human", "clicks all", "unique human", "unique all")
    return Section("links", "Links", head, "lrrrr", rows or [("no tracked links", "", "", "", "")])


def _optouts(f: ReportFigures, rates: Mapping[str, float | None], reasons: int) -> Section:
    u = f.unsubscribes
    rows = [(f"unsubscribed ({percent(rates['unsubscribe_rate'])} of sent)", number(u.people))]
    detail = set()
    for label, counts in (("scope", u.by_scope), ("method", u.by_method)):
        for key, n in counts.items():
            detail.add(len(rows))
            rows.append((f"  {label}: {key}", number(n)))
    for text, n in list(u.reasons.items())[:reasons]:
        detail.add(len(rows))
        rows.append((f"  “{text}”", number(n)))
    rows.append((f"complaints ({percent(rates['complaint_rate'])} of sent)", number(f.complaints)))
    more = len(u.reasons) - reasons
    notes = (f"{more:,} more reasons in the JSON output.",) if more > 0 else ()
    title = "Unsubscribes and complaints"
    return Section("optouts", title, ("", "people"), "lr", rows, frozenset(detail), notes)


def _over_time(f: ReportFigures, time_rows: int) -> Section:
    step, points = timeline(f.hourly, time_rows)
    rows = [
        (
            f"{p.hour:%Y-%m-%d %H:%M}",
            number(p.opens_human),
            number(p.opens_human + p.opens_machine),
            number(p.clicks_human),
            number(p.clicks_human + p.clicks_machine),
        )
        for p in points
    ]
    start = f"from (UTC, per {step_text(step)})"
    head = (start, "opens human", "opens all", "clicks human", "clicks all")
    empty = [("no opens or clicks yet", "", "", "", "")]
    return Section("time", "Opens and clicks over time", head, "lrrrr", rows or empty)
