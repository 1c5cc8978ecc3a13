"""The pools' JSON codec: every value a jsonb column held before orjson still round-trips."""

from __future__ import annotations

from typing import Any

import pytest

from mailer.db.pool import create_pool


@pytest.mark.parametrize(
    "value",
    [
        {"vehicle": "Toyota RAV4", "mileage": 40123, "ratio": 0.5, "ok": True, "none": None},
        {"adresse": "2450, boulevard Laurier, Québec", "emoji": "🚗", "nul": "a\u2028b"},
        {"big": 10**30, "nested": [{"n": -(2**70)}]},  # beyond 64 bits: kept exactly
        [1, "two", [3.25]],
    ],
)
async def test_a_jsonb_parameter_reads_back_equal_to_what_was_written(
    db_url: str, value: Any
) -> None:
    pool = await create_pool(db_url, min_size=1, max_size=1)
    async with pool:
        assert await pool.fetchval("SELECT $1::jsonb", value) == value


async def test_integer_keys_are_written_as_strings_as_json_dumps_did(db_url: str) -> None:
    pool = await create_pool(db_url, min_size=1, max_size=1)
    async with pool:
        assert await pool.fetchval("SELECT $1::jsonb", {1: "a"}) == {"1": "a"}
