"""ESP webhooks mapped onto the same classification as a DSN or an ARF report.

One module per provider, each a `classify(payload, classifier, now) -> Classification` over
the body the webhook stored (verified before storing: mailer/inbound/sns.py for SES). A new
provider (Postmark, SendGrid) is one module and one line here.
"""

from __future__ import annotations

from collections.abc import Callable

from mailer.inbound.classify import Classification, Classifier
from mailer.inbound.esp import ses

Mapper = Callable[[bytes, Classifier, int], Classification]

PROVIDERS: dict[str, Mapper] = {"ses": ses.classify}


def classify_esp(source: str, raw: bytes, classifier: Classifier, now: int) -> Classification:
    """The classification of a stored webhook body from provider `source`."""
    return PROVIDERS[source](raw, classifier, now)
