"""Postgres for every role: one pool factory, the migrations, the named-query loader."""

from mailer.db.pool import (
    TRANSIENT_ERRORS,
    DatabaseUnreachable,
    Pool,
    affected,
    connect,
    create_pool,
    unavailable,
)
from mailer.db.queries import Queries, QueryFileError

__all__ = [
    "TRANSIENT_ERRORS",
    "DatabaseUnreachable",
    "Pool",
    "Queries",
    "QueryFileError",
    "affected",
    "connect",
    "create_pool",
    "unavailable",
]
