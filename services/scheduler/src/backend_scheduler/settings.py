"""Settings of the scheduler (Celery beat) and the scheduler-worker."""

from __future__ import annotations

from backend_common.settings import (
    CelerySettings,
    ServiceSettings,
)
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class BeatSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    # Where beat remembers when each job last ran, so a restart does not re-run everything at once.
    schedule_file: str = Field(
        default=".local/celerybeat-schedule", validation_alias="CELERYBEAT_SCHEDULE_FILE"
    )


class SchedulerSettings(ServiceSettings):
    celery: CelerySettings = Field(default_factory=CelerySettings)
    beat: BeatSettings = Field(default_factory=BeatSettings)
