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
Then DKIM (RSA-2048, relaxed/relaxed), alternating in one run:
  dkimpy    full, then dkimpy's sign() on the bytes (pure-Python RSA), on fewer messages;
  rsa       full with mailer.core.dkim (OpenSSL RSA through `cryptography`);
  rsa+ed    the same plus an Ed25519 signature (RFC 8463) beside it;
  sign only each signer alone on ready messages (what signing adds per message).
Then the ratios full/floor (goal: >= 0.40), signed/unsigned, ours/dkimpy, and where the
time goes (cProfile).

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
import sys
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from jinja2 import DictLoader, Environment, pass_context, select_autoescape

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailer.campaigns.campaign_file import load  # noqa: E402
from mailer.campaigns.definition import CampaignDefinition  # noqa: E402
from mailer.campaigns.message import Composed, Composer, Recipient  # noqa: E402
from mailer.campaigns.render import Renderer  # noqa: E402
from mailer.campaigns.render_inputs import RenderInputs  # noqa: E402
from mailer.campaigns.template_set import TemplateSet  # noqa: E402
from mailer.core.consent import Kind  # noqa: E402
from mailer.core.dkim import DkimKey, DkimSigner  # noqa: E402
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


def dkim_keys() -> tuple[bytes, DkimKey, DkimKey]:
    """(RSA-2048 PEM for dkimpy, the same RSA key and an Ed25519 key for our signer)."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = serialization.Encoding.DER, serialization.PrivateFormat.PKCS8
    none = serialization.NoEncryption()
    pem = private.private_bytes(serialization.Encoding.PEM, der[1], none)
    edwards = ed25519.Ed25519PrivateKey.generate().private_bytes(*der, none)
    return (
        pem,
        DkimKey("bench", "rsa-sha256", private.private_bytes(*der, none)),
        DkimKey("bench-ed", "ed25519-sha256", edwards),
    )


DKIM_DOMAIN = "garage-tremblay.example"
DKIM_HEADERS = [
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"reply-to",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
    b"feedback-id",
    b"mime-version",
    b"content-type",
]


def dkim_rates(
    composer: Callable[[DkimSigner | None], Composer],
    people: list[Recipient],
    n: int,
    repeats: int,
) -> dict[str, float]:
    """Signed compose rates (dkimpy as-is, ours RSA, ours RSA + Ed25519) and signing alone."""
    pem, rsa_key, ed_key = dkim_keys()
    unsigned = composer(None)
    ours = composer(DkimSigner([rsa_key], DKIM_DOMAIN))
    both = composer(DkimSigner([rsa_key, ed_key], DKIM_DOMAIN))
    rsa_only = DkimSigner([rsa_key], DKIM_DOMAIN)
    ed_only = DkimSigner([ed_key], DKIM_DOMAIN)

    def with_dkimpy(r: Recipient) -> bytes:
        data = unsigned.compose(r, NOW).data
        signature = dkim.sign(
            data,
            b"bench",
            DKIM_DOMAIN.encode("ascii"),
            pem,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=DKIM_HEADERS,
        )
        assert isinstance(signature, bytes)
        return signature + data

    few = people[: max(1, n // 20)]  # dkimpy: ~6 ms a message
    some = people[: max(1, n // 4)]
    ready = [unsigned.compose(r, NOW).data for r in some]
    drain(lambda r: ours.compose(r, NOW), few)  # warm-up
    return rates(
        {
            "dkimpy": (lambda: drain(with_dkimpy, few), len(few)),
            "rsa": (lambda: drain(lambda r: ours.compose(r, NOW), some), len(some)),
            "rsa+ed": (lambda: drain(lambda r: both.compose(r, NOW), some), len(some)),
            "sign rsa": (lambda: drain(lambda d: rsa_only.sign(d, 0), ready), len(ready)),
            "sign ed": (lambda: drain(lambda d: ed_only.sign(d, 0), ready), len(ready)),
        },
        max(3, repeats // 2),
    )


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

    def composer(signer: DkimSigner | None = None) -> Composer:
        return Composer(
            definition,
            renderer,
            keyring,
            tracker_base_url="https://t.garage-tremblay.example",
            sender_domain="mail.garage-tremblay.example",
            link_ids=link_ids,
            dkim=signer,
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
    results |= dkim_rates(composer, people, n, args.repeats)

    print(f"sample campaign, {n} messages x {args.repeats} runs, one core, median")
    print(f"message size: {statistics.mean(sizes) / 1024:.1f} KiB (html part ~5 KB)")
    for name, value in results.items():
        print(f"  {name:<10} {value:8.0f} msg/s   {1e6 / value:7.0f} µs/msg")
    ratio = results["full"] / results["floor"]
    print(f"  full / floor = {ratio:.2f}  (goal >= 0.40)")
    for signed in ("dkimpy", "rsa", "rsa+ed"):
        print(f"  {signed} / full = {results[signed] / results['full']:.3f}")
    print(f"  rsa / dkimpy = {results['rsa'] / results['dkimpy']:.1f} x")

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
        "  MIME assembly + base64": ("mime.py", "assemble"),
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
