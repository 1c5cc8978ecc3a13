"""ESP webhooks on aiohttp: POST /webhooks/ses (Amazon SES through SNS).

A notification is verified (mailer/inbound/sns.py), then stored like a received message
(source 'ses', raw = the body, idempotent by its hash: SNS retries the same body) and
answered 200 only once committed; the processor maps it (mailer/inbound/esp/ses.py) onto the
same effects as a DSN or an ARF report. A subscription confirmation for an accepted topic is
confirmed by fetching its SubscribeURL, allowed only on an SNS host.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web

from mailer.core.settings import Settings
from mailer.db.pool import unavailable
from mailer.inbound.metrics import InboundMetrics
from mailer.inbound.sns import SnsError, Verifier, allowed_url, client_ssl
from mailer.inbound.store import InboundStore

log = logging.getLogger(__name__)

_MAX_BODY = 256 * 1024  # an SES notification with full headers is a few KB
_TIMEOUT = aiohttp.ClientTimeout(total=10)

HTTP = web.AppKey("http", aiohttp.ClientSession)
VERIFIER = web.AppKey("verifier", Verifier)


def create_app(
    settings: Settings,
    store: InboundStore,
    metrics: InboundMetrics,
    *,
    on_stored: Callable[[int], None] = lambda _id: None,
) -> web.Application:
    """The webhook application; its HTTP client lives as long as it does."""
    app = web.Application(client_max_size=_MAX_BODY)
    i = settings.inbound

    async def client(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(ssl=client_ssl(i.sns_ca_file))
        async with aiohttp.ClientSession(connector=connector, timeout=_TIMEOUT) as session:
            app[HTTP] = session

            async def fetch(url: str) -> bytes:
                async with session.get(url, allow_redirects=False) as response:
                    response.raise_for_status()
                    return await response.read()

            app[VERIFIER] = Verifier(fetch, host_pattern=i.sns_cert_host, topics=i.ses_topic_arns)
            yield

    async def ses(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            message = await request.app[VERIFIER].verify(body)
        except SnsError as exc:
            metrics.webhooks.labels("ses", "refused").inc()
            log.warning("SES webhook refused: %s", exc)
            return web.Response(status=403, text=f"refused: {exc.reason}\n")
        except aiohttp.ClientError as exc:
            log.warning("SES webhook: certificate unreachable: %s", exc)
            return web.Response(status=503, text="certificate unreachable\n")
        if message["Type"] == "SubscriptionConfirmation":
            url = str(message.get("SubscribeURL") or "")
            if not allowed_url(url, i.sns_cert_host):
                # Signed, yet confirming elsewhere than SNS: counted like any refusal.
                metrics.webhooks.labels("ses", "refused").inc()
                log.warning("SNS subscription refused: SubscribeURL %r is not on SNS", url)
                return web.Response(status=403, text="refused: bad SubscribeURL\n")
            async with request.app[HTTP].get(url, allow_redirects=False) as confirmed:
                confirmed.raise_for_status()
            log.info("SNS subscription to %s confirmed", message.get("TopicArn"))
            return web.Response(text="confirmed\n")
        if message["Type"] != "Notification":
            return web.Response(text="ignored\n")
        try:
            inbound_id, fresh = await store.store(
                body, source="ses", peer=request.remote, mail_from=None, rcpt_to=()
            )
        except Exception as exc:
            if not unavailable(exc):
                raise
            log.warning("SES notification not stored: %s", exc)
            return web.Response(status=503, text="try again\n")  # SNS retries
        metrics.webhooks.labels("ses", "stored" if fresh else "duplicate").inc()
        metrics.received.labels("ses", "stored" if fresh else "duplicate").inc()
        if fresh:
            on_stored(inbound_id)
        return web.Response(text=f"stored {inbound_id}\n")

    app.cleanup_ctx.append(client)
    app.router.add_post("/webhooks/ses", ses)
    return app
