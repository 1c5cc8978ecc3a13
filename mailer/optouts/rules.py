"""What an opt-out covers when the person did not choose: every digital channel.

DESIGN: an opt-out from one digital channel applies to all digital channels unless the
person chose otherwise. RFC 8058 one-click and the RFC 2369 mailto carry no choice, so both
withdraw these; the tracker's unsubscribe page offers narrower scopes.
"""

from __future__ import annotations

from mailer.core.consent import DIGITAL_CHANNELS, Channel

# Fixed order (the ledger rows of one opt-out are appended in it).
DIGITAL: tuple[Channel, ...] = tuple(sorted(DIGITAL_CHANNELS, key=list(Channel).index))
