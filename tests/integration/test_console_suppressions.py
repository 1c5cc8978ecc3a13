"""The console's suppressions page: the list by keyset pages, checking an address, one
address suppressed, a registry uploaded (the reader and statements of `mailer suppress
import`)."""

from __future__ import annotations

import asyncpg
import pytest

from mailer.core.addresses import address_hash
from tests.console_pages import (
    SENDER,
    VIEWER,
    as_,
    client,
    queries,
    settings_,
    upload_form,
    upload_id_of,
    wait_for_upload,
)
from tests.console_setup import Client

pytestmark = pytest.mark.timeout(120)
__all__ = ["client", "settings_"]


async def test_a_sender_suppresses_one_address_and_the_operator_log_says_who(
    client: Client, conn: asyncpg.Connection
) -> None:
    csrf = await as_(client, SENDER)
    response = await client.post(
        "/suppressions",
        data={"csrf": csrf, "email": "Pat@Example.com", "reason": "manual", "scope": "global",
              "source": "phone call"},
    )  # fmt: skip
    assert response.status == 200, await response.text()
    assert 'id="notice"' in await response.text()
    row = await conn.fetchrow(
        "SELECT scope, reason, source FROM suppressions WHERE email_hash = $1",
        address_hash("pat@example.com"),
    )
    assert row is not None
    assert tuple(row) == ("global", "manual", "phone call")
    logged = await conn.fetchrow("SELECT actor_id, action FROM operator_log ORDER BY id DESC")
    assert logged is not None
    assert tuple(logged) == (SENDER, "suppressions.add")
    checked = await (await client.get("/suppressions?email=pat@example.com")).text()
    assert "pat@example.com is suppressed" in checked
    assert queries(client, "suppressions") <= 10
    clear = await (await client.get("/suppressions?email=other@example.com")).text()
    assert "other@example.com is not suppressed" in clear


async def test_a_channel_scope_without_its_channel_is_refused_by_the_clis_rule(
    client: Client, conn: asyncpg.Connection
) -> None:
    csrf = await as_(client, SENDER)
    response = await client.post(
        "/suppressions",
        data={"csrf": csrf, "email": "pat@example.com", "reason": "manual", "scope": "channel",
              "source": "x"},
    )  # fmt: skip
    assert response.status == 400
    assert "--channel is required with --scope channel" in await response.text()
    assert await conn.fetchval("SELECT count(*) FROM suppressions") == 0


async def test_a_viewer_cannot_suppress_and_a_post_without_csrf_is_refused(
    client: Client, conn: asyncpg.Connection
) -> None:
    csrf = await as_(client, VIEWER)
    data = {"email": "pat@example.com", "reason": "manual", "scope": "global", "source": "x"}
    assert (await client.post("/suppressions", data={**data, "csrf": csrf})).status == 403
    assert 'id="suppress-form"' not in await (await client.get("/suppressions")).text()
    await as_(client, SENDER)
    assert (await client.post("/suppressions", data=data)).status == 403
    upload = upload_form(None, b"email\npat@example.com\n", "dnc.csv")
    assert (await client.post("/suppressions/upload", data=upload)).status == 403
    assert await conn.fetchval("SELECT count(*) FROM suppressions") == 0


async def test_an_uploaded_registry_is_suppressed_and_its_invalid_lines_downloadable(
    client: Client, conn: asyncpg.Connection
) -> None:
    csrf = await as_(client, SENDER)
    body = b"email\na@example.com\nnot an address\nb@example.com\n"
    response = await client.post(
        "/suppressions/upload",
        data=upload_form(csrf, body, "dnc.csv", reason="registry", scope="global",
                         source="national registry"),
        allow_redirects=False,
    )  # fmt: skip
    assert response.status == 303, await response.text()
    upload = upload_id_of(response.headers["Location"])
    status = await wait_for_upload(client, upload)
    assert 'id="sum-added">2<' in status
    assert 'id="sum-rejected">1<' in status
    assert await conn.fetchval("SELECT count(*) FROM suppressions WHERE reason = 'registry'") == 2
    rejects = await (await client.get(f"/imports/{upload}/rejects.csv")).text()
    assert "not an address" in rejects
    logged = await conn.fetch(
        "SELECT actor_id, action FROM operator_log"
        " WHERE actor_id = $1 AND action <> 'console.login' ORDER BY id",
        SENDER,
    )
    assert [tuple(r) for r in logged] == [
        (SENDER, "suppressions.import"),
        (SENDER, "import.rejects_download"),
    ]


async def test_the_list_pages_by_keyset_and_filters_by_reason(
    client: Client, conn: asyncpg.Connection
) -> None:
    await conn.execute(
        "INSERT INTO suppressions (email_hash, scope, reason, source)"
        " SELECT sha256(i::text::bytea), 'global', CASE WHEN i % 2 = 0 THEN 'manual'"
        " ELSE 'registry' END, 'src' || i FROM generate_series(1, 130) i"
    )
    await as_(client, VIEWER)
    first = await (await client.get("/suppressions")).text()
    assert ">src130<" in first
    assert ">src80<" not in first
    assert 'id="next"' in first
    second = await (await client.get("/suppressions?before=81")).text()
    assert ">src80<" in second
    assert ">src81<" not in second
    manual = await (await client.get("/suppressions?reason=manual")).text()
    assert ">src129<" not in manual
    assert ">src130<" in manual
    assert queries(client, "suppressions") <= 10
