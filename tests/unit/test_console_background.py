"""The console's background reads (console/background.py): what happens to a refresh whose
key is dropped to make room for newer ones."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from mailer.console.background import Background


async def test_a_refresh_evicted_by_newer_keys_is_cancelled_and_awaited_by_close() -> None:
    """An evicted refresh is cancelled, and close() waits for it to finish unwinding (its
    connection handed back), not only for the refreshes of keys still kept."""
    unwound: list[str] = []
    never = asyncio.Event()

    def slow(name: str, unwinding_s: float) -> Callable[[], Awaitable[int]]:
        async def compute() -> int:
            try:
                await never.wait()
            finally:
                await asyncio.sleep(unwinding_s)  # as a connection goes back to its pool
                unwound.append(name)
            return 0

        return compute

    background: Background[int] = Background(max_age_s=60, wait_s=0.01, keep=1)
    await background.get("a", slow("a", 0.3))
    await background.get("b", slow("b", 0))  # evicts "a"
    await background.close()
    assert sorted(unwound) == ["a", "b"]


async def test_an_evicted_refresh_that_ends_is_no_longer_held() -> None:
    background: Background[int] = Background(max_age_s=60, wait_s=0.01, keep=1)
    started = asyncio.Event()

    async def compute() -> int:
        started.set()
        await asyncio.sleep(3600)
        return 0

    await background.get("a", compute)
    await started.wait()
    await background.get("b", compute)
    await asyncio.sleep(0.05)  # the cancelled refresh unwinds
    assert background._evicted == set()
    await background.close()
