"""The tracker's pure parts: bot detection, IP truncation, forms, preferences, wording, buffer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv6Address, ip_network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.core.consent import Channel
from tracker import bots, forms, ipprefix
from tracker.buffer import BufferObserver, EventBuffer
from tracker.events import Event, Hit, to_event
from tracker.preferences import (
    Changes,
    LedgerRow,
    Scope,
    SuppressionRow,
    TopicRow,
    changes,
    channels_for,
    current,
)
from tracker.wording import history_line, language, long_date

NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/126.0 Safari/537.36"
)
fast = settings(max_examples=200, deadline=None)


# ---------------------------------------------------------------- ip prefixes


@fast
@given(st.ip_addresses())
def test_truncated_prefix_is_the_network_holding_the_address(
    address: IPv4Address | IPv6Address,
) -> None:
    text = ipprefix.client_address(str(address), None)
    prefix = ipprefix.truncate(text)
    assert prefix is not None
    network = ip_network(prefix)
    assert network.prefixlen == (24 if network.version == 4 else 48)
    mapped = address.ipv4_mapped if isinstance(address, IPv6Address) else None
    assert (mapped or address) in network
    assert network == ip_network(f"{mapped or address}/{network.prefixlen}", strict=False)


def test_ipv4_mapped_ipv6_peers_are_truncated_as_ipv4() -> None:
    assert ipprefix.truncate(ipprefix.client_address("::ffff:203.0.113.77", None)) == (
        "203.0.113.0/24"
    )
    assert ipprefix.truncate("2001:db8:1234:5678::1") == "2001:db8:1234::/48"


def test_forwarded_for_is_believed_only_from_our_own_balancer() -> None:
    hops = "198.51.100.1, 203.0.113.9"
    assert ipprefix.client_address("10.0.0.5", hops) == "203.0.113.9"
    assert ipprefix.client_address("127.0.0.1", hops) == "203.0.113.9"
    assert ipprefix.client_address("127.0.0.1", "::ffff:17.1.2.3") == "17.1.2.3"
    # A client on the internet cannot pick the address we record.
    assert ipprefix.client_address("8.8.4.4", hops) == "8.8.4.4"
    assert ipprefix.client_address("10.0.0.5", "garbage") == "10.0.0.5"
    assert ipprefix.client_address(None, None) is None


# ---------------------------------------------------------------- bots


@pytest.mark.parametrize(
    ("agent", "address", "method", "expected"),
    [
        (CHROME, "203.0.113.9", "GET", None),
        ("Mozilla/5.0", "203.0.113.9", "GET", "apple_mpp"),
        (CHROME, "17.58.101.7", "GET", "apple_mpp"),
        (
            "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0"
            " (via ggpht.com GoogleImageProxy)",
            "66.249.84.1",
            "GET",
            "google_image_proxy",
        ),
        (CHROME, "203.0.113.9", "HEAD", "head_request"),
        ("", "203.0.113.9", "GET", "no_agent"),
        ("python-requests/2.32", "203.0.113.9", "GET", "machine_agent"),
    ],
)
def test_opens_from_privacy_proxies_and_tools_are_machine(
    agent: str, address: str, method: str, expected: str | None
) -> None:
    assert bots.classify_open(agent, address, method) == expected


@pytest.mark.parametrize(
    ("agent", "method", "seconds", "expected"),
    [
        (CHROME, "GET", 3600.0, None),
        (CHROME, "GET", None, None),
        (CHROME, "GET", 2.0, "too_soon_after_delivery"),
        (CHROME, "HEAD", 3600.0, "head_request"),
        ("Mozilla/5.0 (compatible; Barracuda Sentinel)", "GET", 3600.0, "machine_agent"),
        (
            "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
            "GET",
            9e3,
            "machine_agent",
        ),
        # A phone model that merely contains "bot" is a person.
        ("Mozilla/5.0 (Linux; Android 10; CUBOT X30) Chrome/120.0 Mobile", "GET", 9e3, None),
    ],
)
def test_clicks_by_scanners_are_machine_and_people_are_human(
    agent: str, method: str, seconds: float | None, expected: str | None
) -> None:
    assert bots.classify_click(agent, method, seconds) == expected


# ---------------------------------------------------------------- forms


def test_csrf_field_is_bound_to_the_token_and_the_key() -> None:
    key = forms.csrf_key("1:secret")
    field = forms.csrf_field(key, "TOKEN")
    assert forms.csrf_ok(key, "TOKEN", field)
    assert not forms.csrf_ok(key, "OTHER", field)
    assert not forms.csrf_ok(forms.csrf_key("2:other"), "TOKEN", field)
    assert not forms.csrf_ok(key, "TOKEN", None)
    assert not forms.csrf_ok(key, "TOKEN", "é" * 32)


@pytest.mark.parametrize(
    ("site", "origin", "allowed"),
    [
        (None, None, True),  # no browser hints: the CSRF field decides
        ("same-origin", "https://t.example.com", True),
        (None, "https://t.example.com", True),
        (None, "https://tracker.example.com", True),  # our base_url, behind a proxy
        ("cross-site", None, False),
        ("same-site", None, False),
        (None, "https://evil.example.net", False),
        (None, "null", False),
        ("same-origin", "null", True),  # the browser's own word wins over a hidden Origin
        ("cross-site", "https://t.example.com", False),
    ],
)
def test_only_posts_from_our_own_page_pass_the_origin_check(
    site: str | None, origin: str | None, allowed: bool
) -> None:
    ours = {"https://tracker.example.com"}
    assert forms.same_origin(site, origin, "t.example.com", ours) is allowed


def test_reasons_are_bounded_and_stripped_of_control_characters() -> None:
    assert forms.clean_reason("  too\x00 many\x1b emails \n") == "too many emails"
    assert forms.clean_reason("") is None
    assert len(forms.clean_reason("x" * 10_000) or "") == forms.REASON_MAX


# ---------------------------------------------------------------- preferences


def grant(channel: str, when: datetime, kind: str = "express", row_id: int = 1) -> LedgerRow:
    return LedgerRow(row_id, channel, "grant", kind, None, None, "form", when)


TOPICS = [
    TopicRow(1, "News", "", default_subscribed=False, subscribed=True),
    TopicRow(2, "Service", "", default_subscribed=True, subscribed=None),
    TopicRow(3, "Offers", "", default_subscribed=False, subscribed=None),
]


def test_switches_are_on_only_where_messages_would_be_sent() -> None:
    ledger = [grant("email", datetime(2012, 9, 19, tzinfo=UTC))]
    prefs = current(ledger, {}, TOPICS, [], NOW)
    assert [(c.channel, c.on) for c in prefs.channels] == [
        (Channel.EMAIL, True),
        (Channel.SMS, False),  # never consented
    ]
    assert [(t.topic.id, t.on) for t in prefs.topics] == [(1, True), (2, True), (3, False)]


def test_lapsed_implied_consent_shows_the_channel_off() -> None:
    ledger = [grant("email", datetime(2020, 1, 1, tzinfo=UTC), kind="implied_inquiry")]
    assert not current(ledger, {}, TOPICS, [], NOW).channels[0].on


def test_suppressions_other_than_the_persons_own_block_the_switch() -> None:
    ledger = [grant("email", NOW), grant("sms", NOW, row_id=2)]
    suppressions = [
        SuppressionRow("channel", "email", None, "unsubscribe"),
        SuppressionRow("channel", "sms", None, "hard_bounce"),
        SuppressionRow("topic", None, 1, "manual"),
        SuppressionRow("topic", None, 2, "unsubscribe"),
    ]
    prefs = current(ledger, {}, TOPICS, suppressions, NOW)
    assert [(c.on, c.blocked_by) for c in prefs.channels] == [(False, None), (False, "hard_bounce")]
    assert [(t.on, t.blocked_by) for t in prefs.topics[:2]] == [(False, "manual"), (False, None)]
    everything = current(
        ledger, {}, TOPICS, [SuppressionRow("global", None, None, "complaint")], NOW
    )
    assert {c.blocked_by for c in everything.channels} == {"complaint"}


def test_submitted_switches_change_only_what_differs_and_skip_blocked_or_unshown() -> None:
    ledger = [grant("email", NOW)]
    suppressions = [SuppressionRow("topic", None, 3, "manual")]
    prefs = current(ledger, {}, TOPICS, suppressions, NOW)
    diff = changes(prefs, channels_wanted={"sms"}, topics_wanted={3}, topics_shown={1, 3})
    assert diff == Changes(
        channels_on=(Channel.SMS,),
        channels_off=(Channel.EMAIL,),
        topics_on=(),  # 3 is blocked
        topics_off=(1,),  # 2 was not on the page: left alone
    )
    assert not changes(prefs, {"email"}, {1, 2}, {1, 2})


def test_scopes_withdraw_their_channels() -> None:
    assert channels_for(Scope.DIGITAL) == (Channel.EMAIL, Channel.SMS)
    assert channels_for(Scope.EMAIL) == (Channel.EMAIL,)
    assert channels_for(Scope.TOPIC) == ()


# ---------------------------------------------------------------- wording


def test_history_reads_as_the_person_would_say_it() -> None:
    when = datetime(2012, 9, 19, 10, tzinfo=UTC)
    row = LedgerRow(1, "email", "grant", "express", None, None, "Salon E-commerce Paris", when)
    assert history_line(row, "en") == (
        "You subscribed on 19 September 2012 at Salon E-commerce Paris."
    )
    assert history_line(row, "fr") == (
        "Vous vous êtes abonné le 19 septembre 2012 (source : Salon E-commerce Paris)."
    )
    inquiry = LedgerRow(2, "email", "grant", "implied_inquiry", None, None, "quote form", when)
    assert history_line(inquiry, "en") == (
        "You contacted us on 19 September 2012 (quote form): we may write to you by email"
        " until 19 March 2013."
    )
    topic = LedgerRow(3, "email", "withdraw", None, 4, "News", "one-click", when)
    assert history_line(topic, "en") == (
        "You unsubscribed from “News” on 19 September 2012 with your mail app's unsubscribe button."
    )
    again = LedgerRow(6, "email", "grant", "express", None, None, "preference centre", when)
    assert history_line(again, "fr") == (
        "Vous vous êtes abonné le 19 septembre 2012 dans votre centre de préférences."
    )
    topic = LedgerRow(3, "email", "withdraw", None, 4, "News", "import 3", when)
    assert (
        history_line(topic, "en") == "You unsubscribed from “News” on 19 September 2012 (import 3)."
    )
    sms = LedgerRow(5, "sms", "withdraw", None, None, None, "unsubscribe page", when)
    assert history_line(sms, "fr") == (
        "Vous vous êtes désabonné (SMS) le 19 septembre 2012 sur notre page de désabonnement."
    )


def test_dates_and_languages() -> None:
    assert long_date(datetime(2024, 9, 1, tzinfo=UTC), "fr") == "1er septembre 2024"
    assert long_date(datetime(2024, 8, 1, tzinfo=UTC), "en") == "1 August 2024"
    assert [language(x) for x in ("fr", "fr_CA", "FR-fr", "en", "de", "")] == [
        "fr",
        "fr",
        "fr",
        "en",
        "en",
        "en",
    ]


# ---------------------------------------------------------------- events


def test_a_hit_becomes_an_event_row_with_a_truncated_address_and_a_verdict() -> None:
    at = NOW.timestamp()
    hit = Hit(at, "open", 7, None, False, "Mozilla/5.0", "127.0.0.1", "17.2.3.4")
    event, why = to_event(hit)
    assert event == Event(at, "open", 7, None, True, "Mozilla/5.0", "17.2.3.0/24")
    assert why == "apple_mpp"
    click = Hit(at, "click", 7, 3, False, CHROME + "x" * 1000, "203.0.113.9", None, at - 3600)
    event, why = to_event(click)
    assert (event.machine, why, event.ip_prefix) == (False, None, "203.0.113.0/24")
    assert len(event.user_agent or "") == 512
    scanner = click._replace(sent_at=at - 1)
    assert to_event(scanner)[1] == "too_soon_after_delivery"


# ---------------------------------------------------------------- buffer


class Recorder(BufferObserver):
    def __init__(self) -> None:
        self.drops: dict[str, int] = {}
        self.written = 0
        self.failures = 0

    def dropped(self, reason: str, count: int) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + count

    def flushed(self, count: int, seconds: float) -> None:
        self.written += count

    def flush_failed(self) -> None:
        self.failures += 1


def event(n: int) -> Event:
    return Event(NOW.timestamp(), "open", n, None, False, None, None)


async def test_a_full_buffer_drops_and_counts_without_waiting() -> None:
    written: list[int] = []

    async def write(batch: Sequence[Event]) -> int:
        written.extend(e.delivery_id for e in batch)
        return len(batch)

    seen = Recorder()
    buffer: EventBuffer[Event] = EventBuffer(write, capacity=3, interval_s=60, observer=seen)
    accepted = [buffer.add(event(n)) for n in range(5)]
    assert accepted == [True, True, True, False, False]
    assert seen.drops == {"overflow": 2}
    await buffer.close()
    assert written == [0, 1, 2]
    assert seen.written == 3


async def test_buffer_flushes_on_its_interval_and_retries_a_failed_batch_in_order() -> None:
    written: list[int] = []
    fail = [True]

    async def write(batch: Sequence[Event]) -> int:
        if fail.pop() if fail else False:
            raise OSError("database away")
        written.extend(e.delivery_id for e in batch)
        return len(batch) - 1  # one event's delivery no longer exists

    seen = Recorder()
    buffer: EventBuffer[Event] = EventBuffer(write, capacity=100, interval_s=0.02, observer=seen)
    buffer.start()
    for n in range(4):
        buffer.add(event(n))
    for _ in range(1000):  # the interval's flush, within 20 s even on a loaded machine
        if written:
            break
        await asyncio.sleep(0.02)
    await buffer.close()
    assert written == [0, 1, 2, 3]
    assert seen.failures == 1
    assert seen.drops == {"orphan": 1}


async def test_shutdown_counts_what_it_could_not_write() -> None:
    async def write(batch: Sequence[Event]) -> int:
        raise OSError("database away")

    seen = Recorder()
    buffer: EventBuffer[Event] = EventBuffer(write, capacity=10, interval_s=60, observer=seen)
    for n in range(4):
        buffer.add(event(n))
    await buffer.close(timeout_s=0.05)
    assert seen.drops == {"shutdown": 4}
    assert len(buffer) == 0
