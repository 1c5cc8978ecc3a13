"""Sending-setup checks: what mailbox providers require of a bulk sender, before it sends.

Every campaign here is bulk mail (one message to many), so Gmail's and Yahoo's bulk-sender
rules (February 2024) apply to all of them:

- one-click unsubscribe (RFC 8058): the List-Unsubscribe-Post header, which RFC 8058 s.3.1
  allows only with an HTTPS URI. A tracker on plain http:// gets no such header, so a
  campaign whose `tracker.base_url` is not https fails its check; a loopback URL (the demo,
  a developer's machine) only warns, since nothing leaves the machine;
- DMARC alignment: SPF authenticates the return path (MAIL FROM) domain, which counts for
  DMARC only when it shares the From domain's organisational domain (relaxed alignment,
  RFC 7489 s.3.1.2 and s.3.2, from the Public Suffix List). Not aligned: a warning (DKIM
  alone can still align);
- a real EHLO name (RFC 5321 s.4.1.1.1: the client's FQDN); receivers score `localhost`.
  A warning, and only for a relay across a network (a loopback relay re-greets itself).

Pure: settings and a campaign definition in, findings out. `campaign check`, `preview`,
`send` and the demo print the same findings; `send` refuses a campaign with a fatal one.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import cache, lru_cache
from urllib.parse import urlsplit

from publicsuffixlist import PublicSuffixList

from mailer.campaigns.definition import CampaignDefinition
from mailer.core.settings import Settings

__all__ = ["Finding", "aligned", "check", "is_loopback_host", "one_click_allowed"]


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem with the sending setup; fatal ones stop the campaign."""

    setting: str
    message: str
    fatal: bool

    def __str__(self) -> str:
        return f"{self.setting}: {self.message}"


def is_loopback_host(host: str) -> bool:
    """localhost, *.localhost (RFC 6761 s.6.3), 127.0.0.0/8 or ::1."""
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@lru_cache(maxsize=64)
def one_click_allowed(url: str) -> bool:
    """Whether a List-Unsubscribe URL may claim one-click: https, or http on loopback."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return True
    return parts.scheme == "http" and is_loopback_host(parts.hostname or "")


@cache
def _suffixes() -> PublicSuffixList:
    return PublicSuffixList()  # the list shipped with the package: no network


def organisational_domain(domain: str) -> str:
    """RFC 7489 s.3.2: the public suffix plus one label (the domain itself if it is a suffix)."""
    domain = domain.lower().rstrip(".")
    return _suffixes().privatesuffix(domain) or domain


def aligned(domain: str, from_domain: str) -> bool:
    """DMARC relaxed alignment: both have the same organisational domain."""
    return organisational_domain(domain) == organisational_domain(from_domain)


def check(settings: Settings, definition: CampaignDefinition) -> list[Finding]:
    """What in the settings keeps this campaign from meeting the bulk-sender rules."""
    findings: list[Finding] = []
    base = settings.tracker.base_url
    url = urlsplit(base)
    if url.scheme != "https":
        if is_loopback_host(url.hostname or ""):
            findings.append(
                Finding(
                    "tracker.base_url",
                    f"{base} is a loopback address: recipients elsewhere cannot reach its "
                    "links. Fine for a demo; a real campaign needs the tracker's public "
                    "https:// URL (Gmail and Yahoo require one-click unsubscribe, RFC 8058).",
                    fatal=False,
                )
            )
        else:
            findings.append(
                Finding(
                    "tracker.base_url",
                    f"{base} is not https, so no message can carry List-Unsubscribe-Post "
                    "(one-click unsubscribe needs an https URI, RFC 8058 s.3.1), which Gmail "
                    "and Yahoo require of bulk senders; set it to the tracker's https:// URL.",
                    fatal=True,
                )
            )
    from_domain = definition.from_address.rpartition("@")[2].lower()
    return_domain = settings.sender.domain_for(definition.from_address)
    if not aligned(return_domain, from_domain):
        findings.append(
            Finding(
                "sender.domain",
                f"the return path {settings.sender.bounce_local_part}+…@{return_domain} does "
                f"not align with the From domain {from_domain} (DMARC relaxed alignment needs "
                f"the same organisational domain, RFC 7489 s.3.1.2), so SPF cannot pass DMARC "
                f"for these messages; use {from_domain} or a subdomain of it, or leave it "
                "empty to use the From domain.",
                fatal=False,
            )
        )
    for relay in settings.all_relays():
        name = settings.helo_name(relay)
        unqualified = "." not in name or name.lower().startswith("localhost.")
        if unqualified and not name.startswith("[") and not is_loopback_host(relay.host):
            where = f"relays.{relay.name}" if settings.relays else "smtp"
            findings.append(
                Finding(
                    f"{where}.helo_name",
                    f"the engine would greet {relay.host} as {name!r}, not a fully qualified "
                    "domain name (RFC 5321 s.4.1.1.1); relays and receivers reject or score "
                    f"it: set {where}.helo_name or sender.domain.",
                    fatal=False,
                )
            )
    return findings
