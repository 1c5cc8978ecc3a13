"""Every role's store on one pool: for the tests and benchmarks that drive several roles.

The commands build only the stores they use; this bundle is dev tooling.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import NamedTuple

from mailer.campaigns.store import CampaignStore
from mailer.compliance.store import ComplianceStore
from mailer.contacts.store import ContactStore
from mailer.db import Pool, connect
from mailer.report.store import ReportStore
from mailer.send.store import SendStore


class Stores(NamedTuple):
    pool: Pool
    contacts: ContactStore
    campaigns: CampaignStore
    send: SendStore
    compliance: ComplianceStore
    report: ReportStore

    @classmethod
    def on(cls, pool: Pool, *, audience_parts: int = 1) -> Stores:
        return cls(
            pool,
            ContactStore(pool),
            CampaignStore(pool, audience_parts=audience_parts),
            SendStore(pool),
            ComplianceStore(pool),
            ReportStore(pool),
        )


@asynccontextmanager
async def open_stores(
    dsn: str, *, max_size: int = 4, audience_parts: int = 2
) -> AsyncIterator[Stores]:
    """A pool on `dsn` and every store on it, closed on the way out."""
    async with connect(dsn, max_size=max_size) as pool:
        yield Stores.on(pool, audience_parts=audience_parts)
