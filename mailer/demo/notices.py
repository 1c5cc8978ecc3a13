"""The demo's transactional notices: "your parts have arrived", sent while the campaign runs.

Through the same ENQUEUE operation as `mailer send` and the API, and sent by the worker's
transactional lane ahead of the campaign. One goes to a person who unsubscribed from
marketing: a notice about their own purchase (CASL s.6(6)(b)) still reaches them, and the
demo prints the rule that let it through.
"""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path

from rich.console import Console

from mailer.demo import relay
from mailer.demo.sink import Sink
from mailer.transactional.enqueue import enqueue
from mailer.transactional.store import TransactionalStore

PARTS = (
    ("Plaquettes de frein avant", "Toyota RAV4 2019"),
    ("Front brake pads", "Honda Civic 2021"),
    ("Batterie 12 V", "Mazda CX-5 2020"),
)


def _addresses(path: Path, column: str | None) -> list[str]:
    with path.open(encoding="utf-8", newline="") as fh:
        if column is None:
            found = [line.strip() for line in fh if "@" in line and not line.startswith("#")]
        else:
            found = [row[column] for row in csv.DictReader(fh)]
    # Addresses the demo's next hop delivers (a DSN would only distract here).
    return [a for a in found if relay.verdict(a.lower()) is None]


async def send_notices(
    store: TransactionalStore,
    sink: Sink,
    contacts_csv: Path,
    unsubscribed: Path,
    console: Console,
    campaign: asyncio.Task[object],
    *,
    after_messages: int = 300,
) -> list[int]:
    """Once the campaign is under way (or over), enqueue the notices; their message ids."""
    # The sink counts in its own handler: polled, as the demo's progress bar does.
    while sink.count < after_messages and not campaign.done():  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    opted_out = _addresses(unsubscribed, None)[:1]
    customers = _addresses(contacts_csv, "email")[-(len(PARTS) - len(opted_out)) :]
    ids = []
    for index, (to, (part, vehicle)) in enumerate(
        zip([*customers, *opted_out], PARTS, strict=True)
    ):
        result = await enqueue(
            store,
            template="parts_received",
            to=to,
            data={"order": f"BC-{20931 + index}", "part": part, "vehicle": vehicle},
            idempotency_key=f"demo-{sink.count}-{index}",
        )
        ids.append(result.message_id)
        said = f" — {result.note}" if result.note else ""
        console.print(
            f"notice {result.message_id} (parts_received) to {to} accepted while the campaign "
            f"had {sink.count:,} messages out{said}",
            highlight=False,
        )
    return ids


async def wait_sent(store: TransactionalStore, ids: list[int], console: Console) -> None:
    """Until every notice has its outcome (the lane sends them within a second or so)."""
    for _ in range(300):
        records = [await store.message(i) for i in ids]
        if all(r is not None and r.status not in ("queued", "sending") for r in records):
            break
        await asyncio.sleep(0.1)
    for record in records:
        if record is None:
            continue
        waited = (
            f"{(record.replied_at - record.enqueued_at).total_seconds():.2f} s"
            if record.replied_at is not None
            else "-"
        )
        console.print(
            f"notice {record.id} to {record.email}: {record.status} (enqueue to reply {waited})"
            + (f"; {record.note}" if record.note else ""),
            highlight=False,
        )
