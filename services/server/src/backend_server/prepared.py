"""Server-side prepared statements for the hottest queries (the task and function documents).

Their SQL is constant; preparing it once per database connection saves PostgreSQL the planning of a
large `json_build_object` query at every page. The statements live with the driver connection, so
they are tracked in its `info` (which the pool keeps for the connection's lifetime).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

_PREPARED_KEY = "backend_server_prepared"


def execute(session: Session, name: str, sql: str, arguments: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Run the statement `name` (`sql` with `$1`, `$2`... parameters) in the session's transaction."""
    connection = session.connection()
    pooled = connection.connection
    prepared: set[str] = pooled.info.setdefault(_PREPARED_KEY, set())
    cursor = pooled.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        if name not in prepared:
            cursor.execute(f"PREPARE {name} AS {sql}")
            prepared.add(name)
        placeholders = ", ".join(["%s"] * len(arguments))
        cursor.execute(f"EXECUTE {name} ({placeholders})", tuple(arguments))
        return list(cursor.fetchall())
    finally:
        cursor.close()
