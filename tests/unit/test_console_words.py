"""Every word a console template asks for exists in English and French, including the keys
the intake pages build from a state or a figure's name."""

from __future__ import annotations

import re

from mailer.console.web import HERE
from mailer.console.wording import _WORDS

_LITERAL = re.compile(r"""\bt\(\s*["']([a-z0-9_]+)["']\s*[,)]""")


def test_every_literal_key_of_every_template_is_worded() -> None:
    missing = {
        (path.name, key)
        for path in (HERE / "templates").glob("*.html")
        for key in _LITERAL.findall(path.read_text(encoding="utf-8"))
        if key not in _WORDS
    }
    assert not missing, missing


def test_the_keys_built_from_an_uploads_state_kind_and_figures_are_worded() -> None:
    figures = ("rows_read", "rows_valid", "contacts_created", "contacts_updated",
               "consents_added", "topics_added", "suppressed", "dialect", "added")  # fmt: skip
    built = [
        *(f"upload_{s}" for s in ("running", "done", "refused", "failed")),
        *(f"list_{k}" for k in ("contacts", "suppressions")),
        *(f"sum_{name}" for name in figures),
        *("too_big", "no_file", "csrf", "bad_address", "added_suppression"),
        *("already_suppressed", "no_key"),
    ]
    assert [k for k in built if k not in _WORDS] == []
