"""The hits the tracker records: the open pixel (/o/TOKEN) and the click redirect (/c/TOKEN).

Both only queue a hit for the buffer's batched writer; neither waits on the database to
record (DESIGN "Tracking server").
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from aiohttp import web

from mailer.core.tokens import Purpose
from tracker.context import TRACKER, message_page, unavailable
from tracker.store import Unavailable

log = logging.getLogger(__name__)

# The smallest transparent GIF: 1x1, one transparent colour (43 bytes).
GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
GIF_HEADERS = {
    "Content-Type": "image/gif",
    # Every fetch must reach us to be counted. (No Pragma/Expires: HTTP/1.0 caches are gone,
    # and each extra header is paid on every pixel.)
    "Cache-Control": "no-store, no-cache, private, max-age=0",
}
_OPEN_OK = ("open", "200")


async def open_pixel(request: web.Request) -> web.Response:
    """GET /o/TOKEN: the GIF, always; a genuine token queues an open."""
    tracker = request.app[TRACKER]
    try:
        token = tracker.verify(request.match_info["token"], Purpose.OPEN, "open")
        if token is not None:
            tracker.record(request, "open", token)
    except Exception:
        # The pixel is answered whatever happens: a broken image in someone's inbox helps
        # nobody. The bug is logged with its traceback and counted.
        log.exception("recording an open failed")
        tracker.metrics.dropped("error", 1)
    # Counted here rather than by `counted`: the pixel always answers 200, and it is the hot
    # path (a wrapper coroutine per hit is measurable at 10,000 hits/s on one core).
    tracker.metrics.requests.add(_OPEN_OK)
    return web.Response(body=GIF, headers=GIF_HEADERS)


async def click(request: web.Request) -> web.StreamResponse:
    """GET /c/TOKEN: 302 to the URL registered for the link, and queue a click."""
    tracker = request.app[TRACKER]
    token = tracker.verify(request.match_info["token"], Purpose.CLICK, "click")
    if token is None:
        return message_page(tracker, "not_found", 404)
    try:
        target = await tracker.clicks.target(token)
    except Unavailable as exc:
        log.warning("click lookup failed: %s", exc)
        return unavailable(tracker, "click")
    # Only http(s) targets: a javascript: or data: URL in the links table is never followed.
    if target is None or urlsplit(target[0]).scheme not in ("http", "https"):
        tracker.metrics.token_rejections.labels("click", "unknown_link").inc()
        return message_page(tracker, "not_found", 404)
    url, sent_at = target
    tracker.record(request, "click", token, sent_at)
    return web.Response(status=302, headers={"Location": url, "Cache-Control": "no-store"})
