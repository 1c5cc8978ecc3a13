"""Client addresses: which one to believe, and the truncated prefix that is all we keep.

Pure functions over strings; no I/O. Addresses travel as canonical text (what the socket
reports, or what `ipaddress` prints) because building `ipaddress` objects cost ~7 µs per
pixel, a tenth of the whole request; Postgres casts the prefix to cidr when the batch lands.
"""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Network, ip_address

# GDPR art. 5(1)(c), data minimisation: a /24 or /48 still tells a country and a network
# (enough to spot a scanner farm) but not a household.
IPV4_PREFIX = 24
IPV6_PREFIX = 48


def canonical(text: str | None) -> str | None:
    """The address in `text` in canonical form (IPv4-mapped IPv6 unwrapped), or None."""
    if not text:
        return None
    try:
        address = ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def _is_ours(address: str) -> bool:
    """Loopback or private: a hop inside our own network (the load balancer)."""
    parsed = ip_address(address)
    return parsed.is_private or parsed.is_loopback


def client_address(peer: str | None, forwarded_for: str | None) -> str | None:
    """The client's address: the peer, or the last X-Forwarded-For hop when the peer is ours.

    Only a peer on a loopback or private network (our own load balancer) is trusted to
    report the client; the last hop is the one that balancer appended, so a client cannot
    forge it by sending its own header.
    """
    if not peer:
        return None
    # The socket's own report: canonical already unless an IPv4-mapped IPv6 peer.
    address = canonical(peer) if peer[:7].lower() == "::ffff:" else peer
    if forwarded_for and address is not None and _is_ours(address):
        hop = canonical(forwarded_for.rpartition(",")[2])
        if hop is not None:
            return hop
    return address


def truncate(address: str | None) -> str | None:
    """The /24 (IPv4) or /48 (IPv6) network holding a canonical `address`, as text."""
    if address is None:
        return None
    if ":" not in address:
        head, _, _ = address.rpartition(".")
        return f"{head}.0/{IPV4_PREFIX}"
    return str(IPv6Network((int(IPv6Address(address)), IPV6_PREFIX), strict=False))
