"""The request context every domain function works in.

One request = one transaction, one requester (the `mspid` header), one channel and one
timestamp (now, at microsecond precision) used for every date and event of the request. Events
are buffered in emission order and written with the request's other changes, just before the
commit: a request that fails leaves neither state nor events behind.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from backend_common.protos import common_pb2, event_pb2
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import Connection

from standalone_orchestrator.store import events as event_store
from standalone_orchestrator.store import organizations as organization_store
from standalone_orchestrator.store.codec import timestamp

AssetKind = common_pb2.AssetKind
EventKind = event_pb2.EventKind


@dataclass
class Request:
    connection: Connection
    channel: str
    requester: str
    now: datetime
    events: list[event_pb2.Event] = field(default_factory=list)
    _timestamp: Timestamp = field(default_factory=Timestamp)
    _organization_ids: set[str] | None = None

    @classmethod
    def start(cls, connection: Connection, channel: str, requester: str) -> Request:
        # datetime has microsecond precision: the reference truncates timestamps to it as well.
        now = datetime.now(UTC)
        return cls(
            connection=connection, channel=channel, requester=requester, now=now, _timestamp=timestamp(now)
        )

    @property
    def timestamp(self) -> Timestamp:
        """The request time (protobuf setters copy it, so sharing the instance is safe)."""
        return self._timestamp

    def organization_ids(self) -> set[str]:
        """The organizations registered in the channel (read once per request)."""
        if self._organization_ids is None:
            self._organization_ids = organization_store.organization_ids(self.connection, self.channel)
        return self._organization_ids

    def emit(
        self,
        event_kind: EventKind.ValueType,
        asset_kind: AssetKind.ValueType,
        asset_key: str,
        asset: Message,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        event = event_pb2.Event(
            id=str(uuid.uuid4()),
            asset_key=asset_key,
            asset_kind=asset_kind,
            event_kind=event_kind,
            channel=self.channel,
            timestamp=self._timestamp,
            metadata=metadata,
        )
        getattr(event, _ASSET_FIELDS[asset_kind]).CopyFrom(asset)
        self.events.append(event)

    def flush_events(self) -> None:
        if self.events:
            event_store.insert_events(self.connection, self.channel, self.events)


# The `Event.asset` oneof member carrying each kind of asset.
_ASSET_FIELDS: dict[int, str] = {
    AssetKind.ASSET_ORGANIZATION: "organization",
    AssetKind.ASSET_DATA_SAMPLE: "data_sample",
    AssetKind.ASSET_DATA_MANAGER: "data_manager",
    AssetKind.ASSET_FUNCTION: "function",
    AssetKind.ASSET_COMPUTE_TASK: "compute_task",
    AssetKind.ASSET_COMPUTE_PLAN: "compute_plan",
    AssetKind.ASSET_MODEL: "model",
    AssetKind.ASSET_PERFORMANCE: "performance",
    AssetKind.ASSET_FAILURE_REPORT: "failure_report",
    AssetKind.ASSET_COMPUTE_TASK_OUTPUT_ASSET: "compute_task_output_asset",
    AssetKind.ASSET_PROFILING_STEP: "profiling_step",
}
