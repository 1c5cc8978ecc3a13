"""The operator API's contacts, consents and opt-outs, from the outside (HTTP), every
exchange validated against the OpenAPI document."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from mailer.core.settings import Settings
from tests.api_client import api_client, make_key
from tests.cli_run import run_cli

WRITE = ("contacts:write", "contacts:read", "consents:write")


def item(email: str, **consent: Any) -> dict[str, Any]:
    return {
        "email": email,
        "name": "Ana Silva",
        "locale": "fr",
        "attributes": {"model": "Golf", "mileage": 42000},
        "consent": {
            "kind": "implied_purchase",
            "source": "DMS nightly",
            "obtained_at": "2026-03-02",
            "evidence": {"invoice": "F-1234"},
            **consent,
        },
    }


async def counts(conn: asyncpg.Connection) -> dict[str, int]:
    tables = ("contacts", "consents", "operator_log", "imports", "api_idempotency")
    return {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in tables}  # noqa: S608


async def test_a_batch_upserts_contacts_with_their_consents_and_logs_the_write(
    settings: Settings, conn: asyncpg.Connection
) -> None:
    key = await make_key(settings, *WRITE)
    async with api_client(settings) as api:
        batch = [item(f"c{i}@example.com") for i in range(3)]
        answer = await api.call("POST", "/api/v1/contacts", key, {"contacts": batch})
        assert answer.status == 200, answer.body
        assert answer.body["created"] == 3
        assert answer.body["consents_added"] == 3
        again = await api.call("POST", "/api/v1/contacts", key, {"contacts": batch})
        assert again.body["created"] == 0
        assert again.body["consents_added"] == 0  # the same grant is not appended twice

        story = await api.call("GET", "/api/v1/contacts/C1@Example.com", key)
        assert story.status == 200
        assert story.body["contact"]["attributes"] == {"model": "Golf", "mileage": 42000}
        assert [line["kind"] for line in story.body["ledger"]] == ["implied_purchase"]
        page = await api.call("GET", "/api/v1/contacts?limit=2", key)
        assert [c["email"] for c in page.body["items"]] == ["c0@example.com", "c1@example.com"]
        rest = await api.call("GET", f"/api/v1/contacts?limit=2&after={page.body['next']}", key)
        assert [c["email"] for c in rest.body["items"]] == ["c2@example.com"]
        assert rest.body["next"] is None
    log = await conn.fetch("SELECT * FROM operator_log ORDER BY id")
    assert [r["action"] for r in log] == ["contacts.upsert", "contacts.upsert"]
    assert log[0]["actor_kind"] == "api_key"
    assert key.startswith(f"mk_{log[0]['actor_id']}_")
    assert json.loads(log[0]["detail"])["evidence"]["1"] == {"invoice": "F-1234"}


async def test_a_batch_with_bad_items_writes_nothing_and_names_each_by_index_and_field(
    settings: Settings, conn: asyncpg.Connection
) -> None:
    key = await make_key(settings, *WRITE)
    before = await counts(conn)
    async with api_client(settings) as api:
        batch = [
            item("good@example.com"),
            item("not-an-address"),
            item("future@example.com", obtained_at="2999-01-01"),
            item("typed@example.com", kind="implied_forever"),
        ]
        answer = await api.call("POST", "/api/v1/contacts", key, {"contacts": batch})
    assert answer.status == 422
    assert answer.headers["Content-Type"].startswith("application/problem+json")
    errors = {(e["index"], e["pointer"]) for e in answer.body["errors"]}
    assert (3, "/contacts/3/consent/kind") in errors  # the schema's enum
    answer_semantic = answer
    assert await counts(conn) == before
    # Once the schema holds, the import's own rules name the items the same way.
    async with api_client(settings) as api:
        batch[3] = item("typed@example.com")
        answer = await api.call("POST", "/api/v1/contacts", key, {"contacts": batch})
    assert answer.status == 422
    assert sorted((e["index"], e["pointer"]) for e in answer.body["errors"]) == [
        (1, "/contacts/1/email"),
        (2, "/contacts/2/consent/obtained_at"),
    ]
    assert "in the future" in answer.body["errors"][1]["detail"]
    assert answer_semantic.body["status"] == 422
    assert await counts(conn) == before


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("none", 401),
        ("garbage", 401),
        ("unknown", 401),
        ("revoked", 401),
        ("expired", 401),
        ("wrong scope", 403),
    ],
)
async def test_refused_keys_get_401_or_403_and_nothing_is_written(
    settings: Settings, conn: asyncpg.Connection, case: str, status: int
) -> None:
    good = await make_key(settings, *WRITE, name="good")
    keys = {
        "none": None,
        "garbage": "hello",
        "unknown": good[:12] + ("A" if good[12] != "A" else "B") + good[13:],
        "revoked": await make_key(settings, *WRITE, name="revoked"),
        "expired": await make_key(
            settings, *WRITE, name="expired", expires=datetime.now(UTC) - timedelta(seconds=1)
        ),
        "wrong scope": await make_key(settings, "campaigns:read", name="reader"),
    }
    await conn.execute("UPDATE api_keys SET revoked_at = now() WHERE name = 'revoked'")
    before = await counts(conn)
    async with api_client(settings) as api:
        body = {"contacts": [item("x@example.com")]}
        answer = await api.call("POST", "/api/v1/contacts", keys[case], body)
        opt = await api.call(
            "POST", "/api/v1/contacts/x@example.com/opt-out", keys[case], {"source": "t"}
        )
    assert (answer.status, opt.status) == (status, status)
    assert answer.body["status"] == status
    if status == 401:
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert await counts(conn) == before


async def test_a_key_over_its_rate_gets_429_with_retry_after(settings: Settings) -> None:
    import dataclasses

    slow = dataclasses.replace(
        settings, api=dataclasses.replace(settings.api, rate_per_key=0.5, rate_burst=3)
    )
    key = await make_key(settings, "contacts:read")
    async with api_client(slow) as api:
        statuses = [(await api.call("GET", "/api/v1/contacts", key)).status for _ in range(4)]
        refused = await api.call("GET", "/api/v1/contacts", key)
    assert statuses == [200, 200, 200, 429]
    assert refused.status == 429
    assert int(refused.headers["Retry-After"]) >= 1


async def test_concurrent_retries_with_one_idempotency_key_write_once_and_answer_alike(
    settings: Settings, conn: asyncpg.Connection
) -> None:
    key = await make_key(settings, *WRITE)
    body = {"contacts": [item(f"i{i}@example.com") for i in range(50)]}
    headers = {"Idempotency-Key": "dms-2026-03-02-batch-7"}
    async with api_client(settings) as api:
        answers = await asyncio.gather(
            *(api.call("POST", "/api/v1/contacts", key, body, headers=headers) for _ in range(6))
        )
        other = await api.call(
            "POST", "/api/v1/contacts", key, {"contacts": [item("z@example.com")]}, headers=headers
        )
    assert {a.status for a in answers} == {200}
    assert len({str(a.body) for a in answers}) == 1
    assert answers[0].body["created"] == 50
    assert sum(a.headers.get("Idempotent-Replayed") == "true" for a in answers) == 5
    assert other.status == 409
    assert await conn.fetchval("SELECT count(*) FROM imports") == 1
    assert await conn.fetchval("SELECT count(*) FROM operator_log") == 1
    assert await conn.fetchval("SELECT count(*) FROM contacts") == 50


async def test_an_opt_out_through_the_api_and_through_the_cli_write_the_same_ledger(
    settings: Settings, conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch, db_url: str
) -> None:
    key = await make_key(settings, *WRITE)
    async with api_client(settings) as api:
        batch = [item("api@example.com"), item("cli@example.com")]
        assert (await api.call("POST", "/api/v1/contacts", key, {"contacts": batch})).status == 200
        body = {"source": "SMS STOP", "evidence": {"keyword": "STOP"}}
        answer = await api.call("POST", "/api/v1/contacts/api@example.com/opt-out", key, body)
        assert answer.status == 200
        assert answer.body["changed"] is True
        code, out = await run_cli(
            monkeypatch, db_url, "contacts", "opt-out", "cli@example.com", "--source", "SMS STOP"
        )
        assert code == 0, out
        again = await api.call("POST", "/api/v1/contacts/api@example.com/opt-out", key, body)
        assert again.body["changed"] is False
        stories = [
            (await api.call("GET", f"/api/v1/contacts/{e}@example.com", key)).body
            for e in ("api", "cli")
        ]
        missing = await api.call("POST", "/api/v1/contacts/nobody@example.com/opt-out", key, body)
        assert missing.status == 404

    def shape(story: dict[str, Any]) -> list[tuple[Any, ...]]:
        return [(r["channel"], r["action"], r["kind"], r["source"]) for r in story["ledger"]]

    assert shape(stories[0]) == shape(stories[1])
    assert [r["action"] for r in stories[0]["ledger"]] == ["grant", "withdraw", "withdraw"]
    assert {s["reason"] for s in stories[0]["suppressions"]} == {"unsubscribe"}
    assert [
        r["action"] for r in await conn.fetch("SELECT action FROM operator_log ORDER BY id")
    ] == [
        "contacts.upsert",
        "contacts.opt_out",
        "contacts.opt_out",
        "contacts.opt_out",
    ]
    # The append-only log names the route's pattern, never the address in its path.
    routes = await conn.fetch(
        "SELECT detail->>'route' FROM operator_log WHERE action = $1 AND actor_kind = 'api_key'",
        "contacts.opt_out",
    )
    assert {r[0] for r in routes} == {"POST /api/v1/contacts/{email}/opt-out"}


async def test_a_csv_import_and_an_api_upsert_of_the_same_people_store_the_same(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, db_url: str, tmp_path: Path
) -> None:
    csv = tmp_path / "dms.csv"
    csv.write_text(
        "email,name,locale,consent,consent_source,consent_date,attr.model,attr.mileage\n"
        "csv@example.com,Ana Silva,fr,implied_purchase,DMS nightly,2026-03-02,Golf,42000\n",
        encoding="utf-8",
    )
    code, out = await run_cli(monkeypatch, db_url, "contacts", "import", str(csv))
    assert code == 0, out
    key = await make_key(settings, *WRITE)
    async with api_client(settings) as api:
        post = await api.call(
            "POST", "/api/v1/contacts", key, {"contacts": [item("api@example.com")]}
        )
        assert post.status == 200
        by_csv = (await api.call("GET", "/api/v1/contacts/csv@example.com", key)).body
        by_api = (await api.call("GET", "/api/v1/contacts/api@example.com", key)).body
    for story in (by_csv, by_api):
        for k in ("id", "email", "created_at", "updated_at"):
            story["contact"].pop(k)
        for line in story["ledger"]:
            for k in ("id", "evidence", "recorded_at"):
                line.pop(k)
    assert by_csv == by_api


async def test_a_quote_request_grants_implied_inquiry_consent_and_a_withdrawal_is_appended(
    settings: Settings, conn: asyncpg.Connection
) -> None:
    key = await make_key(settings, *WRITE)
    grant = {
        "email": "quote@example.com",
        "action": "grant",
        "kind": "implied_inquiry",
        "source": "website quote form",
        "obtained_at": "2026-03-02T10:15:00Z",
        "evidence": {"ip": "203.0.113.7", "page": "/quote"},
    }
    async with api_client(settings) as api:
        answer = await api.call("POST", "/api/v1/consents", key, grant)
        assert answer.status == 200, answer.body
        assert answer.body["changed"] is True
        no_kind = await api.call(
            "POST", "/api/v1/consents", key, {k: v for k, v in grant.items() if k != "kind"}
        )
        assert no_kind.status == 422
        assert no_kind.body["errors"][0]["pointer"] == "/kind"
        withdraw = {"email": "quote@example.com", "action": "withdraw", "channel": "email",
                    "source": "phone call"}  # fmt: skip
        assert (await api.call("POST", "/api/v1/consents", key, withdraw)).status == 200
        story = (await api.call("GET", "/api/v1/contacts/quote@example.com", key)).body
    assert [(r["action"], r["kind"]) for r in story["ledger"]] == [
        ("grant", "implied_inquiry"),
        ("withdraw", None),
    ]


async def test_a_superscript_digit_in_a_numeric_parameter_is_refused_not_a_500(
    settings: Settings,
) -> None:
    # "²".isdigit() is True but int("²") raises: every numeric parameter checks ASCII digits.
    key = await make_key(settings, *WRITE)
    async with api_client(settings) as api:
        for path in ("/api/v1/contacts?limit=%C2%B2", "/api/v1/contacts?after=%C2%B2"):
            answer = await api.call("GET", path, key, validate=False)
            assert answer.status == 400, (path, answer.body)
