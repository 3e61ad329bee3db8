"""Settings of the worker (compute tasks) and builder (function environments) processes."""

from __future__ import annotations

from backend_common.settings import (
    CelerySettings,
    ComputeSettings,
    DatabaseSettings,
    HttpSettings,
    LoggingSettings,
    MetricsSettings,
    OrchestratorSettings,
    OrganizationSettings,
    StorageSettings,
)
from pydantic import BaseModel, Field


class WorkerSettings(BaseModel):
    model_config = {"frozen": True}

    organization: OrganizationSettings = Field(default_factory=OrganizationSettings)
    orchestrator: OrchestratorSettings = Field(default_factory=OrchestratorSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    celery: CelerySettings = Field(default_factory=CelerySettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    compute: ComputeSettings = Field(default_factory=ComputeSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)

    @property
    def database_url(self) -> str:
        return self.database.url(self.organization.org_name)
