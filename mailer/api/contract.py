"""The OpenAPI document (openapi.json beside this file) as the request validator.

Request bodies are checked against the document's own schemas (JSON Schema 2020-12, as
OpenAPI 3.1 uses), so the contract the tests hold true is the one requests are held to:
each violation becomes a problem+json error with the JSON pointer of the field.

Two validators of the same schema: fastjsonschema's compiled code first (measured ~8 ms
for a batch of 1,000 contacts, against ~200 ms for jsonschema, which was most of the
request's time), and jsonschema, the reference, only for a body the first refuses, to
list every error with its path.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import fastjsonschema
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


def _inline(schema: Any) -> Any:
    """The schema with every local $ref replaced by its target (ours have no cycles)."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            return _inline(document()["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]])
        return {k: _inline(v) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_inline(v) for v in schema]
    return schema


@cache
def _fast(schema_name: str) -> Any:
    # No defaults filled in (the body is not changed) and no format checks: an address is
    # judged by mailer.core.addresses, as in a CSV import.
    schema = _inline(document()["components"]["schemas"][schema_name])
    return fastjsonschema.compile(schema, use_default=False, use_formats=False)


def warm() -> None:
    """Compile every request body's validator now (~1 s), not on its first request."""
    for name in document()["components"]["schemas"]:
        if name.endswith("In") or name in ("ContactBatch", "ConsentChange"):
            _fast(name)
            _validator(name)


def check(schema_name: str, body: Any) -> None:
    """Raise a 422 naming every field of `body` that breaks the schema (up to 50)."""
    try:
        _fast(schema_name)(body)
    except fastjsonschema.JsonSchemaException:
        pass  # the reference validator lists what is wrong, below
    else:
        return
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
