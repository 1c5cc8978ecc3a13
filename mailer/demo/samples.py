"""The demo's sample data: ~2,000 Quebec customers with a realistic consent mix (purchases,
inquiries, express sign-ups, a few with no consent), and the registry and earlier-unsubscribe
lists the demo imports as suppressions. Seeded: every run writes the same people."""

from __future__ import annotations

import csv
import random
import unicodedata
from datetime import datetime, timedelta
from pathlib import Path

from mailer.core.spreadsheet import csv_writer

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
# (slug, French name, English name, opt-out): each reader sees the topic in their language.
TOPICS = [
    ("service", "Rappels d'entretien", "Service reminders", True),
    ("parts", "Pièces reçues", "Parts received", True),
    ("promotions", "Promotions", "Promotions", False),
    ("events", "Événements et invitations", "Events and invitations", False),
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
        out = csv_writer(fh)
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


def write_unsubscribed(path: Path, contacts_csv: Path, every: int = 33) -> None:
    """People who unsubscribed from email in the old system (an ESP export)."""
    with (
        contacts_csv.open(encoding="utf-8", newline="") as src,
        path.open("w", encoding="utf-8") as fh,
    ):
        for i, row in enumerate(csv.DictReader(src)):
            if i % every == 5:
                fh.write(row["email"] + "\n")


def first_email(contacts_csv: Path) -> str:
    """The first sample contact's address (the demo's closing hint explains them)."""
    with contacts_csv.open(encoding="utf-8", newline="") as fh:
        return next(csv.DictReader(fh))["email"]
