"""The OpenAPI document holds true: valid 3.1, served as is, every route documented and
every documented route served, and a bounded schemathesis fuzz run of the whole API
against it (no 500, no status or body outside the contract)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
from pathlib import Path

import asyncpg
from aiohttp import web
from openapi_spec_validator import validate

from mailer.api.app import create_app
from mailer.api.contract import document
from mailer.api.keys import SCOPES
from mailer.core.settings import Settings
from tests.api_client import api_client, make_key

# Examples per operation: bounded so the run takes well under a minute on CI.
ROOT = Path(__file__).resolve().parents[2]
FUZZ_EXAMPLES = int(os.environ.get("MAILER_FUZZ_EXAMPLES", "15"))


def test_the_document_is_valid_openapi_3_1() -> None:
    validate(document())
    assert document()["openapi"].startswith("3.1")


async def test_the_document_is_served_as_is_without_a_key(settings: Settings) -> None:
    async with api_client(settings) as api:
        answer = await api.call("GET", "/api/v1/openapi.json", None)
    assert answer.status == 200
    assert answer.body == document()


def test_every_route_is_documented_and_every_documented_route_is_served() -> None:
    app = create_app(Settings(), dispatch_webhooks=False)
    served = {
        (r.method.lower(), r.resource.canonical)
        for r in app.router.routes()
        if r.resource is not None
        and r.resource.canonical.startswith("/api/v1")
        and r.method != "HEAD"
    }
    documented = {(method, path) for path, item in document()["paths"].items() for method in item}
    assert served == documented
    for path, item in document()["paths"].items():
        for method, operation in item.items():
            if path != "/api/v1/openapi.json":
                assert operation["x-scope"] in SCOPES, (method, path)
                assert {"401", "403", "429"} <= set(operation["responses"]), (method, path)


async def test_a_bounded_fuzz_run_finds_no_server_error_and_nothing_outside_the_contract(
    settings: Settings, tmp_path: Path, conn: asyncpg.Connection
) -> None:
    # Fuzzing sends thousands of requests: no rate limit here (it has its own test).
    free = dataclasses.replace(
        settings, api=dataclasses.replace(settings.api, rate_per_key=1e6, rate_burst=10**6)
    )
    key = await make_key(settings, *SCOPES)
    await conn.execute("INSERT INTO topics (slug, name) VALUES ('service', 'Service')")
    runner = web.AppRunner(create_app(free, dispatch_webhooks=False))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "schemathesis.cli", "run",
            f"http://{host}:{port}/api/v1/openapi.json",
            "--max-examples", str(FUZZ_EXAMPLES),
            "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
            "response_schema_conformance,response_headers_conformance",
            "--header", f"Authorization: Bearer {key}",
            "--seed", "19",
            "--generation-database", "none",
            "--report-dir", str(tmp_path),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env={
                **os.environ, "NO_COLOR": "1",
                # A serializer for the campaign file body (application/toml).
                "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
                "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            },
            cwd=tmp_path,  # its crash cache (.schemathesis/) stays out of the checkout
        )  # fmt: skip
        out, _ = await proc.communicate()
    finally:
        await runner.cleanup()
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-6000:]
    assert "No issues found" in text or "passed" in text.lower(), text[-2000:]
    print(text[-3000:])
