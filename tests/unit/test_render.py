"""Rendering in the sandbox: footers, escaping, links, text parts, templates (campaigns.render)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2.exceptions import SecurityError
from markupsafe import escape

from mailer.campaigns.campaign_file import load
from mailer.campaigns.definition import CampaignDefinition
from mailer.campaigns.render import (
    MessageError,
    Renderer,
    RenderError,
    UnregisteredLinks,
    _with_pixel,
)
from mailer.campaigns.render_inputs import CampaignFields, RenderInputs, resolve_locale
from mailer.campaigns.template_set import TemplateFileError, TemplateSet
from mailer.campaigns.text_part import html_to_text
from mailer.core.consent import Kind
from mailer.core.links import add_pixel, find_links, rewrite

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
# The sender identification both layouts include (the transactional one from its own folder).
SENDER_PARTS = ("transactional/_sender.html", "transactional/_sender.txt")
SEPT_19 = datetime(2012, 9, 19, 12, tzinfo=UTC)
UNSUBSCRIBE = "https://t.example/u/UNSUB"
PREFERENCES = "https://t.example/p/PREFS"
PIXEL = "https://t.example/o/OPEN"


@pytest.fixture(scope="module")
def definition() -> CampaignDefinition:
    return load(TEMPLATES / "service_reminder.toml", TEMPLATES)


@pytest.fixture(scope="module")
def renderer(definition: CampaignDefinition) -> Renderer:
    return Renderer(TemplateSet.load(TEMPLATES, definition.template))


def make_inputs(
    definition: CampaignDefinition,
    *,
    locale: str = "en",
    kind: Kind | None = Kind.EXPRESS,
    source: str = "Salon E-commerce Paris",
    obtained_at: datetime | None = SEPT_19,
    name: str | None = "Marie Tremblay",
    attributes: dict[str, Any] | None = None,
    tracking: bool = False,
    click_urls: dict[str, str] | None = None,
    subject: str | None = None,
) -> RenderInputs:
    campaign = CampaignFields.from_definition(definition)
    if subject is not None:
        campaign = dataclasses.replace(campaign, subject=dict.fromkeys(campaign.locales, subject))
    return RenderInputs(
        delivery_id=7,
        email="marie@example.com",
        name=name,
        locale=locale,
        attributes=dict(definition.sample.attributes) if attributes is None else attributes,
        consent_kind=kind,
        consent_source=source,
        consent_obtained_at=obtained_at,
        campaign=campaign,
        unsubscribe_url=UNSUBSCRIBE,
        preferences_url=PREFERENCES,
        tracking=tracking,
        pixel_url=PIXEL if tracking else None,
        click_urls=click_urls or {},
    )


def clicks_for(urls: tuple[str, ...] | list[str]) -> dict[str, str]:
    return {url: f"https://t.example/c/L{i}" for i, url in enumerate(urls)}


def custom_renderer(tmp_path: Path, html: str, txt: str | None = None, **extra: str) -> Renderer:
    """A `custom` template extending the real layout, in a private templates folder."""
    for layout in ("layout.html", "layout.txt", *SENDER_PARTS):
        (tmp_path / layout).parent.mkdir(exist_ok=True)
        shutil.copy(TEMPLATES / layout, tmp_path / layout)
    (tmp_path / "custom.html").write_text(html, encoding="utf-8")
    if txt is not None:
        (tmp_path / "custom.txt").write_text(txt, encoding="utf-8")
    for filename, source in extra.items():
        (tmp_path / filename.replace("__", ".")).write_text(source, encoding="utf-8")
    return Renderer(TemplateSet.load(tmp_path, "custom"))


def page(body: str) -> str:
    return '{% extends "layout.html" %}{% block content %}' + body + "{% endblock %}"


# --- the consent-origin footer --------------------------------------------------------------


def test_the_english_express_footer_is_the_documented_sentence(
    definition: CampaignDefinition, renderer: Renderer
) -> None:
    parts = renderer.render(make_inputs(definition, locale="en"))
    sentence = (
        "You receive this email because you subscribed on 19 September 2012 at "
        "Salon E-commerce Paris."
    )
    assert sentence in parts.html
    assert sentence in parts.text


def test_the_french_express_footer_is_the_documented_sentence(
    definition: CampaignDefinition, renderer: Renderer
) -> None:
    parts = renderer.render(make_inputs(definition, locale="fr"))
    sentence = (
        "Vous recevez ce courriel parce que vous vous êtes abonné le 19 septembre 2012 au "
        "Salon E-commerce Paris."
    )
    assert sentence in parts.html
    assert sentence in parts.text


FOOTER_WORDS = {
    ("en", Kind.IMPLIED_PURCHASE): "because you bought from us on 3 March 2024 (invoice 42).",
    ("en", Kind.IMPLIED_CONTRACT): "a contract with us on 3 March 2024 (invoice 42).",
    ("en", Kind.IMPLIED_INQUIRY): "because you sent us an inquiry on 3 March 2024 (invoice 42).",
    ("en", Kind.IMPLIED_PUBLICATION): "published (invoice 42, noted on 3 March 2024)",
    ("fr", Kind.IMPLIED_PURCHASE): "un achat chez nous le 3 mars 2024 (invoice 42).",
    ("fr", Kind.IMPLIED_CONTRACT): "conclu un contrat avec nous le 3 mars 2024 (invoice 42).",
    ("fr", Kind.IMPLIED_INQUIRY): "adressé une demande le 3 mars 2024 (invoice 42).",
    ("fr", Kind.IMPLIED_PUBLICATION): "publiée (invoice 42, relevée le 3 mars 2024)",
    ("en", Kind.EXPRESS): "because you subscribed on 3 March 2024 at invoice 42.",
    ("fr", Kind.EXPRESS): "vous êtes abonné le 3 mars 2024 au invoice 42.",
}


@pytest.mark.parametrize(("locale", "kind"), sorted(FOOTER_WORDS))
def test_each_consent_kind_has_its_own_footer_wording_in_french_and_english(
    definition: CampaignDefinition, renderer: Renderer, locale: str, kind: Kind
) -> None:
    inputs = make_inputs(
        definition,
        locale=locale,
        kind=kind,
        source="invoice 42",
        obtained_at=datetime(2024, 3, 3, 15, tzinfo=UTC),
    )
    parts = renderer.render(inputs)
    opening = "You receive this email" if locale == "en" else "Vous recevez ce courriel"
    sentence = renderer.consent_sentence(inputs)
    assert sentence.startswith(opening)
    assert FOOTER_WORDS[(locale, kind)] in sentence
    assert str(escape(sentence)) in parts.html
    assert sentence in parts.text


def test_a_contact_without_consent_under_can_spam_gets_a_sender_sentence(
    definition: CampaignDefinition, renderer: Renderer
) -> None:
    inputs = make_inputs(definition, kind=None, obtained_at=None, source="")
    sentence = renderer.consent_sentence(inputs)
    assert sentence == (
        "You receive this email from Garage Tremblay Automobiles; you can unsubscribe at any time."
    )
    assert sentence in renderer.render(inputs).text


def test_the_consent_date_is_the_day_in_the_senders_time_zone(
    definition: CampaignDefinition, renderer: Renderer
) -> None:
    # 02:00 UTC on the 20th is 22:00 on the 19th in Québec (America/Toronto).
    late = datetime(2012, 9, 20, 2, tzinfo=UTC)
    sentence = renderer.consent_sentence(make_inputs(definition, obtained_at=late))
    assert "on 19 September 2012" in sentence


def test_the_first_of_the_month_is_written_1er_in_french(
    definition: CampaignDefinition, renderer: Renderer
) -> None:
    first = datetime(2024, 5, 1, 12, tzinfo=UTC)
    sentence = renderer.consent_sentence(make_inputs(definition, locale="fr", obtained_at=first))
    assert "le 1er mai 2024" in sentence


def test_the_date_filter_writes_dates_in_the_messages_language(
    definition: CampaignDefinition, renderer: Renderer
) -> None:
    assert renderer.render(make_inputs(definition, locale="fr")).subject.endswith(
        "le 15 octobre 2024"
    )
    assert renderer.render(make_inputs(definition, locale="en")).subject.endswith(
        "on 15 October 2024"
    )


@pytest.mark.parametrize(
    ("contact", "expected"),
    [("fr", "fr"), ("fr-CA", "fr"), ("FR_ca", "fr"), ("en-GB", "en"), ("de", "fr"), ("", "fr")],
)
def test_the_contact_locale_falls_back_through_the_campaign_locales(
    contact: str, expected: str
) -> None:
    assert resolve_locale(contact, ("fr", "en")) == expected


def test_a_french_contact_gets_the_french_template_and_footer_labels(
    definition: CampaignDefinition, renderer: Renderer
) -> None:
    parts = renderer.render(make_inputs(definition, locale="fr-CA"))
    assert "Bonjour Marie Tremblay," in parts.text
    assert "Se désabonner" in parts.html
    assert '<html lang="fr">' in parts.html


# --- the sandbox and escaping ---------------------------------------------------------------


def test_the_sandbox_blocks_attribute_access_to_python_internals(
    tmp_path: Path, definition: CampaignDefinition
) -> None:
    renderer = custom_renderer(tmp_path, page("{{ ''.__class__.__mro__ }}"))
    with pytest.raises(RenderError) as caught:
        renderer.render(make_inputs(definition))
    assert isinstance(caught.value.__cause__, SecurityError)


def test_the_sandbox_blocks_format_string_escapes_to_internals(
    tmp_path: Path, definition: CampaignDefinition
) -> None:
    renderer = custom_renderer(tmp_path, page("{{ '{0.__class__}'.format(contact) }}"))
    with pytest.raises(RenderError):
        renderer.render(make_inputs(definition))


def test_a_template_cannot_change_the_render_inputs(
    tmp_path: Path, definition: CampaignDefinition
) -> None:
    renderer = custom_renderer(tmp_path, page("{{ attributes.update({'vehicle': 'x'}) }}"))
    inputs = make_inputs(definition)
    with pytest.raises(RenderError):
        renderer.render(inputs)
    assert inputs.attributes["vehicle"] == "Toyota RAV4 2019"


def test_contact_names_are_html_escaped_in_html_and_left_alone_in_text(
    definition: CampaignDefinition, renderer: Renderer
) -> None:
    hostile = '<script>alert("x")</script> & Co'
    parts = renderer.render(make_inputs(definition, name=hostile))
    assert "<script>" not in parts.html
    assert "Hello &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; Co," in parts.html
    assert f"Hello {hostile}," in parts.text


def test_the_subject_is_plain_text_and_never_html_escaped(
    definition: CampaignDefinition, renderer: Renderer
) -> None:
    inputs = make_inputs(definition, name="Tom & Jerry", subject="Hi {{ contact.name }} <3")
    assert renderer.render(inputs).subject == "Hi Tom & Jerry <3"


def test_a_missing_attribute_fails_naming_the_template_file_and_line(
    definition: CampaignDefinition, renderer: Renderer
) -> None:
    with pytest.raises(RenderError) as caught:
        renderer.render(make_inputs(definition, attributes={"next_service": "2024-10-15"}))
    assert isinstance(caught.value, MessageError)
    assert caught.value.reason == "render_error"
    assert "service_reminder.html:4" in str(caught.value)
    assert "vehicle" in str(caught.value)


def test_a_syntax_error_names_the_template_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(TemplateFileError, match=r"custom\.html:2"):
        custom_renderer(tmp_path, page("\n{% if %}"))


# --- links and the pixel --------------------------------------------------------------------


def test_literal_links_are_found_once_per_campaign(renderer: Renderer) -> None:
    assert not renderer.personalised_links
    assert "https://garage-tremblay.example/en/appointment?service=maintenance&src=email" in (
        renderer.links
    )
    assert all(url.startswith("https://garage-tremblay.example/") for url in renderer.links)
    assert len(renderer.links) == len(set(renderer.links)) == 10  # 5 per language


def test_tracked_links_point_to_click_urls_and_the_footer_links_do_not(
    definition: CampaignDefinition, renderer: Renderer
) -> None:
    clicks = clicks_for(renderer.links)
    parts = renderer.render(make_inputs(definition, tracking=True, click_urls=clicks))
    hrefs = [link.url for link in find_links(parts.html)]
    assert "https://garage-tremblay.example/en/contact" not in hrefs
    assert clicks["https://garage-tremblay.example/en/contact"] in hrefs
    assert UNSUBSCRIBE in hrefs
    assert PREFERENCES in hrefs
    assert "tel:+14185550142" in hrefs
    assert "https://garage-tremblay.example" in hrefs  # the sender's site is data-notrack
    assert parts.html.count(PIXEL) == 1


@settings(max_examples=25, deadline=None)
@given(
    name=st.text(max_size=30),
    vehicle=st.text(min_size=1, max_size=30),
    locale=st.sampled_from(["fr", "en"]),
)
def test_slot_rewriting_gives_the_same_html_as_rewriting_each_message(
    definition: CampaignDefinition, renderer: Renderer, name: str, vehicle: str, locale: str
) -> None:
    attributes = {**definition.sample.attributes, "vehicle": vehicle}
    clicks = clicks_for(renderer.links)
    plain = renderer.render(
        make_inputs(definition, locale=locale, name=name, attributes=attributes)
    )
    tracked = renderer.render(
        make_inputs(
            definition,
            locale=locale,
            name=name,
            attributes=attributes,
            tracking=True,
            click_urls=clicks,
        )
    )
    found = find_links(plain.html, skip_urls=(UNSUBSCRIBE, PREFERENCES))
    expected = add_pixel(rewrite(plain.html, found, clicks.__getitem__), PIXEL)
    assert tracked.html == expected


def test_without_tracking_links_stay_exactly_as_written_and_there_is_no_pixel(
    definition: CampaignDefinition, renderer: Renderer
) -> None:
    parts = renderer.render(make_inputs(definition, tracking=False))
    assert (
        'href="https://garage-tremblay.example/en/appointment?service=maintenance&amp;src=email"'
        in (parts.html)
    )
    assert "/o/" not in parts.html
    assert "_mailer_link" not in parts.html


def test_an_unregistered_literal_link_asks_the_caller_to_register_it(
    definition: CampaignDefinition, renderer: Renderer
) -> None:
    with pytest.raises(UnregisteredLinks) as caught:
        renderer.render(make_inputs(definition, tracking=True, click_urls={}))
    assert caught.value.urls[0] in renderer.links


def test_a_personalised_href_falls_back_to_rewriting_each_message(
    tmp_path: Path, definition: CampaignDefinition
) -> None:
    renderer = custom_renderer(
        tmp_path,
        page(
            '<a href="https://garage-tremblay.example/book?car={{ attributes.vehicle }}">Book</a>'
        ),
    )
    assert renderer.personalised_links
    inputs = make_inputs(definition, tracking=True)
    url = "https://garage-tremblay.example/book?car=Toyota RAV4 2019"
    assert renderer.links_for(inputs) == [url]
    with pytest.raises(UnregisteredLinks) as caught:
        renderer.render(inputs)
    assert caught.value.urls == (url,)
    parts = renderer.render(dataclasses.replace(inputs, click_urls={url: "https://t.example/c/1"}))
    assert 'href="https://t.example/c/1"' in parts.html
    assert f'href="{UNSUBSCRIBE}"' in parts.html


def test_mailto_and_notrack_links_with_jinja_keep_a_template_static(tmp_path: Path) -> None:
    renderer = custom_renderer(
        tmp_path,
        page(
            '<a href="mailto:{{ contact.email }}">me</a>'
            '<a data-notrack href="https://x.example/{{ contact.name }}">x</a>'
            '<a rel="nofollow notrack" href="https://y.example/{{ contact.name }}">y</a>'
            '{# <a href="https://commented.example/"> #}'
            '<a href="https://z.example/">z</a>'
        ),
    )
    assert not renderer.personalised_links
    assert renderer.links == ("https://z.example/",)


# --- text parts -----------------------------------------------------------------------------


def test_a_text_part_is_derived_from_the_html_when_no_txt_exists(
    tmp_path: Path, definition: CampaignDefinition
) -> None:
    renderer = custom_renderer(
        tmp_path,
        page(
            '<h1>Hi {{ contact.name }}</h1><p>Book <a href="https://a.example/book">here</a>.</p>'
        ),
    )
    text = renderer.render(make_inputs(definition)).text
    assert "Hi Marie Tremblay" in text
    assert "Book here (https://a.example/book)." in text
    assert f"Unsubscribe ({UNSUBSCRIBE})" in text
    assert "Garage Tremblay Automobiles" in text
    assert "{" not in text  # no CSS
    assert "<" not in text  # no tags


def test_a_derived_text_part_shows_the_tracked_link_urls(
    tmp_path: Path, definition: CampaignDefinition
) -> None:
    renderer = custom_renderer(tmp_path, page('<a href="https://a.example/">Site</a>'))
    inputs = make_inputs(definition, tracking=True, click_urls=clicks_for(renderer.links))
    assert "Site (https://t.example/c/L0)" in renderer.render(inputs).text


def test_a_french_html_never_travels_with_the_generic_english_text(
    tmp_path: Path, definition: CampaignDefinition
) -> None:
    renderer = custom_renderer(
        tmp_path,
        page("<p>Hello</p>"),
        txt='{% extends "layout.txt" %}{% block content %}Hello text{% endblock %}',
        custom__fr__html=page("<p>Bonjour</p>"),
    )
    assert renderer.render(make_inputs(definition, locale="en")).text.startswith("Hello text")
    assert renderer.render(make_inputs(definition, locale="fr")).text.startswith("Bonjour")


def test_html_to_text_keeps_structure_and_drops_head_scripts_and_styles() -> None:
    html = (
        "<html><head><title>T</title><style>p{color:red}</style></head><body>"
        "<p>One <b>bold</b>\n  word</p><ul><li>first</li><li>second</li></ul>"
        "<script>var x = 1;</script><p>Write to <a href='mailto:a@b.example'>us</a>"
        " or <a href='#top'>top</a><br>next line <img alt='logo'></p></body></html>"
    )
    assert html_to_text(html) == (
        "One bold word\n\n- first\n- second\n\nWrite to us (a@b.example) or top\nnext line logo\n"
    )


# --- template sets and re-rendering ---------------------------------------------------------


def test_a_template_set_holds_the_template_its_variants_and_its_layouts() -> None:
    templates = TemplateSet.load(TEMPLATES, "service_reminder")
    assert set(templates.files) == {
        "layout.html",
        "layout.txt",
        *SENDER_PARTS,
        "service_reminder.html",
        "service_reminder.txt",
        "service_reminder.fr.html",
        "service_reminder.fr.txt",
    }
    assert templates.sha256() == TemplateSet.load(TEMPLATES, "service_reminder").sha256()
    assert json.loads(templates.canonical_json()) == dict(templates.files)


def test_a_changed_file_changes_the_template_version_hash(tmp_path: Path) -> None:
    custom_renderer(tmp_path, page("one"))
    before = TemplateSet.load(tmp_path, "custom").sha256()
    (tmp_path / "layout.html").write_text(
        (tmp_path / "layout.html").read_text() + " ", encoding="utf-8"
    )
    assert TemplateSet.load(tmp_path, "custom").sha256() != before


def test_a_syntax_error_in_a_layout_is_found_before_any_message(tmp_path: Path) -> None:
    (tmp_path / "base.html").write_text("ok\n{% block content %}{% endblock %}{% endif %}")
    with pytest.raises(TemplateFileError, match=r"base\.html:2"):
        custom_renderer(tmp_path, '{% extends "base.html" %}')


def test_a_computed_template_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TemplateFileError, match="computed name"):
        custom_renderer(tmp_path, "{% extends attributes.layout %}")


def test_a_missing_layout_is_refused_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(TemplateFileError, match=r"nowhere\.html"):
        custom_renderer(tmp_path, '{% extends "nowhere.html" %}')


def test_rendering_from_the_archived_json_inputs_gives_identical_parts(
    definition: CampaignDefinition, renderer: Renderer
) -> None:
    clicks = clicks_for(renderer.links)
    inputs = make_inputs(definition, locale="fr", tracking=True, click_urls=clicks)
    archived = json.loads(json.dumps(inputs.to_json()))
    again = RenderInputs.from_json(archived)
    assert again == inputs
    stored = TemplateSet("service_reminder", json.loads(renderer.templates.canonical_json()))
    assert Renderer(stored).render(again) == renderer.render(inputs)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            ["</body>", "</BODY>", "</body >", "</body/>", "</body", "</bodyx>", "<p>é</p>", "x"]
        ),
        max_size=8,
    ).map("".join)
)
def test_the_pixel_lands_where_links_add_pixel_puts_it(html: str) -> None:
    assert _with_pixel(html, PIXEL) == add_pixel(html, PIXEL)
