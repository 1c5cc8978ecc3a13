"""How a reputation-guard pause reads, wherever it is shown (`campaign status`, the report).

The guard itself is mailer/inbound/guard.py; this is the one wording of its reason, kept in
the core so the report (which imports only core and db) says the same as the command.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def describe(reason: Mapping[str, Any]) -> str:
    """One line for `campaign status` and the report."""
    label = {"hard_bounce_rate": "hard-bounce rate", "complaint_rate": "complaint rate"}.get(
        str(reason.get("reason")), str(reason.get("reason"))
    )
    return (
        f"paused by the reputation guard: {label} {float(reason.get('rate', 0)):.2%} "
        f"({reason.get('count')} of {reason.get('sent')} sent) is over "
        f"{float(reason.get('threshold', 0)):.2%}; resume with `mailer campaign resume` "
        "once the list is cleaned"
    )
