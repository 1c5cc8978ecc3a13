"""The console's imports page: a contacts CSV uploaded in the browser runs the CLI's own
import (mailer.contacts.imports), its progress and summary shown, its rejects downloadable."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from mailer.console.app import create_app
from mailer.core.settings import Settings
from tests.cli_run import run_cli
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

HEADER = "email,name,locale,consent,consent_source,consent_date,topics\n"
GOOD = "marie@example.com,Marie Côté,fr,express,Salon,2024-09-19,service\n"
BAD = "not-an-address,Bob,en,express,Salon,2024-09-19,service\n"


@pytest.fixture(autouse=True)
async def service_topic(conn: asyncpg.Connection, settings_: Settings) -> None:
    await conn.execute("INSERT INTO topics (slug, name) VALUES ('service', 'Service')")


async def _upload(client: Client, csrf: str | None, body: str, **fields: str) -> int:
    response = await client.post(
        "/imports",
        data=upload_form(csrf, (HEADER + body).encode(), "clients.csv", **fields),
        allow_redirects=False,
    )
    assert response.status == 303, await response.text()
    return upload_id_of(response.headers["Location"])


async def test_an_uploaded_csv_is_imported_as_the_cli_imports_it_and_its_rejects_downloaded(
    client: Client, conn: asyncpg.Connection
) -> None:
    csrf = await as_(client, SENDER)
    upload = await _upload(client, csrf, GOOD + BAD, skip_invalid="on")
    status = await wait_for_upload(client, upload)
    assert 'id="upload-state" class="ok"' in status
    assert 'id="sum-contacts_created">1<' in status
    assert 'id="sum-rejected">1<' in status
    assert await conn.fetchval("SELECT name FROM contacts WHERE email = 'marie@example.com'")
    # The import record is the CLI's (imports), the upload row names the operator.
    record = await conn.fetchrow("SELECT file_name, rows_valid, rows_rejected FROM imports")
    assert record is not None
    assert tuple(record) == ("clients.csv", 1, 1)
    rejects = await client.get(f"/imports/{upload}/rejects.csv")
    assert rejects.status == 200
    assert rejects.headers["Content-Type"].startswith("text/csv")
    text = await rejects.text()
    assert text.splitlines()[0] == "line,reason,fields"
    assert text.splitlines()[1].startswith("3,")
    assert "not-an-address" in text
    logged = await conn.fetch("SELECT actor_id, action, object_id FROM operator_log ORDER BY id")
    actions = [(r["actor_id"], r["action"]) for r in logged]
    assert (SENDER, "contacts.import") in actions
    assert (SENDER, "import.rejects_download") in actions
    page = await (await client.get("/imports")).text()
    assert f'href="/imports/{upload}"' in page
    assert queries(client, "imports") <= 10
    await client.get(f"/imports/{upload}")
    assert queries(client, "import_page") <= 10


async def test_an_upload_with_an_invalid_row_imports_nothing_unless_told_to_skip(
    client: Client, conn: asyncpg.Connection
) -> None:
    csrf = await as_(client, SENDER)
    upload = await _upload(client, csrf, GOOD + BAD)
    status = await wait_for_upload(client, upload)
    assert "nothing was imported" in status
    assert 'id="rejects"' in status
    assert await conn.fetchval("SELECT count(*) FROM contacts") == 0
    assert await conn.fetchval("SELECT state FROM console_uploads") == "refused"
    # Rejects hold addresses: a month after, the next upload drops them (storage limitation).
    await conn.execute("UPDATE console_uploads SET finished_at = now() - interval '31 days'")
    await wait_for_upload(client, await _upload(client, csrf, GOOD))
    assert (
        await conn.fetchval("SELECT rejects_gz FROM console_uploads WHERE id = $1", upload) is None
    )
    assert (await client.get(f"/imports/{upload}/rejects.csv")).status == 404


async def test_a_bad_default_is_reported_by_name_and_nothing_is_imported(
    client: Client, conn: asyncpg.Connection
) -> None:
    csrf = await as_(client, SENDER)
    upload = await _upload(client, csrf, GOOD, encoding="ebcdic")
    status = await wait_for_upload(client, upload)
    assert "encoding" in status
    assert "failed" in status
    assert await conn.fetchval("SELECT count(*) FROM contacts") == 0


async def test_a_viewer_cannot_upload_and_an_upload_without_its_csrf_token_is_refused(
    client: Client, conn: asyncpg.Connection
) -> None:
    csrf = await as_(client, VIEWER)
    response = await client.post(
        "/imports", data=upload_form(csrf, (HEADER + GOOD).encode(), "x.csv")
    )
    assert response.status == 403
    page = await (await client.get("/imports")).text()
    assert 'id="import-form"' not in page  # no form for a viewer
    await as_(client, SENDER)
    for token in (None, "forged"):
        response = await client.post(
            "/imports", data=upload_form(token, (HEADER + GOOD).encode(), "x.csv")
        )
        assert response.status == 403
    assert await conn.fetchval("SELECT count(*) FROM console_uploads") == 0
    assert await conn.fetchval("SELECT count(*) FROM contacts") == 0


async def test_past_imports_are_listed_newest_first_by_keyset_pages(
    client: Client, conn: asyncpg.Connection
) -> None:
    await conn.execute(
        "INSERT INTO console_uploads (kind, file_name, operator_email, state)"
        " SELECT 'contacts', 'f' || i || '.csv', 'x@example.com', 'done'"
        " FROM generate_series(1, 120) i"
    )
    await as_(client, VIEWER)
    first = await (await client.get("/imports")).text()
    assert "f120.csv" in first
    assert "f71.csv" in first
    assert "f70.csv" not in first
    assert 'href="/imports?before=71"' in first
    second = await (await client.get("/imports?before=71")).text()
    assert "f70.csv" in second
    assert "f71.csv" not in second
    assert queries(client, "imports") <= 10


async def test_imports_made_with_the_cli_are_listed_beside_the_console_uploads(
    client: Client, monkeypatch: pytest.MonkeyPatch, db_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "dms-export.csv"
    path.write_text(HEADER + GOOD, encoding="utf-8")
    code, out = await run_cli(monkeypatch, db_url, "contacts", "import", str(path))
    assert code == 0, out
    await as_(client, VIEWER)
    page = await (await client.get("/imports")).text()
    records = page[page.index('id="records"') :]
    assert "dms-export.csv" in records
    assert queries(client, "imports") <= 10


async def test_an_import_running_when_the_console_stops_writes_nothing_and_says_so(
    settings_: Settings, conn: asyncpg.Connection
) -> None:
    rows = "".join(
        f"p{i}@example.com,P {i},en,express,Salon,2024-09-19,service\n" for i in range(200_000)
    )
    async with TestClient(TestServer(create_app(settings_))) as early:
        csrf = await as_(early, SENDER)
        upload = await _upload(early, csrf, rows)
        text = await (await early.get(f"/imports/{upload}/status")).text()
        assert 'hx-trigger="every 1s"' in text  # still running when the console stops
    state, error = await conn.fetchrow(
        "SELECT state, error FROM console_uploads WHERE id = $1", upload
    ) or ("", "")
    assert state == "failed"
    assert "nothing was imported" in error
    assert await conn.fetchval("SELECT count(*) FROM contacts") == 0
    assert await conn.fetchval("SELECT count(*) FROM imports") == 0


async def test_an_upload_that_is_not_a_multipart_form_is_refused_without_an_error(
    client: Client,
) -> None:
    csrf = await as_(client, SENDER)
    response = await client.post(
        "/imports", data=b"email\nx@example.com\n", headers={"X-CSRF-Token": csrf,
                                                             "Content-Type": "text/csv"}
    )  # fmt: skip
    assert response.status == 400
