"""A pool whose every database call ends by a deadline (the tracker's; #13 item 7).

A frozen or locked database must cost a request at most `tracker.db_timeout_ms`, never hang it
(a one-click POST once hung 20 s, then answered 200). Two bounds work together:

- Postgres side: each connection starts with statement_timeout and lock_timeout at
  `tracker.db_statement_timeout_ms`, shorter than the client's wait. A statement stuck behind
  a lock is cancelled by the server itself, which aborts the transaction and says so: the 503
  that follows is a definite "nothing written". idle_in_transaction_session_timeout ends a
  transaction whose client stalled, so its row locks do not hold up other opt-outs.
- Client side: the whole call (acquire, BEGIN, statements, COMMIT) runs under one deadline.
  When it passes, the connection is terminated, never rolled back or reset: both would wait
  for the server, which is what is stuck. COMMIT is only sent with a tenth of the budget still
  to run (ample for a server that answers at all), so a transaction abandoned this way was
  never asked to commit and can only roll back (Postgres aborts it on reading EOF).

The one uncertain case is a server that froze with the COMMIT in hand: its answer is not back
by the deadline, the caller answers 503, and the change lands when the server wakes. No
client can settle that (the commit is the server's act, its answer may never come). For an
opt-out it is the safe side: it is what the person asked for, its writes are idempotent, and
the retry a 503 invites finds it done and answers 200. The other side cannot happen: 200 is
only sent after COMMIT's answer.

The tracker's store lends its connections from here; any public-facing process may.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from mailer.db.pool import create_pool

log = logging.getLogger(__name__)

# What pool.acquire() hands out; the store's methods take either kind.
Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

# COMMIT is sent only while this share of the call's budget is still left (see above).
_COMMIT_RESERVE = 0.1

# Errors that mean "the database cannot do it now", as opposed to a bug in a query.
OUTAGES = (
    OSError,  # TimeoutError (our deadline, a connect timeout) included
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # 57014 is statement_timeout's cancel
    asyncpg.exceptions.LockNotAvailableError,  # 55P03: lock_timeout
    asyncpg.exceptions.IdleInTransactionSessionTimeoutError,
)


class Unavailable(RuntimeError):
    """Postgres could not answer in time, or at all (the handler answers 503, not a traceback)."""


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError) and not str(exc):
        return "no answer before the deadline"
    return str(exc) or type(exc).__name__


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Return a connection to the pool as it is.

    asyncpg's default reset is a round trip (RESET ALL, UNLISTEN *, …): after a COMMIT it
    would hang on a server that froze meanwhile, and it costs one per request. The tracker
    changes no session state (its timeouts are set at connect or with SET LOCAL, its inbox
    table is meant to outlive the session), and an open transaction is still rolled back.
    """


class BoundedPool:
    """An asyncpg pool whose connections carry server-side timeouts and are lent by deadline."""

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int,
        max_size: int,
        timeout_s: float,
        statement_timeout_ms: int,
    ) -> None:
        self._dsn = dsn
        self._min_size = min_size
        self._max_size = max_size
        self.timeout_s = timeout_s
        self._statement_timeout_ms = statement_timeout_ms
        self._pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("TrackerStore.start() was not awaited")
        return self._pool

    async def _create(self, min_size: int) -> asyncpg.Pool:
        ms = str(self._statement_timeout_ms)
        return await create_pool(
            self._dsn,
            min_size=min_size,
            max_size=self._max_size,
            reset=_keep_session,
            timeout=self.timeout_s,  # connecting, authentication included
            # asyncpg's own waits (a cancel request to a frozen server) end too.
            command_timeout=self.timeout_s,
            # Sent in the startup packet: in force from the first statement, no round trip.
            server_settings={
                "statement_timeout": ms,
                "lock_timeout": ms,
                # By then our client has given up on the transaction: if the tracker itself
                # stalled mid-transaction, the server frees the contact's row lock.
                "idle_in_transaction_session_timeout": str(round(self.timeout_s * 1000)),
            },
        )

    async def start(self) -> bool:
        """Open the pool; False when Postgres is unreachable (the pool then connects lazily).

        The pixel must be served even while the database is down, so a tracker starts
        anyway, buffers events, and reports the outage on /healthz.
        """
        try:
            self._pool = await self._create(self._min_size)
            return True
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.error("Postgres unreachable at start (%s); serving and retrying", _why(exc))
            self._pool = await self._create(0)
            return False

    async def close(self) -> None:
        """Close the pool (terminating what does not close in time)."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), self.timeout_s)
            except TimeoutError:
                pool.terminate()

    @asynccontextmanager
    async def connection(
        self, *, transaction: bool = False, readonly: bool = False, timeout_s: float | None = None
    ) -> AsyncIterator[Conn]:
        """A connection for one call (in a transaction if asked) that ends by the deadline.

        Raises Unavailable when the deadline passes or Postgres is away or refuses for lack of
        time (statement_timeout, lock_timeout); the transaction is then not committed (but for
        a server that froze with the COMMIT in hand: see the module's docstring).
        """
        pool = self.pool
        loop = asyncio.get_running_loop()
        budget = timeout_s or self.timeout_s
        deadline = loop.time() + budget
        try:
            async with asyncio.timeout_at(deadline):
                conn = await pool.acquire()
        except OUTAGES as exc:
            raise Unavailable(f"no database connection: {_why(exc)}") from exc
        finished = False
        try:
            async with asyncio.timeout_at(deadline):
                if transaction:
                    await conn.execute("BEGIN READ ONLY" if readonly else "BEGIN")
                yield conn
                if transaction:
                    if deadline - loop.time() < budget * _COMMIT_RESERVE:
                        raise TimeoutError("too little time left to commit")
                    await conn.execute("COMMIT")
            finished = True
        except OUTAGES as exc:
            raise Unavailable(_why(exc)) from exc
        finally:
            if finished:
                await pool.release(conn)
            else:
                # Not rolled back nor reset: both wait for the server. Postgres rolls back an
                # open transaction when it finds the connection gone.
                conn.terminate()
