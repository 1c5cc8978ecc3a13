"""Errors as RFC 9457 problem details (application/problem+json), with JSON pointers
(RFC 6901) naming each offending field of the request body."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request body too large",
    422: "Unprocessable request",
    429: "Too many requests",
    500: "Internal error",
    503: "Unavailable",
}


class Problem(Exception):
    """An answer other than success; raised anywhere in a handler."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        errors: Sequence[Mapping[str, Any]] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail
        self.errors = [dict(e) for e in errors]
        self.headers = dict(headers or {})

    def response(self, instance: str) -> web.Response:
        body: dict[str, Any] = {
            # No documentation URL per problem type yet: "about:blank" means the status
            # code's meaning (RFC 9457 s.4.2.1).
            "type": "about:blank",
            "title": TITLES.get(self.status, "Error"),
            "status": self.status,
            "detail": self.detail,
            "instance": instance,
        }
        if self.errors:
            body["errors"] = self.errors
        return web.Response(
            status=self.status,
            text=json.dumps(body, ensure_ascii=False),
            content_type="application/problem+json",
            headers=self.headers,
        )
