"""Settings of the scheduler (Celery beat) and the scheduler-worker."""

from __future__ import annotations

from backend_common.settings import (
    CelerySettings,
    DatabaseSettings,
    LoggingSettings,
    MetricsSettings,
    OrganizationSettings,
)
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class BeatSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    # Where beat remembers when each job last ran, so a restart does not re-run everything at once.
    schedule_file: str = Field(
        default=".local/celerybeat-schedule", validation_alias="CELERYBEAT_SCHEDULE_FILE"
    )


class SchedulerSettings(BaseModel):
    model_config = {"frozen": True}

    organization: OrganizationSettings = Field(default_factory=OrganizationSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    celery: CelerySettings = Field(default_factory=CelerySettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    beat: BeatSettings = Field(default_factory=BeatSettings)

    @property
    def database_url(self) -> str:
        return self.database.url(self.organization.org_name)
