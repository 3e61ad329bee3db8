"""The event log.

Positions come from one sequence; inside a channel they increase in commit order because the
writers of a channel hold its lock until they commit. Each write transaction sends one
notification `{"channel": ..., "event_position": <last position>}` on `orchestrator_events`;
PostgreSQL delivers it at commit, so a listener never hears of an event it cannot read.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from backend_common.protos import common_pb2, event_pb2
from sqlalchemy import Connection, insert, select, text

from standalone_orchestrator.db.tables import events as table
from standalone_orchestrator.store import codec

NOTIFY_CHANNEL = "orchestrator_events"

_ALLOCATE = text("SELECT nextval('event_positions') FROM generate_series(1, :count)")
_NOTIFY = text("SELECT pg_notify(:notify_channel, :payload)")
_INDEX_WALK = "SET LOCAL enable_sort = off; SET LOCAL enable_bitmapscan = off"


def insert_events(connection: Connection, channel: str, events: Sequence[event_pb2.Event]) -> int:
    """Append the events in order, schedule the commit notification; returns the last position."""
    positions = sorted(connection.scalars(_ALLOCATE, {"count": len(events)}))
    connection.execute(
        insert(table),
        [
            {
                "position": position,
                "id": event.id,
                "channel": channel,
                "asset_key": event.asset_key,
                "asset_kind": common_pb2.AssetKind.Name(event.asset_kind),
                "event_kind": event_pb2.EventKind.Name(event.event_kind),
                "timestamp": codec.to_datetime(event.timestamp),
                "metadata": dict(event.metadata),
                "payload": event.SerializeToString(),
            }
            for position, event in zip(positions, events, strict=True)
        ],
    )
    last = int(positions[-1])
    connection.execute(
        _NOTIFY,
        {
            "notify_channel": NOTIFY_CHANNEL,
            "payload": json.dumps({"channel": channel, "event_position": last}),
        },
    )
    return last


def position_of(connection: Connection, channel: str, event_id: str) -> int | None:
    statement = select(table.c.position).where(table.c.id == event_id, table.c.channel == channel)
    return connection.scalar(statement)


def payloads_after(
    connection: Connection, channel: str, position: int, limit: int
) -> list[tuple[int, bytes]]:
    """(position, serialized Event) of the channel's events after `position`, in order."""
    # Walk the (channel, position) index whatever the statistics say: right after a burst of
    # events they are stale, and the planner then prefers a bitmap scan sorting the whole rest
    # of the log for every batch (100 times slower). SET LOCAL ends with the transaction.
    connection.exec_driver_sql(_INDEX_WALK)
    statement = (
        select(table.c.position, table.c.payload)
        .where(table.c.channel == channel, table.c.position > position)
        .order_by(table.c.position)
        .limit(limit)
    )
    return [(row[0], bytes(row[1])) for row in connection.execute(statement).all()]


def query_events(
    connection: Connection,
    channel: str,
    *,
    offset: int,
    size: int,
    event_filter: event_pb2.EventQueryFilter,
    descending: bool,
) -> list[bytes]:
    statement = select(table.c.payload).where(table.c.channel == channel)
    if event_filter.asset_key:
        statement = statement.where(table.c.asset_key == event_filter.asset_key)
    if event_filter.asset_kind:
        statement = statement.where(table.c.asset_kind == common_pb2.AssetKind.Name(event_filter.asset_kind))
    if event_filter.event_kind:
        statement = statement.where(table.c.event_kind == event_pb2.EventKind.Name(event_filter.event_kind))
    if event_filter.metadata:
        # JSONB containment: every given pair must match.
        statement = statement.where(table.c.metadata.contains(dict(event_filter.metadata)))
    if event_filter.HasField("start"):
        statement = statement.where(table.c.timestamp >= codec.to_datetime(event_filter.start))
    if event_filter.HasField("end"):
        statement = statement.where(table.c.timestamp <= codec.to_datetime(event_filter.end))
    if descending:
        statement = statement.order_by(table.c.timestamp.desc(), table.c.id.desc())
    else:
        statement = statement.order_by(table.c.timestamp, table.c.id)
    rows = connection.execute(statement.offset(offset).limit(size + 1)).all()
    return [bytes(row[0]) for row in rows]
