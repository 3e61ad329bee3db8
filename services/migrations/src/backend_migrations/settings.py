"""Settings of the migrations job."""

from __future__ import annotations

from backend_common.settings import AuthSettings, DatabaseSettings, LoggingSettings, OrganizationSettings
from pydantic import BaseModel, Field


class MigrationsSettings(BaseModel):
    model_config = {"frozen": True}

    organization: OrganizationSettings = Field(default_factory=OrganizationSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)

    @property
    def database_url(self) -> str:
        return self.database.url(self.organization.org_name)
