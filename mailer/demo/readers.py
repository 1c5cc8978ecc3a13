"""The demo's simulated readers: they open, click and unsubscribe through the real tracker.

Each message in the demo mailbox is read back (as a mail client would) for
its pixel, its tracked links and its List-Unsubscribe URL; then a mix of
people and machines hits the tracker over HTTP. Machines come first, within
seconds of delivery, as security scanners and image proxies do; people come
after the scanner window, so the tracker's human / machine flags show both.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import aiohttp

HUMAN_AGENT = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Safari/605.1.15"
)
IMAGE_PROXY_AGENT = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
)
SCANNER_AGENT = "Barracuda Sentinel (EE)"
_TRACKED = re.compile(r"https?://[^\s\"'<>]+/(?:o|c)/[A-Za-z0-9_-]+")


@dataclass
class Reader:
    pixel: str | None
    clicks: list[str]
    unsubscribe: str | None
    mailto: str | None = None  # the List-Unsubscribe mailto address (RFC 2369)


@dataclass
class Activity:
    hits: Counter[str] = field(default_factory=Counter)
    failures: int = 0


def is_transactional(message: EmailMessage) -> bool:
    """A transactional notice (Feedback-ID `<template>:transactional:<domain>`)."""
    return ":transactional:" in str(message.get("Feedback-ID", ""))


def read_mailbox(folder: Path) -> list[Reader]:
    """What each delivered message offers a reader: its pixel, links and unsubscribe URL."""
    readers = []
    for path in sorted(folder.glob("*.eml")):
        message = message_from_bytes(path.read_bytes(), policy=policy.default)
        assert isinstance(message, EmailMessage)
        if is_transactional(message):
            continue  # the readers act on the campaign: its report is the demo's subject
        html = message.get_body(("html",))
        urls = _TRACKED.findall(html.get_content() if html is not None else "")
        header = str(message.get("List-Unsubscribe", ""))
        https = [u.strip(" <>") for u in header.split(",") if u.strip(" <").startswith("http")]
        readers.append(
            Reader(
                pixel=next((u for u in urls if "/o/" in u), None),
                clicks=[u for u in urls if "/c/" in u],
                unsubscribe=https[0] if https else None,
                mailto=next(
                    (
                        u.strip(" <>").removeprefix("mailto:").partition("?")[0]
                        for u in header.split(",")
                        if u.strip(" <").startswith("mailto:")
                    ),
                    None,
                ),
            )
        )
    return readers


async def machines(readers: list[Reader], seed: int = 11) -> Activity:
    """Image proxies fetch pixels and link scanners follow links, within seconds of delivery."""
    rng = random.Random(seed)
    jobs: list[tuple[str, str, str]] = []
    for reader in readers:
        if reader.pixel and rng.random() < 0.25:
            jobs.append(("GET", reader.pixel, IMAGE_PROXY_AGENT))
        if reader.clicks and rng.random() < 0.08:
            jobs.append(("HEAD", rng.choice(reader.clicks), SCANNER_AGENT))
    return await _hit(jobs)


async def people(readers: list[Reader], seed: int = 12) -> Activity:
    """Readers open (45 %), some click (a quarter of those), a few unsubscribe in one click."""
    rng = random.Random(seed)
    jobs: list[tuple[str, str, str]] = []
    for reader in readers:
        if reader.pixel and rng.random() < 0.45:
            jobs.append(("GET", reader.pixel, HUMAN_AGENT))
            if rng.random() < 0.1:
                jobs.append(("GET", reader.pixel, HUMAN_AGENT))  # opened again
            if reader.clicks and rng.random() < 0.25:
                jobs.append(("GET", rng.choice(reader.clicks), HUMAN_AGENT))
        if reader.unsubscribe and rng.random() < 0.02:
            jobs.append(("ONE-CLICK", reader.unsubscribe, HUMAN_AGENT))
    return await _hit(jobs)


async def _hit(jobs: list[tuple[str, str, str]]) -> Activity:
    activity = Activity()
    limit = asyncio.Semaphore(20)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def one(method: str, url: str, agent: str) -> None:
            headers = {"User-Agent": agent}
            async with limit:
                try:
                    if method == "ONE-CLICK":
                        # Exactly what Gmail sends for RFC 8058: a POST, this body, no cookies.
                        response = await session.post(
                            url,
                            data="List-Unsubscribe=One-Click",
                            headers={
                                **headers,
                                "Content-Type": "application/x-www-form-urlencoded",
                            },
                        )
                    else:
                        response = await session.request(
                            method, url, headers=headers, allow_redirects=False
                        )
                    async with response:
                        await response.read()
                    label = {
                        "GET": "open" if "/o/" in url else "click",
                        "HEAD": "scanner click",
                    }.get(method, "one-click unsubscribe")
                    activity.hits[label] += 1
                except (aiohttp.ClientError, TimeoutError):
                    activity.failures += 1

        await asyncio.gather(*(one(*job) for job in jobs))
    return activity
