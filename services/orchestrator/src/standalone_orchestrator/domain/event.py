"""Event queries (`orchestrator-grpc.md` 10): QueryEvents pages through (timestamp, id) order.

Only the subscription stream (`api.events`) preserves the emission order inside a request.
"""

from __future__ import annotations

from backend_common.protos import common_pb2, event_pb2

from standalone_orchestrator.domain import pagination
from standalone_orchestrator.domain.context import Request
from standalone_orchestrator.store import events as store


def query_events(
    request: Request,
    page_token: str,
    page_size: int,
    event_filter: event_pb2.EventQueryFilter,
    sort: int,
) -> tuple[list[bytes], str]:
    """Serialized events of the page and the next page token."""
    offset, size = pagination.parse(page_token, page_size)
    rows = store.query_events(
        request.connection,
        request.channel,
        offset=offset,
        size=size,
        event_filter=event_filter,
        descending=sort == common_pb2.DESCENDING,
    )
    return pagination.cut(rows, offset, size)
