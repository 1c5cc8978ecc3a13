"""Link tracking planned once per campaign, on the template *source*, not per message.

Finding and rewriting links costs ~790 µs per 6 KB message, three times the render itself,
so every literal `href="https://…"` becomes a slot `{{ _mailer_links[N] }}` that renders the
contact's signed click URL (or the original text, byte for byte, when tracking is off).
This holds because a literal href renders to itself. An href with Jinja in it
(`href="https://x/?vin={{ attributes.vin }}"`) renders differently per contact, so a template
holding one is *personalised*: it gets no slots, and each rendered message goes through
`links.find_links` + `links.rewrite` instead. The footer's own links
(`{{ unsubscribe_url }}`, `{{ preferences_url }}`), the re-permission `{{ confirm_url }}`,
mailto:/tel: links and links marked `data-notrack` or `rel="notrack"` are never tracked, so
they keep a template static. In a static template, a link that only a `|safe` value produces
is not in the source: it stays untracked, never broken. Slots are proved equal to
per-message rewriting by a property test.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from mailer.core.links import FoundLink, find_links

__all__ = ["plan_links"]

_JINJA_COMMENT = re.compile(r"\{#.*?#\}", re.DOTALL)
_JINJA_RAW = re.compile(r"\{%-?\s*raw\b")
_JINJA_MARK = re.compile(r"\{[{%#]")
_FOOTER_HREF = re.compile(
    r"\s*\{\{-?\s*(?:unsubscribe_url|preferences_url|confirm_url)\s*-?\}\}\s*"
)
_SCHEME = re.compile(r"\s*([A-Za-z][A-Za-z0-9+.-]*):")
_NOTRACK = re.compile(r"\sdata-notrack\b|\srel\s*=\s*['\"]?[^'\">]*\bnotrack\b", re.IGNORECASE)
_SLOT = "{{{{ _mailer_links[{}] }}}}"


def plan_links(
    files: Mapping[str, str],
) -> tuple[tuple[tuple[str, str], ...], bool, dict[str, str]]:
    """Slots for the literal trackable hrefs: (slots (url, raw), personalised?, new sources)."""
    sources = dict(files)
    slots: list[tuple[str, str]] = []
    for filename, source in sorted(files.items()):
        if not filename.endswith(".html"):
            continue
        if _JINJA_RAW.search(source):
            return (), True, dict(files)  # {% raw %} would print a slot verbatim
        comments = [m.span() for m in _JINJA_COMMENT.finditer(source)]
        pieces: list[str] = []
        done = 0
        for link in find_links(source):
            if any(start <= link.start < end for start, end in comments):
                continue
            raw = source[link.start : link.end]
            if _JINJA_MARK.search(raw):
                if _never_tracked(source, link, raw):
                    continue
                return (), True, dict(files)
            if not link.trackable:
                continue
            pieces += (source[done : link.start], _SLOT.format(len(slots)))
            slots.append((link.url, raw))
            done = link.end
        if pieces:
            sources[filename] = "".join(pieces) + source[done:]
    return tuple(slots), False, sources


def _never_tracked(source: str, link: FoundLink, raw: str) -> bool:
    """An href with Jinja in it that can never be tracked, so it keeps the template static."""
    if _FOOTER_HREF.fullmatch(raw):
        return True
    scheme = _SCHEME.match(raw)
    if scheme and scheme[1].lower() not in ("http", "https"):
        return True  # mailto:{{ … }}, tel:{{ … }}
    if raw.lstrip().startswith("#"):
        return True
    tag = source[source.rfind("<", 0, link.start) : source.find(">", link.end) + 1]
    return bool(_NOTRACK.search(tag))
