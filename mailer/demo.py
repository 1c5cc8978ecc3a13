"""`make demo`: the product end to end on embedded defaults.

Today it migrates, creates the sample topics, writes ~2,000 sample contacts
with a realistic consent mix, imports them twice (the second import must
change nothing) with a registry suppression list, and prints a summary.
"""

from __future__ import annotations

import csv
import random
import unicodedata
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mailer import config, imports
from mailer.contacts_file import Defaults
from mailer.store import Store

FIRST_NAMES = [
    "Camille",
    "Louis",
    "Emma",
    "Gabriel",
    "Léa",
    "Noah",
    "Chloé",
    "Liam",
    "Olivia",
    "Jules",
    "Zoé",
    "Ethan",
    "Manon",
    "Lucas",
    "Sarah",
    "Hugo",
    "Alice",
    "Nathan",
]
LAST_NAMES = [
    "Tremblay",
    "Gagnon",
    "Roy",
    "Côté",
    "Bouchard",
    "Gauthier",
    "Morin",
    "Lavoie",
    "Smith",
    "Brown",
    "Martin",
    "Wilson",
    "O'Neil",
    "Fortin",
    "Pelletier",
    "Bélanger",
]
DOMAINS = ["gmail.com", "outlook.com", "yahoo.com", "videotron.ca", "bell.net", "example.org"]
VEHICLES = ["SUV", "sedan", "pickup", "hatchback", "minivan"]
DEMO_CAMPAIGN = "spring-service"
TOPICS = [
    ("service", "Service reminders", True),
    ("parts", "Parts received", True),
    ("promotions", "Promotions", False),
    ("events", "Events and invitations", False),
]
# (kind, share, age range in days): within and past each CASL limit.
CONSENT_MIX = [
    ("express", 0.35, (30, 4000)),
    ("implied_purchase", 0.20, (30, 700)),  # within 2 years
    ("implied_purchase", 0.10, (760, 1500)),  # lapsed
    ("implied_inquiry", 0.10, (10, 170)),  # within 6 months
    ("implied_inquiry", 0.07, (200, 500)),  # lapsed
    ("implied_contract", 0.05, (100, 2000)),  # ongoing
    ("", 0.13, (0, 0)),  # no consent on record
]
SOURCES = {
    "express": ["Salon E-commerce Paris", "newsletter form", "showroom sign-up sheet"],
    "implied_purchase": ["vehicle purchase", "parts counter sale", "service invoice"],
    "implied_inquiry": ["quote request", "test drive booking"],
    "implied_contract": ["lease agreement", "maintenance plan"],
    "": [""],
}


