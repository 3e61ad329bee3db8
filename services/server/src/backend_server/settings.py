"""Settings of the REST API server."""

from __future__ import annotations

from backend_common.settings import (
    AuthSettings,
    DatabaseSettings,
    HttpSettings,
    LoggingSettings,
    MetricsSettings,
    OrchestratorSettings,
    OrganizationSettings,
    StorageSettings,
)
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ProcessSettings(BaseSettings):
    """How the server process listens (the public URL is `DEFAULT_DOMAIN`)."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    bind_host: str = Field(default="127.0.0.1", validation_alias="SERVER_BIND_HOST")
    bind_port: int = Field(default=8000, validation_alias="SERVER_BIND_PORT")
    workers: int = Field(default=1, ge=1, validation_alias="SERVER_WORKERS")


class ServerSettings(BaseModel):
    model_config = {"frozen": True}

    organization: OrganizationSettings = Field(default_factory=OrganizationSettings)
    orchestrator: OrchestratorSettings = Field(default_factory=OrchestratorSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    process: ProcessSettings = Field(default_factory=ProcessSettings)

    @property
    def database_url(self) -> str:
        return self.database.url(self.organization.org_name)
