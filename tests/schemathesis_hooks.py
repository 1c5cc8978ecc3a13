"""Schemathesis hooks for the fuzz run (test_api_contract.py, via SCHEMATHESIS_HOOKS): the
campaign file body (application/toml) goes on the wire as the text generated for it."""

from __future__ import annotations

import json
from typing import Any

import schemathesis


@schemathesis.serializer("application/toml")
def toml_text(ctx: Any, value: Any) -> bytes:
    """The document's schema is a string: sent as UTF-8 (anything else, as JSON text)."""
    if isinstance(value, bytes):
        return value
    return (value if isinstance(value, str) else json.dumps(value)).encode("utf-8")
