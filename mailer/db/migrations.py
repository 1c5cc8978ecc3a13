"""Discovering the numbered migrations shipped with the package.

Migrations are the only source of the schema: plain SQL files named
`NNNN_description.sql`, applied in order, each in its own transaction, and
recorded with a checksum so an edited, already-applied file is noticed.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")
# pg_advisory_lock key shared by every migrator ("mailer" in ASCII).
ADVISORY_LOCK_KEY = 0x6D61696C6572


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> bytes:
        return hashlib.sha256(self.sql.encode("utf-8")).digest()


def available() -> list[Migration]:
    """All migrations in version order; a malformed name or a gap is an error."""
    folder = resources.files("mailer.db").joinpath("sql/migrations")
    found: list[Migration] = []
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _NAME.fullmatch(entry.name)
        if match is None:
            raise ValueError(f"migration file {entry.name!r}: expected NNNN_description.sql")
        found.append(Migration(int(match.group(1)), match.group(2), entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise ValueError(f"migration {expected:04d} is missing (found {migration.version:04d})")
    return found
