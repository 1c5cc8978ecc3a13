"""Named SQL queries loaded from `.sql` files (`-- name: <name>` headers).

Every statement a process runs is in `mailer/sql/*.sql` (queries.sql, and
report.sql for the reports), read once at start; asking for a name that does
not exist fails at start-up, not in the middle of a campaign.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache
from importlib import resources

_HEADER = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


class QueryFileError(ValueError):
    """A query file is malformed or lacks a query the code needs."""


def parse(text: str, origin: str) -> dict[str, str]:
    """Split a query file into {name: sql}; duplicates and empty bodies are errors."""
    found: dict[str, str] = {}
    matches = list(_HEADER.finditer(text))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = text[match.end() : end].strip()
        name = match.group(1)
        if name in found:
            raise QueryFileError(f"{origin}: query {name!r} is defined twice")
        if not body:
            raise QueryFileError(f"{origin}: query {name!r} is empty")
        found[name] = body
    return found


@cache
def load() -> dict[str, str]:
    """All named queries of the package: every mailer/sql/*.sql file (not the migrations)."""
    found: dict[str, str] = {}
    folder = resources.files("mailer").joinpath("sql")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        origin = f"mailer/sql/{entry.name}"
        for name, sql in parse(entry.read_text(encoding="utf-8"), origin).items():
            if name in found:
                raise QueryFileError(f"{origin}: query {name!r} is also defined elsewhere")
            found[name] = sql
    return found


def require(names: Iterable[str]) -> None:
    """Fail at start if any of these queries is missing."""
    missing = sorted(set(names) - set(load()))
    if missing:
        raise QueryFileError(f"mailer/sql/*.sql lack queries: {', '.join(missing)}")


def get(name: str) -> str:
    """The SQL text of one named query."""
    try:
        return load()[name]
    except KeyError:
        raise QueryFileError(f"mailer/sql/*.sql have no query {name!r}") from None
