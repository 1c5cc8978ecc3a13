"""The preference centre's model: what each switch shows, and what a submitted form changes.

Pure functions over rows the store read; no I/O. The store applies the `Changes` inside the
transaction that read the rows, so a switch is judged on the state it is changing.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from mailer.core.consent import (
    Action,
    Channel,
    Kind,
    LedgerEntry,
    Policy,
    evaluate_consent,
)
from mailer.core.topics import topic_name
from mailer.optouts.rules import DIGITAL

# Fixed display order; only the channels a campaign reaches electronically (CASL covers
# commercial electronic messages; postal and phone preferences are kept elsewhere). The same
# tuple inbound's mailto unsubscribe withdraws: one spread for every door.
CHANNELS: tuple[Channel, ...] = DIGITAL

UNSUBSCRIBE = "unsubscribe"


class Scope(StrEnum):
    """What an unsubscribe covers; the value is the form field and the metric label."""

    TOPIC = "topic"  # the campaign's topic only
    EMAIL = "email"  # the email channel
    DIGITAL = "digital"  # every digital channel: the default and the one-click scope


def channels_for(scope: Scope) -> tuple[Channel, ...]:
    """The channels an opt-out of this scope withdraws."""
    # DESIGN: an opt-out from one digital channel applies to all digital channels unless the
    # person chose otherwise (here: by picking "email" or "topic").
    if scope is Scope.DIGITAL:
        return CHANNELS
    if scope is Scope.EMAIL:
        return (Channel.EMAIL,)
    return ()


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """One consent ledger row as the pages need it (topic rows carry the topic's name)."""

    id: int
    channel: str
    action: str
    kind: str | None
    topic_id: int | None
    topic_name: str | None
    source: str
    obtained_at: datetime
    ends_at: datetime | None = None
    # The dates were given without a time (migration 0007): printed as given.
    obtained_date_only: bool = False
    ends_date_only: bool = False
    # Topic rows: the topic's slug and names per language, for topic_label().
    topic_slug: str = ""
    topic_names: Mapping[str, str] = field(default_factory=dict)
    # A grant recorded by a sign-up form (mailer/forms): its source and both steps' times.
    form_source: str | None = None
    form_requested_at: str | None = None
    form_confirmed_at: str | None = None

    def topic_label(self, lang: str) -> str:
        """A topic row's topic as a reader of `lang` calls it (mailer.core.topics' fallback)."""
        return topic_name(self.topic_names, self.topic_name, self.topic_slug, lang)

    def entry(self) -> LedgerEntry | None:
        """The row as a consent.LedgerEntry, or None for topic rows and malformed grants."""
        if self.topic_id is not None or (self.action == "grant" and self.kind is None):
            return None
        return LedgerEntry(
            id=self.id,
            channel=Channel(self.channel),
            action=Action(self.action),
            kind=Kind(self.kind) if self.kind is not None else None,
            source=self.source,
            obtained_at=self.obtained_at,
            ends_at=self.ends_at,
        )


@dataclass(frozen=True, slots=True)
class SuppressionRow:
    scope: str
    channel: str | None
    topic_id: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class TopicRow:
    id: int
    name: str  # the default name; pages show label(lang)
    description: str
    default_subscribed: bool
    subscribed: bool | None  # the contact's own choice; None = never chose
    slug: str = ""
    names: Mapping[str, str] = field(default_factory=dict)

    def label(self, lang: str) -> str:
        """The topic's name for a reader of `lang` (mailer.core.topics' fallback rule)."""
        return topic_name(self.names, self.name, self.slug, lang)


@dataclass(frozen=True, slots=True)
class ChannelSwitch:
    channel: Channel
    on: bool
    blocked_by: str | None  # a suppression reason the person cannot lift


@dataclass(frozen=True, slots=True)
class TopicSwitch:
    topic: TopicRow
    on: bool
    blocked_by: str | None


@dataclass(frozen=True, slots=True)
class Preferences:
    channels: tuple[ChannelSwitch, ...]
    topics: tuple[TopicSwitch, ...]


@dataclass(frozen=True, slots=True)
class Changes:
    channels_on: tuple[Channel, ...] = ()
    channels_off: tuple[Channel, ...] = ()
    topics_on: tuple[int, ...] = ()
    topics_off: tuple[int, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.channels_on or self.channels_off or self.topics_on or self.topics_off)


def current(
    ledger: Iterable[LedgerRow],
    channel_prefs: Mapping[str, bool],
    topics: Sequence[TopicRow],
    suppressions: Collection[SuppressionRow],
    now: datetime,
) -> Preferences:
    """Each switch's position: on only where the person would receive messages today."""
    entries = [e for e in (row.entry() for row in ledger) if e is not None]
    switches = []
    for channel in CHANNELS:
        blocked = _channel_block(channel, suppressions)
        unsubscribed = any(
            s.scope == "channel" and s.channel == channel and s.reason == UNSUBSCRIBE
            for s in suppressions
        )
        on = (
            blocked is None
            and not unsubscribed
            and channel_prefs.get(channel) is not False
            # The switch mirrors consent as the default policy sees it (CASL).
            and evaluate_consent(entries, channel, Policy.CASL, now).eligible
        )
        switches.append(ChannelSwitch(channel, on, blocked))
    topic_switches = []
    for topic in topics:
        topic_supp = [s for s in suppressions if s.scope == "topic" and s.topic_id == topic.id]
        blocked = next((s.reason for s in topic_supp if s.reason != UNSUBSCRIBE), None)
        chosen = topic.default_subscribed if topic.subscribed is None else topic.subscribed
        topic_switches.append(TopicSwitch(topic, not topic_supp and chosen, blocked))
    return Preferences(tuple(switches), tuple(topic_switches))


def _channel_block(channel: Channel, suppressions: Iterable[SuppressionRow]) -> str | None:
    """A suppression the person may not lift from the preference centre, if any."""
    for s in suppressions:
        if s.scope == "global":
            return s.reason
        if s.scope == "channel" and s.channel == channel and s.reason != UNSUBSCRIBE:
            return s.reason
    return None


def changes(
    prefs: Preferences,
    channels_wanted: Collection[str],
    topics_wanted: Collection[int],
    topics_shown: Collection[int],
) -> Changes:
    """What the submitted switches change; blocked switches and unshown topics are left alone."""
    channels_on, channels_off, topics_on, topics_off = [], [], [], []
    for ch in prefs.channels:
        if ch.blocked_by is not None:
            continue
        wanted = ch.channel in channels_wanted
        if wanted and not ch.on:
            channels_on.append(ch.channel)
        elif ch.on and not wanted:
            channels_off.append(ch.channel)
    for tp in prefs.topics:
        # A topic created after the page was drawn was never offered: absent is not "off".
        if tp.blocked_by is not None or tp.topic.id not in topics_shown:
            continue
        wanted = tp.topic.id in topics_wanted
        if wanted and not tp.on:
            topics_on.append(tp.topic.id)
        elif tp.on and not wanted:
            topics_off.append(tp.topic.id)
    return Changes(tuple(channels_on), tuple(channels_off), tuple(topics_on), tuple(topics_off))
