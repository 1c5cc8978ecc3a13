"""Render benchmark: messages/second for the sample campaign on one core.

Measured in one run, on the same contacts:
  floor     bare Jinja2 render of the same html + text templates (plain Environment,
            compiled once, a ready-made context): the limit;
  full      our pipeline, `Composer.compose`: sandboxed render with link slots, consent
            sentence, 4 signed tokens + click tokens, pixel, MIME assembly (QP text, base64 html),
            SHA-256, archive record; tracking on;
  untracked the same with tracking off for the contact (no pixel, no click tokens);
  naive     what per-message link rewriting would cost: full render, then
            links.find_links + links.rewrite on every message (the design avoided);
  dkim      full + DKIM signing (dkimpy, RSA-2048), on fewer messages.
Then the ratio full/floor (goal: >= 0.40) and where the time goes (cProfile).

    .venv/bin/python bench/render.py [--messages 3000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import gc
import os
import pstats
import statistics
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from jinja2 import DictLoader, Environment, pass_context, select_autoescape

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailer.campaigns.definition import CampaignDefinition, load  # noqa: E402
from mailer.campaigns.message import Composed, Composer, DkimKey, Recipient  # noqa: E402
from mailer.campaigns.render import Renderer, RenderInputs, TemplateSet  # noqa: E402
from mailer.core.consent import Kind  # noqa: E402
from mailer.core.footer import LABELS, format_date  # noqa: E402
from mailer.core.links import find_links, rewrite  # noqa: E402
from mailer.core.tokens import Keyring  # noqa: E402

TEMPLATES = ROOT / "templates"
NOW = datetime(2024, 10, 1, 13, tzinfo=UTC)
FIRST = ["Marie", "Jean", "Chloé", "Luc", "Amélie", "Olivier", "Zoé", "Samuel", "Léa", "Noah"]
LAST = ["Tremblay", "Gagnon", "Roy", "Côté", "Bouchard", "Gauthier", "Morin", "Lavoie"]
CARS = ["Toyota RAV4 2019", "Honda Civic 2021", "Ford F-150 2018", "Kia Soul 2020"]


def recipients(definition: CampaignDefinition, n: int) -> list[Recipient]:
    """n distinct contacts: 2/3 French, 1/3 English, every consent kind."""
    kinds = list(Kind)
    return [
        Recipient(
            delivery_id=1_000_000 + i,
            email=f"contact{i}@example.com",
            name=f"{FIRST[i % len(FIRST)]} {LAST[i % len(LAST)]}",
            locale="en" if i % 3 == 0 else "fr-CA",
            attributes={
                "vehicle": CARS[i % len(CARS)],
                "next_service": (NOW + timedelta(days=i % 60)).date().isoformat(),
                "mileage": 20_000 + 37 * i,
            },
            consent_kind=kinds[i % len(kinds)],
            consent_source="Salon E-commerce Paris",
            consent_obtained_at=datetime(2012, 9, 19, 12, tzinfo=UTC) + timedelta(days=i % 400),
        )
        for i in range(n)
    ]


def floor_renderer(templates: TemplateSet) -> Callable[[Recipient], tuple[str, str]]:
    """The bare Jinja2 render: same files, plain Environment, a ready-made context."""
    env = Environment(
        loader=DictLoader(dict(templates.files)),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["date"] = pass_context(
        lambda ctx, value: format_date(date.fromisoformat(value), ctx["locale"])
    )
    env.filters["number"] = pass_context(
        lambda ctx, v: f"{v:,}".replace(",", "\u00a0" if ctx["locale"] == "fr" else ",")
    )
    compiled = {
        "fr": (
            env.get_template("service_reminder.fr.html"),
            env.get_template("service_reminder.fr.txt"),
        ),
        "en": (env.get_template("service_reminder.html"), env.get_template("service_reminder.txt")),
    }
    sender = {
        "business_name": "Garage Tremblay Automobiles",
        "postal_address": "2450, boulevard Laurier, Québec (Québec)  G1V 2L1, Canada",
        "phone": "+1 418-555-0142",
        "email": "",
        "web": "https://garage-tremblay.example",
    }

    def render(r: Recipient) -> tuple[str, str]:
        locale = "en" if r.locale == "en" else "fr"
        context: dict[str, Any] = {
            "locale": locale,
            "contact": {"name": r.name, "email": r.email},
            "attributes": r.attributes,
            "sender": sender,
            "campaign": {"name": "x", "slug": "y"},
            "consent_sentence": "You receive this email because you subscribed.",
            "unsubscribe_url": f"https://t.example/u/{r.delivery_id}",
            "preferences_url": f"https://t.example/p/{r.delivery_id}",
            "footer": LABELS[locale],
        }
        html_t, text_t = compiled[locale]
        return html_t.render(context), text_t.render(context)

    return render


def drain(function: Callable[[Any], object], items: list[Any]) -> None:
    """Call function on every item, keeping nothing (an engine sends and forgets)."""
    deque(map(function, items), maxlen=0)


def rates(runs: dict[str, tuple[Callable[[], object], int]], repeats: int) -> dict[str, float]:
    """Median messages/second per variant; variants alternate so they share the same noise."""
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, (run, n) in runs.items():
            # CPU time of this process: other work on the machine does not count against us.
            start = time.process_time()
            run()
            samples[name].append(n / (time.process_time() - start))
    return {name: statistics.median(values) for name, values in samples.items()}


def dkim_key() -> DkimKey | None:
    try:
        pem = subprocess.run(
            ["openssl", "genrsa", "2048"], capture_output=True, check=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return DkimKey("bench", "garage-tremblay.example", pem)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core

    definition = load(TEMPLATES / "service_reminder.toml", TEMPLATES)
    templates = TemplateSet.load(TEMPLATES, definition.template)
    renderer = Renderer(templates)
    keyring = Keyring([(1, b"b" * 32)])
    link_ids = {url: i + 1 for i, url in enumerate(renderer.links)}

    def composer(key: DkimKey | None = None) -> Composer:
        return Composer(
            definition,
            renderer,
            keyring,
            tracker_base_url="https://t.garage-tremblay.example",
            sender_domain="mail.garage-tremblay.example",
            link_ids=link_ids,
            dkim_key=key,
        )

    full = composer()
    people = recipients(definition, args.messages)
    untracked = [dataclasses.replace(r, tracking=False) for r in people]
    floor = floor_renderer(templates)
    sizes = [len(full.compose(r, NOW).data) for r in people[:50]]

    def naive_one(r: Recipient) -> str:
        # The per-message alternative: render untracked, then parse and rewrite the HTML.
        inputs = full.compose(dataclasses.replace(r, tracking=False), NOW).archive["render"]
        parts = renderer.render(RenderInputs.from_json(inputs))
        found = find_links(parts.html, skip_urls=(inputs["unsubscribe_url"],))
        return rewrite(parts.html, found, lambda url: "https://t.garage-tremblay.example/c/x")

    n = args.messages
    gc.freeze()  # what a long-running worker does after start-up (see README)

    def compose(r: Recipient) -> Composed:
        return full.compose(r, NOW)

    drain(floor, people)  # warm-up: caches, lazy imports
    drain(compose, people)
    results = rates(
        {
            "floor": (lambda: drain(floor, people), n),
            "full": (lambda: drain(compose, people), n),
            "untracked": (lambda: drain(compose, untracked), n),
            "naive": (lambda: drain(naive_one, people[: n // 3]), n // 3),
        },
        args.repeats,
    )
    key = dkim_key()
    if key is not None:
        signer = composer(key)

        def sign_compose(r: Recipient) -> Composed:
            return signer.compose(r, NOW)

        few = people[: max(1, n // 20)]
        results |= rates({"dkim": (lambda: drain(sign_compose, few), len(few))}, 3)

    print(f"sample campaign, {n} messages x {args.repeats} runs, one core, median")
    print(f"message size: {statistics.mean(sizes) / 1024:.1f} KiB (html part ~5 KB)")
    for name, value in results.items():
        print(f"  {name:<10} {value:8.0f} msg/s   {1e6 / value:7.0f} µs/msg")
    ratio = results["full"] / results["floor"]
    print(f"  full / floor = {ratio:.2f}  (goal >= 0.40)")

    profiler = cProfile.Profile()
    profiler.enable()
    for r in people:
        full.compose(r, NOW)
    profiler.disable()
    stats = pstats.Stats(profiler)
    print("\nwhere the time goes (full pipeline, cProfile cumulative time, share of compose):")
    steps = {
        "compose": ("message.py", "compose"),
        "  render: subject+html+text, slots": ("render.py", "render"),
        "  token signing (all 9)": ("tokens.py", "sign"),
        "    of which inside render (clicks)": ("message.py", "__missing__"),
        "  MIME assembly + base64": ("message.py", "assemble"),
        "  consent sentence + context": ("render.py", "_context"),
    }
    table: dict[tuple[str, str], float] = {}
    for (filename, _, function), row in stats.stats.items():  # type: ignore[attr-defined]
        where = (Path(filename).name, function)
        table[where] = table.get(where, 0.0) + row[3]
    total = table[steps["compose"]]
    for label, step in steps.items():
        print(f"  {label:<38} {100 * table.get(step, 0.0) / total:5.1f} %")
    print("\ntop functions by internal time:")
    stats.sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()
