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

from collections.abc import Mapping

from mailer.core.footer import SUPPORTED_LOCALES

__all__ = ["LANGUAGES", "topic_name"]

# The languages pages and footers are written in: a topic can be named in each.
LANGUAGES: tuple[str, ...] = SUPPORTED_LOCALES


def topic_name(names: Mapping[str, str] | None, name: str | None, slug: str, lang: str) -> str:
    """The name a reader of `lang` sees: its name in `lang`, else the default name, else slug."""
    return (names or {}).get(lang) or name or slug
