"""Link discovery, rewriting and the open pixel (mailer.core.links)."""

from __future__ import annotations

from html import escape, unescape
from html.parser import HTMLParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.core.links import FoundLink, add_pixel, find_links, rewrite, trackable_urls

PIXEL = (
    '<img src="https://t.example/o/TOK" width="1" height="1" alt="" '
    'style="display:block;border:0;width:1px;height:1px" />'
)


def tracked(url: str) -> str:
    return "https://t.example/c/" + str(len(url))


def never_called(url: str) -> str:
    raise AssertionError(f"url_for called for {url!r}")


def only_link(html: str) -> FoundLink:
    links = find_links(html)
    assert len(links) == 1
    return links[0]


class HrefOracle(HTMLParser):
    """The stdlib parser's own view: the first href value of each a/area tag, in order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = next((value for name, value in attrs if name == "href"), None)
        if tag in ("a", "area") and href is not None:
            self.hrefs.append(href)

    def parse_marked_section(self, i: int, report: bool = True) -> int:
        # The same recovery from "<![foo[" as mailer.core.links, so the comparison covers the rest.
        try:
            return super().parse_marked_section(i, report)
        except AssertionError:
            return self.parse_bogus_comment(i, report)


def oracle_hrefs(html: str) -> list[str]:
    oracle = HrefOracle()
    oracle.feed(html)
    oracle.close()
    return oracle.hrefs


def test_the_href_is_found_whatever_the_order_of_the_other_attributes() -> None:
    html = '<p><a class="btn" id=x title=\'Go\' href="https://shop.example/a" target=_blank>Go</a>'
    link = only_link(html)
    assert html[link.start : link.end] == "https://shop.example/a"
    assert link.url == "https://shop.example/a"
    assert link.trackable
    assert rewrite(html, [link], lambda url: "https://t.example/c/1") == (
        '<p><a class="btn" id=x title=\'Go\' href="https://t.example/c/1" target=_blank>Go</a>'
    )


@pytest.mark.parametrize(
    ("tag", "rewritten"),
    [
        ('<a href="https://e.example/x">', '<a href="https://t.example/c/19">'),
        ("<a href='https://e.example/x'>", "<a href='https://t.example/c/19'>"),
        ("<a href=https://e.example/x>", "<a href=https://t.example/c/19>"),
        ("<a href = \n 'https://e.example/x' >", "<a href = \n 'https://t.example/c/19' >"),
    ],
)
def test_double_single_and_unquoted_values_are_rewritten_in_place(tag: str, rewritten: str) -> None:
    html = f"<p>Hi {tag}shop</a></p>"
    links = find_links(html)
    assert [link.url for link in links] == ["https://e.example/x"]
    assert rewrite(html, links, tracked) == f"<p>Hi {rewritten}shop</a></p>"


def test_an_unquoted_value_gets_quotes_when_the_new_url_would_break_it() -> None:
    html = "<a href=https://e.example/x>x</a>"
    out = rewrite(html, find_links(html), lambda url: "https://t.example/c/a b")
    assert out == '<a href="https://t.example/c/a b">x</a>'


def test_entities_are_decoded_for_url_for_and_the_new_url_is_escaped() -> None:
    html = '<a href="https://e.example/p?a=1&amp;b=2">x</a>'
    seen: list[str] = []

    def url_for(url: str) -> str:
        seen.append(url)
        return 'https://t.example/c?l=1&sig="q"<\''

    out = rewrite(html, find_links(html), url_for)
    assert seen == ["https://e.example/p?a=1&b=2"]
    assert out == '<a href="https://t.example/c?l=1&amp;sig=&quot;q&quot;&lt;&#x27;">x</a>'
    assert oracle_hrefs(out) == ['https://t.example/c?l=1&sig="q"<\'']


def test_query_strings_and_fragments_reach_url_for_unchanged() -> None:
    html = (
        '<a href="https://e.example/p?utm_source=mail&amp;id=7#offer">a</a>'
        "<a href='HTTP://E.example/Q?x=%20y#top'>b</a>"
    )
    assert [link.url for link in find_links(html)] == [
        "https://e.example/p?utm_source=mail&id=7#offer",
        "HTTP://E.example/Q?x=%20y#top",
    ]


def test_surrounding_whitespace_is_stripped_from_the_url_but_kept_in_the_span() -> None:
    html = '<a href=" \n https://e.example/x\t">x</a>'
    link = only_link(html)
    assert link.url == "https://e.example/x"
    assert link.trackable
    assert rewrite(html, [link], tracked) == '<a href="https://t.example/c/19">x</a>'


@pytest.mark.parametrize(
    "href",
    [
        "mailto:shop@e.example",
        "tel:+15145550100",
        "#top",
        "/account",
        "page.html",
        "//cdn.e.example/x",
        "javascript:alert(1)",
        "JavaScript:void(0)",
        "data:text/html,hi",
        "ftp://e.example/file",
        "http://",
        "http://[::1",
        "",
    ],
)
def test_links_that_are_not_http_or_https_to_a_host_are_left_untouched(href: str) -> None:
    html = f'<p><a href="{href}">x</a></p>'
    link = only_link(html)
    assert not link.trackable
    assert rewrite(html, [link], never_called) == html


@pytest.mark.parametrize(
    "attributes",
    [
        "data-notrack",
        'data-notrack="1"',
        "DATA-NOTRACK=no",
        'rel="nofollow NoTrack"',
        "rel=notrack",
    ],
)
def test_the_operator_can_opt_a_link_out_of_tracking(attributes: str) -> None:
    html = f'<a {attributes} href="https://e.example/private">x</a>'
    link = only_link(html)
    assert link.url == "https://e.example/private"
    assert not link.trackable
    assert rewrite(html, [link], never_called) == html


def test_rel_must_name_the_notrack_token_not_merely_contain_its_letters() -> None:
    assert only_link('<a rel="nonotrack" href="https://e.example/">x</a>').trackable


def test_unsubscribe_and_preference_urls_are_never_rewritten() -> None:
    html = (
        '<a href="https://e.example/sale">Sale</a>'
        '<a href="https://t.example/u/TOKEN">Unsubscribe</a>'
        '<a href="https://t.example/p/TOKEN">Preferences</a>'
    )
    skip = {"https://t.example/u/TOKEN", "https://t.example/p/TOKEN"}
    links = find_links(html, skip_urls=skip)
    assert [link.trackable for link in links] == [True, False, False]
    assert rewrite(html, links, tracked) == html.replace(
        "https://e.example/sale", tracked("x" * 22)
    )


def test_links_inside_comments_scripts_and_styles_are_ignored() -> None:
    html = (
        '<!-- <a href="https://e.example/comment">x</a> -->'
        "<script>var s = '<a href=\"https://e.example/script\">';</script>"
        '<STYLE>a[href="https://e.example/style"] { color: red }</STYLE>'
        '<a href="https://e.example/real">real</a>'
    )
    assert [link.url for link in find_links(html)] == ["https://e.example/real"]


def test_uppercase_tags_and_attributes_are_links_too() -> None:
    html = (
        '<A HREF="https://e.example/a">a</A><MAP><AREA SHAPE=rect HREF=https://e.example/b></MAP>'
    )
    links = find_links(html)
    assert [link.url for link in links] == ["https://e.example/a", "https://e.example/b"]
    assert rewrite(html, links, lambda url: url.upper()) == (
        '<A HREF="HTTPS://E.EXAMPLE/A">a</A><MAP><AREA SHAPE=rect HREF=HTTPS://E.EXAMPLE/B></MAP>'
    )


def test_only_a_and_area_hrefs_count_and_the_first_of_duplicate_hrefs_wins() -> None:
    html = (
        '<link href="https://e.example/css"><base href="https://e.example/">'
        '<a href="https://e.example/first" href="https://e.example/second">x</a>'
        '<area href="https://e.example/map" />'
        "<a name=anchor>no href</a><a href>empty</a>"
    )
    assert [link.url for link in find_links(html)] == [
        "https://e.example/first",
        "https://e.example/map",
    ]


def test_offsets_are_character_offsets_after_non_ascii_text() -> None:
    html = (
        "<p>Bonjour Zoé, déjà vu ? 日本語 😀\r\n</p>\n"
        "<p>Ünïcödé\n\n<a\ntitle='Café'\nhref=\"https://e.example/été?q=ß\">voir</a></p>"
    )
    link = only_link(html)
    assert html[link.start : link.end] == "https://e.example/été?q=ß"
    assert rewrite(html, [link], lambda url: "https://t.example/c/1") == html.replace(
        "https://e.example/été?q=ß", "https://t.example/c/1"
    )


def test_the_output_is_the_input_when_nothing_is_trackable() -> None:
    html = '<html><body><a href="mailto:x@e.example">mail</a><a href="#top">top</a></body></html>'
    out = rewrite(html, find_links(html), never_called)
    assert out == html


def test_everything_but_the_href_values_is_kept_byte_for_byte() -> None:
    html = (
        "<!DOCTYPE html>\n<html><head><style>p{margin:0}</style></head><body>\n"
        "<!--[if mso]><table><![endif]-->  <p class=a>Tom &amp; Jerry&nbsp;&#169;</p>\r\n"
        "<a href='https://e.example/1' >one</a>\t<img src=\"https://e.example/i.png\">"
        "<a\thref=https://e.example/2/>two</a></body></html>"
    )
    out = rewrite(html, find_links(html), lambda url: "T")
    assert out == html.replace("https://e.example/1", "T").replace("https://e.example/2/", "T")


@pytest.mark.parametrize(
    "html",
    [
        '<p><a href="https://e.example/a">unclosed <b>tags <a href=https://e.example/b>',
        '<![foo[ odd ]]> <a href="https://e.example/a">x</a> <a href=https://e.example/b',
        '< p> a < b && c > d <a href="https://e.example/a"> <a href="https://e.example/b">',
        '<a href="https://e.example/a"></a><!-- never closed <a href="https://e.example/x">',
        "<a title='it's' href=https://e.example/a>x</a><a href=\"https://e.example/b\"<b>",
    ],
)
def test_malformed_html_is_tolerated(html: str) -> None:
    links = find_links(html)
    assert [unescape(html[link.start : link.end]) for link in links] == oracle_hrefs(html)
    assert links[0].url == "https://e.example/a"
    assert rewrite(html, links, lambda url: "@@").count("@@") == sum(x.trackable for x in links)


def test_trackable_urls_lists_each_trackable_url_once_in_order_of_first_appearance() -> None:
    html = (
        '<a href="https://e.example/b">b</a><a href="mailto:x@e.example">m</a>'
        '<a href="https://e.example/a">a</a><a href=https://e.example/b>b again</a>'
        '<a href="https://t.example/u/T">unsubscribe</a>'
    )
    assert trackable_urls(html, skip_urls=["https://t.example/u/T"]) == [
        "https://e.example/b",
        "https://e.example/a",
    ]


def test_the_pixel_goes_just_before_the_last_closing_body_tag() -> None:
    html = "<html><body><p>x</p><!-- </body> --></BODY >\n</html>"
    assert add_pixel(html, "https://t.example/o/TOK") == (
        f"<html><body><p>x</p><!-- </body> -->{PIXEL}</BODY >\n</html>"
    )


def test_the_pixel_is_appended_when_there_is_no_closing_body_tag() -> None:
    assert add_pixel("<p>x</p><tbody></tbody>", "https://t.example/o/TOK") == (
        f"<p>x</p><tbody></tbody>{PIXEL}"
    )


def test_the_pixel_url_is_escaped() -> None:
    out = add_pixel("", 'https://t.example/o/T?a=1&b="2"')
    assert 'src="https://t.example/o/T?a=1&amp;b=&quot;2&quot;"' in out


# Text around the tag: anything but "<", which could open a comment or a script and hide it.
surrounding_text = st.text(st.characters(exclude_characters="<"), max_size=40)
attribute_names = st.from_regex(r"[a-zA-Z][a-zA-Z0-9:_-]{0,8}", fullmatch=True).filter(
    lambda name: name.lower() not in ("href", "rel", "data-notrack")
)
separators = st.text(st.sampled_from(" \t\n\r\f"), min_size=1, max_size=3)
value_chars = st.characters()  # surrogates are excluded by default


@st.composite
def quoted_values(draw: st.DrawFn) -> str:
    """An attribute value as written in source: double-, single- or un-quoted."""
    value = draw(st.text(value_chars))
    style = draw(st.sampled_from(["double", "single", "bare"]))
    if style == "double":
        return '"' + value.replace('"', "&quot;") + '"'
    if style == "single":
        return "'" + value.replace("'", "&#39;") + "'"
    bare = "".join(c for c in value if not c.isspace() and c not in "\"'>`=<")
    return bare or "x"


@st.composite
def attributes(draw: st.DrawFn) -> str:
    name = draw(attribute_names)
    if draw(st.booleans()):
        return name
    return name + draw(st.sampled_from(["=", " = ", "\n=\t"])) + draw(quoted_values())


@settings(max_examples=150, deadline=None)
@given(
    before=surrounding_text,
    after=surrounding_text,
    tag=st.sampled_from(["a", "A", "area", "AREA"]),
    attrs_before=st.lists(attributes(), max_size=3),
    attrs_after=st.lists(attributes(), max_size=3),
    seps=st.lists(separators, min_size=8, max_size=8),
    path=st.text(value_chars, max_size=20),
    quote=st.sampled_from(['"', "'", ""]),
)
def test_surrounding_text_and_attributes_never_shift_the_span(
    before: str,
    after: str,
    tag: str,
    attrs_before: list[str],
    attrs_after: list[str],
    seps: list[str],
    path: str,
    quote: str,
) -> None:
    raw = escape("https://e.example/" + path, quote=True)
    if not quote:
        raw = "".join(c for c in raw if not c.isspace() and c not in "`=<")
    head = f"{before}<{tag}" + "".join(s + a for s, a in zip(seps, attrs_before, strict=False))
    html_before_value = f"{head}{seps[7]}href={quote}"
    tail = quote + "".join(s + a for s, a in zip(seps[3:], attrs_after, strict=False))
    html = f"{html_before_value}{raw}{tail}>{after}"

    link = only_link(html)
    assert (link.start, link.end) == (len(html_before_value), len(html_before_value) + len(raw))
    assert unescape(html[link.start : link.end]) == oracle_hrefs(html)[0]
    assert link.trackable
    assert rewrite(html, [link], lambda url: "T") == f"{html_before_value}T{tail}>{after}"


html_chunks = st.sampled_from(
    [
        "<a ", "<A ", "<area ", "<p ", "href=", "HREF=", " href = ", "rel=notrack ",
        "data-notrack ",
        '"', "'", "=", "/", ">", " ", "\n", "é", "😀", "&amp;", "&", "#x", "mailto:x@e.example",
        "http://e.example/?a=1", "https://e.example/p#f", "<!--", "-->", "<script>", "</script>",
        "<style>", "</style>", "</a>", "<![foo[", "<![if mso]>", "<!doctype html>", "<b>", "x",
    ]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(chunks=st.lists(html_chunks, max_size=40))
def test_spans_always_agree_with_the_parser_and_rewriting_changes_only_tracked_values(
    chunks: list[str],
) -> None:
    html = "".join(chunks)
    links = find_links(html)
    hrefs = oracle_hrefs(html)
    assert [unescape(html[link.start : link.end]) for link in links] == hrefs

    out = rewrite(html, links, lambda url: "T")
    expected = ["T" if link.trackable else href for link, href in zip(links, hrefs, strict=True)]
    assert oracle_hrefs(out) == expected
    assert rewrite(html, [x for x in links if not x.trackable], never_called) == html
