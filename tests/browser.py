"""What the real-browser tests need: Debian's chromium, driven by Playwright (no download).

pytestmark = [*REQUIRES_BROWSER, …]
"""

from __future__ import annotations

import shutil

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

try:
    from playwright.async_api import async_playwright
except ImportError:  # pragma: no cover - depends on the machine
    async_playwright = None  # type: ignore[assignment]

REQUIRES_BROWSER = [
    pytest.mark.skipif(
        CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)"
    ),
    pytest.mark.skipif(async_playwright is None, reason="playwright is not installed"),
]

__all__ = ["CHROMIUM", "REQUIRES_BROWSER", "async_playwright"]
