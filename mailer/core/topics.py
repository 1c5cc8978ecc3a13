"""A topic's name as a recipient reads it, per language.

A topic has a slug (`service`), a default name (`--name`) and names per language (`--name-fr`,
`--name-en`; topics.names, migration 0007). A reader sees, in order of preference:

1. the topic's name in the reader's language,
2. else its default name,
3. else its slug.

So a French page never shows an English name unless the operator gave no French one and made
the English one the default. Pure functions; no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from mailer.core.footer import SUPPORTED_LOCALES

__all__ = ["LANGUAGES", "SLUG", "slug_problem", "topic_name"]

# The languages pages and footers are written in: a topic can be named in each.
LANGUAGES: tuple[str, ...] = SUPPORTED_LOCALES


# The topics.slug CHECK constraint (migration 0001): slugs appear in URLs, CSV cells and segments.
SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


def slug_problem(slug: str) -> str | None:
    """Why `slug` cannot name a topic, or None when it can."""
    if SLUG.fullmatch(slug):
        return None
    return (
        f"topic slug {slug[:70]!r}: expected 1 to 63 lowercase letters, digits, '-' or '_', "
        "beginning with a letter or digit (e.g. service, spring-promotions)"
    )


# A topic's name is shown to recipients (preference centre, unsubscribe page) and in the
# console: a line, not a paragraph.
NAME_MAX = 100


def name_problem(option: str, name: str) -> str | None:
    """Why `name` (given as `option`) cannot name a topic, or None when it can."""
    if len(name) > NAME_MAX:
        return f"{option}: {len(name)} characters, at most {NAME_MAX} (recipients read it)"
    if any(not c.isprintable() for c in name):
        return f"{option}: {name[:70]!r} holds a control character"
    return None


def topic_name(names: Mapping[str, str] | None, name: str | None, slug: str, lang: str) -> str:
    """The name a reader of `lang` sees: its name in `lang`, else the default name, else slug."""
    return (names or {}).get(lang) or name or slug
