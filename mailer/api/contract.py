"""The OpenAPI document (openapi.json beside this file) as the request validator.

Request bodies are checked against the document's own schemas (JSON Schema 2020-12, as
OpenAPI 3.1 uses), so the contract the tests hold true is the one requests are held to:
each violation becomes a problem+json error with the JSON pointer of the field.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from mailer.api.problems import Problem

DOCUMENT_URI = "urn:consent-mailer:openapi"


@cache
def document_text() -> str:
    """The document as served at /api/v1/openapi.json."""
    return resources.files("mailer.api").joinpath("openapi.json").read_text(encoding="utf-8")


@cache
def document() -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(document_text())
    return parsed


@cache
def _validator(schema_name: str) -> Draft202012Validator:
    registry: Registry[Any] = Registry().with_resource(
        DOCUMENT_URI, Resource.from_contents(document(), default_specification=DRAFT202012)
    )
    return Draft202012Validator(
        {"$ref": f"{DOCUMENT_URI}#/components/schemas/{schema_name}"}, registry=registry
    )


def check(schema_name: str, body: Any) -> None:
    """Raise a 422 naming every field of `body` that breaks the schema (up to 50)."""
    errors = []
    for error in _validator(schema_name).iter_errors(body):
        path = list(error.absolute_path)
        pointer = "".join(f"/{str(p).replace('~', '~0').replace('/', '~1')}" for p in path)
        item: dict[str, Any] = {"pointer": pointer, "detail": error.message[:300]}
        if len(path) >= 2 and isinstance(path[1], int):
            item["index"] = path[1]  # the item of a batch
        errors.append(item)
        if len(errors) == 50:
            break
    if errors:
        errors.sort(key=lambda e: e["pointer"])
        raise Problem(422, f"the request body breaks the {schema_name} schema", errors=errors)
