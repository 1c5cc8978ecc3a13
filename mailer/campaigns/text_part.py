"""A readable text part derived from a message's HTML, for templates without a .txt file."""

from __future__ import annotations

import re
from html.parser import HTMLParser

__all__ = ["html_to_text"]

# fmt: off
_BLOCK_TAGS = frozenset({
    "address", "article", "aside", "blockquote", "center", "dd", "div", "dl", "dt", "fieldset",
    "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "main",
    "nav", "ol", "p", "pre", "section", "table", "tr", "ul",
})
# fmt: on
_SKIP_TAGS = frozenset({"head", "script", "style", "title", "template"})
_SPACES = re.compile(r"\s+")


def html_to_text(html: str) -> str:
    """A readable text part from HTML: paragraphs, list dashes, link URLs kept visible."""
    converter = _TextConverter()
    converter.feed(html)
    converter.close()
    lines: list[str] = []
    for line in "".join(converter.out).split("\n"):
        words = " ".join(line.split())
        if words or (lines and lines[-1]):
            lines.append(words)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines) + "\n"


class _TextConverter(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._skip = 0
        self._anchors: list[tuple[str, int]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self._skip += 1
        if self._skip:
            return
        if tag == "br":
            self.out.append("\n")
        elif tag == "li":
            self.out.append("\n- ")
        elif tag in ("td", "th"):
            self.out.append(" ")
        elif tag in _BLOCK_TAGS:
            self.out.append("\n\n")
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt:
                self.out.append(alt)
        elif tag == "a":
            self._anchors.append((dict(attrs).get("href") or "", len(self.out)))

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self._skip = max(0, self._skip - 1)
            return
        if self._skip:
            return
        if tag == "a" and self._anchors:
            href, start = self._anchors.pop()
            shown = _shown_url(href.strip())
            if shown and shown not in "".join(self.out[start:]):
                self.out.append(f" ({shown})")
        elif tag in _BLOCK_TAGS:
            self.out.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.out.append(_SPACES.sub(" ", data))


def _shown_url(href: str) -> str:
    # Keep destinations visible in plain text; anchors and scripts mean nothing there.
    lowered = href.lower()
    if lowered.startswith(("http://", "https://")):
        return href
    if lowered.startswith(("mailto:", "tel:")):
        return href.partition(":")[2].partition("?")[0]
    return ""
