"""Find the links in campaign HTML, rewrite them to tracked URLs, and add the open pixel.

Rewriting runs once per message and the HTML is personalised, so the work is split in two:
`find_links` tokenizes the HTML once (stdlib `html.parser`) and records where each href value
sits; `rewrite` splices new values into those spans and leaves every other character exactly
as the operator wrote it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from html import escape, unescape
from html.parser import HTMLParser
from urllib.parse import urlsplit

__all__ = ["FoundLink", "add_pixel", "find_links", "rewrite", "trackable_urls"]

# HTML strips leading and trailing ASCII whitespace from URL attributes.
_ASCII_WHITESPACE = " \t\n\f\r"
_TRACKED_SCHEMES = frozenset({"http", "https"})
_LINK_TAGS = frozenset({"a", "area"})

# These two mirror html.parser's own tag-name and attribute grammar (tagfind_tolerant and
# attrfind_tolerant, Python 3.11), so the span we find and the value the parser reports agree
# by construction; find_links still compares them and never tracks a link where they differ.
_TAG_NAME = re.compile(r"<[a-zA-Z][^\t\n\r\f />\x00]*(?:\s|/(?!>))*")
_ATTRIBUTE = re.compile(
    r"""(?<=['"\s/])(?P<name>[^\s/>][^\s/=>]*)
    (?:\s*=+\s*(?:'(?P<single>[^']*)'|"(?P<double>[^"]*)"|(?!['"])(?P<bare>[^>\s]*)))?
    (?:\s|/(?!>))*""",
    re.VERBOSE,
)
_BODY_END = re.compile(r"</body(?=[\s/>])", re.IGNORECASE | re.ASCII)
_WHITESPACE = re.compile(r"\s")


@dataclass(frozen=True, slots=True)
class FoundLink:
    """One href value in the HTML: its source span, decoded URL and whether to track it."""

    start: int
    end: int
    url: str
    trackable: bool


def find_links(html: str, *, skip_urls: Collection[str] = ()) -> list[FoundLink]:
    """Return every `<a href>` and `<area href>` in `html`, in document order."""
    finder = _LinkFinder(html, frozenset(skip_urls))
    finder.feed(html)
    finder.close()
    return finder.links


def rewrite(html: str, links: Sequence[FoundLink], url_for: Callable[[str], str]) -> str:
    """Replace each trackable link's value with `url_for(url)`; `links` must come from `html`."""
    pieces: list[str] = []
    done = 0
    for link in sorted(links, key=lambda link: link.start):
        if not link.trackable:
            continue
        if link.start < done:
            raise ValueError(f"link spans overlap at offset {link.start}")
        value = escape(url_for(link.url), quote=True)
        # An unquoted value ends at whitespace; quote the new one rather than let it spill.
        quoted = link.start > 0 and html[link.start - 1] in "\"'"
        if not quoted and (not value or _WHITESPACE.search(value)):
            value = f'"{value}"'
        pieces += (html[done : link.start], value)
        done = link.end
    if not pieces:
        return html
    pieces.append(html[done:])
    return "".join(pieces)


def add_pixel(html: str, pixel_url: str) -> str:
    """Insert the 1×1 open pixel just before the last `</body>`, or append it."""
    pixel = (
        f'<img src="{escape(pixel_url, quote=True)}" width="1" height="1" alt="" '
        'style="display:block;border:0;width:1px;height:1px" />'
    )
    ends = [match.start() for match in _BODY_END.finditer(html)]
    if not ends:
        return html + pixel
    return html[: ends[-1]] + pixel + html[ends[-1] :]


def trackable_urls(html: str, *, skip_urls: Collection[str] = ()) -> list[str]:
    """Return the distinct trackable URLs of `html` in order of first appearance."""
    return list(
        dict.fromkeys(link.url for link in find_links(html, skip_urls=skip_urls) if link.trackable)
    )


def _is_trackable(url: str, attrs: list[tuple[str, str | None]], skip: frozenset[str]) -> bool:
    # The operator's opt-outs: data-notrack (any value) or a rel token "notrack".
    for name, value in attrs:
        if name == "data-notrack":
            return False
        if name == "rel" and value and "notrack" in value.lower().split():
            return False
    # Unsubscribe and preference links must reach the tracker as they are.
    if url in skip:
        return False
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced IPv6 bracket: not a URL we could redirect to
        return False
    return parts.scheme in _TRACKED_SCHEMES and bool(parts.netloc)


def _href_span(html: str, tag_start: int, tag_end: int) -> tuple[int, int] | None:
    """Return the span of the first href value in the start tag at html[tag_start:tag_end]."""
    match = _TAG_NAME.match(html, tag_start)
    position = match.end() if match else tag_end
    while position < tag_end:
        match = _ATTRIBUTE.match(html, position)
        if match is None:
            break
        if match["name"].lower() == "href":
            for group in ("double", "single", "bare"):
                if match[group] is not None:
                    return match.span(group)
            return None
        position = match.end()
    return None


class _LinkFinder(HTMLParser):
    def __init__(self, html: str, skip: frozenset[str]) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[FoundLink] = []
        self._html = html
        self._skip = skip
        self._line_starts: list[int] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # handle_startendtag (<area ... />) lands here too. Comments and <script>/<style>
        # contents never reach this method.
        if tag not in _LINK_TAGS:
            return
        # Browsers use the first of duplicated attributes; so do we.
        href = next((value for name, value in attrs if name == "href"), None)
        if href is None:
            return
        tag_start = self._offset(*self.getpos())
        span = _href_span(self._html, tag_start, tag_start + len(self.get_starttag_text() or ""))
        if span is None:
            return
        start, end = span
        raw = self._html[start:end]
        url = unescape(raw).strip(_ASCII_WHITESPACE)
        agrees = unescape(raw) == href
        self.links.append(
            FoundLink(start, end, url, agrees and _is_trackable(url, attrs, self._skip))
        )

    def parse_marked_section(self, i: int, report: bool = True) -> int:
        # Python 3.11 raises on "<![foo[": treat it as a bogus comment, as browsers do.
        try:
            return super().parse_marked_section(i, report)
        except AssertionError:
            return self.parse_bogus_comment(i, report)

    def _offset(self, line: int, column: int) -> int:
        # getpos() is (1-based line, 0-based column) counting "\n" only; we want str offsets.
        if self._line_starts is None:
            self._line_starts = [0, *(m.end() for m in re.finditer("\n", self._html))]
        return self._line_starts[line - 1] + column
