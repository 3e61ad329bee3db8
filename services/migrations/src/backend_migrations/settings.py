"""Settings of the migrations job."""

from __future__ import annotations

from backend_common.settings import (
    AuthSettings,
    ServiceSettings,
)
from pydantic import Field


class MigrationsSettings(ServiceSettings):
    auth: AuthSettings = Field(default_factory=AuthSettings)
