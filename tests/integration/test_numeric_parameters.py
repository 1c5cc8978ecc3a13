"""Numeric query parameters read by one parser (mailer.core.counts): a page cursor that is not
ASCII digits or is past a Postgres bigint is no cursor (the first page), never a 500."""

from __future__ import annotations

import pytest

from mailer.core.settings import Settings
from tests.api_client import api_client, make_key
from tests.console_pages import VIEWER, as_, client, settings_
from tests.console_setup import Client

pytestmark = pytest.mark.timeout(120)
__all__ = ["client", "settings_"]

HUGE = "9" * 20  # past 2**63 - 1: asyncpg cannot send it as a bigint
ODD = ("%C2%B2", "%D9%A3", "+1", "%201", HUGE, "9" * 5000)


@pytest.mark.parametrize(
    "path", ["/suppressions?before=", "/transactional?before=", "/imports?before=",
             "/imports?before_record="],
)  # fmt: skip
async def test_a_console_page_cursor_that_is_not_a_bigint_shows_the_first_page(
    client: Client, path: str
) -> None:
    await as_(client, VIEWER)
    first = await client.get(path.split("?", 1)[0])
    assert first.status == 200
    for value in ODD:
        answer = await client.get(path + value)
        assert answer.status == 200, (value, await answer.text())


async def test_an_api_cursor_past_a_bigint_or_a_limit_past_1000_is_refused_with_a_400(
    settings: Settings,
) -> None:
    key = await make_key(settings, "contacts:read")
    async with api_client(settings) as api:
        for path in (f"/api/v1/contacts?after={HUGE}", "/api/v1/contacts?limit=1001"):
            answer = await api.call("GET", path, key, validate=False)
            assert answer.status == 400, (path, answer.body)