def write_sample_contacts(path: Path, count: int, now: datetime, seed: int = 7) -> None:
    """A deterministic contacts CSV with the consent mix a dealership really has."""
    rng = random.Random(seed)
    kinds = [k for k, _, _ in CONSENT_MIX]
    weights = [w for _, w, _ in CONSENT_MIX]
    with path.open("w", encoding="utf-8", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(
            [
                "email",
                "name",
                "locale",
                "consent",
                "consent_source",
                "consent_date",
                "topics",
                "last_activity",
                "attr.vehicle",
                "attr.city",
                "attr.next_service",
                "attr.mileage",
            ]
        )
        for i in range(count):
            index = rng.choices(range(len(kinds)), weights)[0]
            kind, _, (low, high) = CONSENT_MIX[index]
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            locale = "fr" if rng.random() < 0.55 else "en"
            when = (now - timedelta(days=rng.randint(low, high))).date().isoformat() if kind else ""
            topics = ["service"] + [t for t in ("promotions", "events") if rng.random() < 0.4]
            active = (now - timedelta(days=rng.randint(1, 900))).date().isoformat()
            # Real addresses are ASCII far more often than names are.
            plain = unicodedata.normalize("NFKD", f"{first}.{last}").encode("ascii", "ignore")
            local = f"{plain.decode()}.{i}".lower().replace("'", "")
            out.writerow(
                [
                    f"{local}@{rng.choice(DOMAINS)}",
                    f"{first} {last}",
                    locale,
                    kind,
                    rng.choice(SOURCES[kind]),
                    when,
                    ";".join(topics),
                    active,
                    rng.choice(VEHICLES),
                    rng.choice(["Montréal", "Québec", "Laval", "Ottawa"]),
                    (now + timedelta(days=rng.randint(7, 60))).date().isoformat(),
                    str(rng.randint(5, 180) * 1000),
                ]
            )


def write_sample_registry(path: Path, contacts_csv: Path, every: int = 40) -> None:
    """A do-not-contact list naming every `every`-th sample contact plus strangers."""
    with (
        contacts_csv.open(encoding="utf-8", newline="") as src,
        path.open("w", encoding="utf-8") as fh,
    ):
        for i, row in enumerate(csv.DictReader(src)):
            if i % every == 0:
                fh.write(row["email"] + "\n")
        fh.write("stranger@example.net\n")


async def run(settings: config.Settings, folder: Path, console: Console) -> int:
    """Run the demo; return the process exit code."""
    folder.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - a CLI step, nothing else runs
    now = datetime.now(UTC)
    contacts_csv = folder / "contacts.csv"
    registry = folder / "registry.txt"
    write_sample_contacts(contacts_csv, 2000, now)
    write_sample_registry(registry, contacts_csv)
    db = settings.database
    async with Store.open(db.url, min_size=1, max_size=db.pool_max) as store:
        applied = await store.migrate()
        console.print(f"schema: {len(applied)} migration(s) applied")
        for slug, name, default in TOPICS:
            await store.topic_upsert(slug, name, "", default)
        first = await imports.import_contacts(
            store,
            contacts_csv,
            Defaults(),
            default_locale=settings.imports.default_locale,
            skip_invalid=False,
        )
        again = await imports.import_contacts(
            store,
            contacts_csv,
            Defaults(),
            default_locale=settings.imports.default_locale,
            skip_invalid=False,
        )
        suppressed, _ = await imports.import_suppressions(
            store,
            registry,
            reason="registry",
            scope="global",
            channel=None,
            topic_id=None,
            source="National Do Not Contact List (sample)",
        )
        counts = await store.summary_counts()
        spec = await store.campaign_spec(DEMO_CAMPAIGN)
        if spec is None:
            topic_id = {t["slug"]: t["id"] for t in await store.topics_list()}["service"]
            await store.campaign_insert_minimal(DEMO_CAMPAIGN, topic_id)
            spec = await store.campaign_spec(DEMO_CAMPAIGN)
        assert spec is not None
        audience = await store.audience_counts(spec, now)
    table = Table("step", "rows", "created", "updated", "ledger rows added", title="import")
    for label, outcome in (("first import", first), ("same file again", again)):
        r = outcome.result
        table.add_row(
            label,
            str(r.rows_read),
            str(r.contacts_created),
            str(r.contacts_updated),
            str(r.consents_added),
        )
    console.print(table)
    console.print(f"registry: {suppressed.added} new suppression(s) from {registry}")
    console.print(
        f"database now holds {counts['contacts']} contacts, {counts['ledger_rows']} ledger rows, "
        f"{counts['suppressions']} suppressions, {counts['topics']} topics"
    )
    console.print(f"sample files: {contacts_csv}, {registry}")
    aud = Table("audience of " + DEMO_CAMPAIGN, "contacts")
    for reason, n in sorted(audience.items(), key=lambda kv: -kv[1]):
        aud.add_row(reason, f"{n:,}")
    console.print(aud)
    console.print(
        f"try: [bold].venv/bin/mailer contacts explain {_first_email(contacts_csv)} "
        f"--campaign {DEMO_CAMPAIGN}[/]"
    )
    console.print(f"try: [bold].venv/bin/mailer contacts show {_first_email(contacts_csv)}[/]")
    return 0


def _first_email(contacts_csv: Path) -> str:
    with contacts_csv.open(encoding="utf-8", newline="") as fh:
        return next(csv.DictReader(fh))["email"]
