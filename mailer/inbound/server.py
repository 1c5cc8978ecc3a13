"""`mailer inbound serve`'s SMTP server (aiosmtpd): the return path's mail exchanger.

It accepts only what is ours to read: a RCPT whose local part carries a valid signed
token (`bounces+TOKEN@`, `unsubscribe+TOKEN@`, any domain: the signature is the proof) or a
configured mailbox (postmaster, abuse, the FBL address). Anything else is refused at RCPT
with 550, so the server never relays and never accepts mail it would have to bounce
(backscatter). A message is stored (raw bytes, peer, envelope) and committed before the 250
(RFC 5321 s.6.1: once we answer 250 the message is our responsibility); processing happens
after, from the table, so a crash between the two loses nothing. Storage failing answers
451: the sending MTA keeps the message and retries.

Size (SIZE is advertised, so a client declaring more is refused at MAIL; one that does not
is refused at the end of DATA with 552, its bytes discarded as they arrive), idle timeout,
recipients per message and open connections are bounded. STARTTLS when a certificate is
configured; no AUTH (nothing here needs it) and no PROXY protocol.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from mailer.core.settings import InboundSettings
from mailer.db.pool import unavailable
from mailer.inbound.classify import Classifier
from mailer.inbound.metrics import InboundMetrics
from mailer.inbound.store import InboundStore

log = logging.getLogger(__name__)


class InboundHandler:
    """aiosmtpd hooks: RCPT decides who may be written to, DATA stores before answering."""

    def __init__(
        self,
        store: InboundStore,
        classifier: Classifier,
        settings: InboundSettings,
        metrics: InboundMetrics,
        *,
        on_stored: Callable[[int], None] = lambda _id: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.classifier = classifier
        self.metrics = metrics
        self.on_stored = on_stored
        self.clock = clock
        self.max_recipients = settings.max_recipients
        whole = {m.lower() for m in settings.mailboxes if "@" in m}
        self._addresses = frozenset(whole)
        self._local_parts = frozenset(m.lower() for m in settings.mailboxes if "@" not in m)

    def accepts(self, address: str) -> tuple[bool, str]:
        """(accepted, reason if not) for one RCPT address."""
        lowered = address.strip().lower()
        local = lowered.rpartition("@")[0]
        if lowered in self._addresses or local in self._local_parts:
            return True, ""
        _, delivery, forged = self.classifier.token_of(address, int(self.clock()))
        if delivery is not None:
            return True, ""
        return False, "bad_token" if forged else "unknown_recipient"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if len(envelope.rcpt_tos) >= self.max_recipients:
            self.metrics.rejected.labels("too_many_recipients").inc()
            return "452 4.5.3 Too many recipients"
        ok, reason = self.accepts(address)
        if not ok:
            self.metrics.rejected.labels(reason).inc()
            if reason == "bad_token":
                self.metrics.forged_tokens.labels("rcpt").inc()
            # Refused here, never accepted and bounced later: no backscatter.
            return "550 5.1.1 No such recipient here"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content
        if raw is None:  # aiosmtpd always sets it; a guard for the type checker
            return "554 5.6.0 No message"
        peer = session.peer
        try:
            inbound_id, fresh = await self.store.store(
                bytes(raw),
                source="smtp",
                peer=_peer_text(peer),
                mail_from=envelope.mail_from,
                rcpt_to=list(envelope.rcpt_tos),
            )
        except Exception as exc:
            if not unavailable(exc):
                raise
            self.metrics.rejected.labels("store_failed").inc()
            log.warning("inbound message from %s not stored: %s", _peer_text(peer), exc)
            return "451 4.3.0 Temporary failure storing the message, try again later"
        self.metrics.received.labels("smtp", "stored" if fresh else "duplicate").inc()
        if fresh:
            self.on_stored(inbound_id)
        return f"250 2.0.0 Stored as {inbound_id}"


class _Refuser(asyncio.Protocol):
    """Over the connection limit: say so (RFC 5321 s.3.8) and hang up."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(b"421 4.7.0 Too many connections, try again later\r\n")
        transport.close()


class _Counted(SMTP):
    """An aiosmtpd session that leaves the connection count when it ends."""

    def __init__(self, *args: Any, on_close: Callable[[_Counted], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_close = on_close

    def connection_lost(self, error: Exception | None) -> None:
        self.on_close(self)
        super().connection_lost(error)


class InboundServer:
    """The listening socket, its SMTP sessions and their limits."""

    def __init__(
        self,
        handler: InboundHandler,
        settings: InboundSettings,
        *,
        hostname: str,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.handler = handler
        self.settings = settings
        self.hostname = hostname
        self.tls_context = tls_context
        self.open: set[_Counted] = set()
        self.server: asyncio.Server | None = None

    def _factory(self) -> asyncio.Protocol:
        metrics = self.handler.metrics
        if len(self.open) >= self.settings.max_connections:
            metrics.rejected.labels("too_many_connections").inc()
            return _Refuser()
        protocol = _Counted(
            self.handler,
            data_size_limit=self.settings.max_message_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=self.hostname,
            ident="mailer inbound",
            tls_context=self.tls_context,
            require_starttls=False,
            timeout=self.settings.timeout_s,
            on_close=self._closed,
        )
        self.open.add(protocol)
        metrics.connections.set(len(self.open))
        return protocol

    def _closed(self, protocol: _Counted) -> None:
        self.open.discard(protocol)
        self.handler.metrics.connections.set(len(self.open))

    async def start(self, host: str, port: int) -> None:
        """Listen on host:port (port 0: any free port, see `port`)."""
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(self._factory, host, port)

    @property
    def port(self) -> int:
        """The port listened on."""
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop listening and end open sessions (an unanswered DATA is retried by its sender)."""
        if self.server is not None:
            self.server.close()
            for protocol in list(self.open):
                if protocol.transport is not None:
                    protocol.transport.close()
            await self.server.wait_closed()


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext | None:
    """A server context for STARTTLS from PEM files, or None when none is configured."""
    if not cert_file:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context


def _peer_text(peer: Any) -> str | None:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return None if peer is None else str(peer)
