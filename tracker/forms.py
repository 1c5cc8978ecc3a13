"""Form safety for the unsubscribe page and the preference centre: CSRF and input limits.

Pure functions; no I/O. The URL token is already a secret only the recipient holds, so a
forged cross-site form must also know it; on top of that every form carries a field derived
from the token with a server key, and a browser's own word on where a POST came from
(Sec-Fetch-Site, Origin) is honoured. The RFC 8058 one-click POST is exempt by design: it
comes from a mailbox provider's server, with no cookie, no page and no Origin.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Collection
from urllib.parse import urlsplit

CSRF_FIELD = "csrf"
REASON_MAX = 500  # characters kept from the optional "why" box
ONE_CLICK_FIELD = "List-Unsubscribe"
ONE_CLICK_VALUE = "One-Click"


def csrf_key(token_keys_spec: str) -> bytes:
    """A key for form fields, derived from the token keys so every instance agrees."""
    return hashlib.sha256(b"tracker form key\0" + token_keys_spec.encode("utf-8")).digest()


def csrf_field(key: bytes, token_text: str) -> str:
    """The hidden field value for the form at this token's URL."""
    return hmac.new(key, token_text.encode("ascii"), "sha256").hexdigest()[:32]


def csrf_ok(key: bytes, token_text: str, submitted: str | None) -> bool:
    """Whether a submitted field matches this token's (constant time)."""
    return submitted is not None and hmac.compare_digest(
        csrf_field(key, token_text), submitted.encode("ascii", "replace").decode()
    )


def same_origin(
    sec_fetch_site: str | None, origin: str | None, host: str | None, allowed: Collection[str]
) -> bool:
    """Whether the browser says a POST came from our own page.

    Sec-Fetch-Site is set by the browser alone (scripts cannot forge it), so where it is
    present it decides; older browsers are judged by Origin. Origin may be "null" on our own
    form when the page's referrer policy hides it, which is why Sec-Fetch-Site comes first.
    A request with neither (a script, an old browser) is judged by the CSRF field alone.
    """
    if sec_fetch_site is not None:
        return sec_fetch_site in ("same-origin", "none")
    if origin is None:
        return True
    parts = urlsplit(origin)
    if not parts.scheme or not parts.netloc:  # "null": sandboxed frames, privacy redirects
        return False
    return parts.netloc == host or f"{parts.scheme}://{parts.netloc}" in allowed


def clean_reason(text: str | None) -> str | None:
    """The optional reason, trimmed and bounded, without control characters."""
    if not text:
        return None
    kept = "".join(ch for ch in text if ch.isprintable() or ch in "\n\t").strip()
    return kept[:REASON_MAX] or None
