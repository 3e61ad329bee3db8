"""Settings of the events service."""

from __future__ import annotations

from backend_common.settings import (
    CelerySettings,
    DatabaseSettings,
    HttpSettings,
    LoggingSettings,
    MetricsSettings,
    OrchestratorSettings,
    OrganizationSettings,
)
from pydantic import BaseModel, Field


class EventsSettings(BaseModel):
    model_config = {"frozen": True}

    organization: OrganizationSettings = Field(default_factory=OrganizationSettings)
    orchestrator: OrchestratorSettings = Field(default_factory=OrchestratorSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    celery: CelerySettings = Field(default_factory=CelerySettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)

    @property
    def database_url(self) -> str:
        return self.database.url(self.organization.org_name)
