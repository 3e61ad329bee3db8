"""Engine and transactions.

Writers of a channel are serialized by a transaction-scoped advisory lock on the channel, taken
before anything is read: a writer sees every earlier commit of its channel, and the events of
the channel get their positions in commit order (the lock is released after the commit is
visible). Writers of different channels run in parallel. Readers take a read-only repeatable
read snapshot, so a multi-query read is consistent.

Conflicts that can still happen (deadlocks on the unique indexes shared by channels, a
serialization failure) are retried until the retry budget is spent.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from psycopg2 import errorcodes
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from standalone_orchestrator.errors import ErrorCode, OrchestratorError

T = TypeVar("T")

# First key of the advisory locks taken by the orchestrator (arbitrary, to avoid clashes).
LOCK_NAMESPACE = 726173
_CHANNEL_LOCK = text("SELECT pg_advisory_xact_lock(:namespace, hashtext(:channel))")
_RETRYABLE = frozenset({errorcodes.SERIALIZATION_FAILURE, errorcodes.DEADLOCK_DETECTED})


def make_engine(database_url: str, pool_size: int = 10, max_overflow: int = 20) -> Engine:
    return create_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=True,
        pool_recycle=1800,
    )


def _sqlstate(error: DBAPIError) -> str | None:
    return getattr(error.orig, "pgcode", None)


def _conflict(error: IntegrityError) -> OrchestratorError:
    # Reached when two channels race on a key, or a storage address, that must be unique across
    # channels: report a conflict rather than an opaque database error.
    diag = getattr(error.orig, "diag", None)
    detail = getattr(diag, "message_detail", None) or "unique constraint violated"
    return OrchestratorError(ErrorCode.CONFLICT, f"asset already exists: {detail}")


class Database:
    def __init__(self, engine: Engine, retry_budget_seconds: float = 0.5) -> None:
        self.engine = engine
        self.retry_budget_seconds = retry_budget_seconds

    def write(self, channel: str, work: Callable[[Connection], T]) -> T:
        """Run `work` in a write transaction holding the channel's lock; retried on conflicts."""
        deadline = time.monotonic() + self.retry_budget_seconds
        attempt = 0
        while True:
            attempt += 1
            try:
                with self.engine.connect() as connection, connection.begin():
                    connection.execute(_CHANNEL_LOCK, {"namespace": LOCK_NAMESPACE, "channel": channel})
                    return work(connection)
            except IntegrityError as error:
                if _sqlstate(error) == errorcodes.UNIQUE_VIOLATION:
                    raise _conflict(error) from error
                raise
            except DBAPIError as error:
                if _sqlstate(error) not in _RETRYABLE or time.monotonic() >= deadline:
                    raise
                time.sleep(random.uniform(0, min(0.05, 0.005 * attempt)))  # noqa: S311

    def read(self, work: Callable[[Connection], T]) -> T:
        with self.engine.connect() as connection, connection.begin():
            connection.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            return work(connection)

    def ping(self) -> bool:
        try:
            with self.engine.connect() as connection:
                connection.exec_driver_sql("SELECT 1")
        except DBAPIError:
            return False
        return True

    def dispose(self) -> None:
        self.engine.dispose()
