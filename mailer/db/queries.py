"""Named SQL queries, one `.sql` file per role package (`-- name: <name>` headers).

Each store loads its package's file once, at import: a malformed file or a
duplicate name fails at start. tests/unit/test_named_queries.py holds every
store to its file: each name a store asks for exists, and no query is unused.
"""

from __future__ import annotations

import re
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


class Queries:
    """The named queries of one package's .sql file, read once; call with a name."""

    def __init__(self, package: str, filename: str) -> None:
        self.origin = f"{package.replace('.', '/')}/{filename}"
        text = resources.files(package).joinpath(filename).read_text(encoding="utf-8")
        self._sql = parse(text, self.origin)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._sql)

    def __call__(self, name: str) -> str:
        try:
            return self._sql[name]
        except KeyError:
            raise QueryFileError(f"{self.origin} has no query {name!r}") from None
