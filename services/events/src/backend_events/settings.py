"""Settings of the events service."""

from __future__ import annotations

from backend_common.settings import (
    CelerySettings,
    HttpSettings,
    OrchestratorSettings,
    ServiceSettings,
)
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConsumerSettings(BaseSettings):
    """How the event stream is consumed (`EVENTS_*`) and how work is routed (`WORKER_REPLICAS`)."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    # Compute plans are pinned to one of this many worker replicas (`<org>.worker-<i>`); the
    # reference reads the worker StatefulSet's scale instead.
    worker_replicas: int = Field(default=1, ge=1, validation_alias="WORKER_REPLICAS")
    # Present while every channel's stream is live; its content is the state of each stream.
    readiness_file: str = Field(default="/tmp/ready", validation_alias="EVENTS_READINESS_FILE")  # noqa: S108
    # Events applied in one transaction at most, when the stream has a backlog.
    batch_size: int = Field(default=2000, ge=1, validation_alias="EVENTS_BATCH_SIZE")
    # Events read ahead of the transaction in progress.
    buffer_size: int = Field(default=5000, ge=1, validation_alias="EVENTS_BUFFER_SIZE")
    reconnect_initial_delay_seconds: float = Field(
        default=0.5, gt=0, validation_alias="EVENTS_RECONNECT_INITIAL_DELAY"
    )
    reconnect_max_delay_seconds: float = Field(
        default=30.0, gt=0, validation_alias="EVENTS_RECONNECT_MAX_DELAY"
    )
    # How often pending dispatches are retried while the stream is idle (e.g. after a Redis outage).
    dispatch_retry_seconds: float = Field(default=2.0, gt=0, validation_alias="EVENTS_DISPATCH_RETRY_SECONDS")


class EventsSettings(ServiceSettings):
    orchestrator: OrchestratorSettings = Field(default_factory=OrchestratorSettings)
    celery: CelerySettings = Field(default_factory=CelerySettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    consumer: ConsumerSettings = Field(default_factory=ConsumerSettings)
