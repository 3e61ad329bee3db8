"""Settings of the REST API server."""

from __future__ import annotations

import json
from typing import Annotated

from backend_common.settings import (
    AuthSettings,
    ComputeSettings,
    EnvBool,
    HttpSettings,
    OrchestratorSettings,
    ServiceSettings,
    StorageSettings,
)
from pydantic import BeforeValidator, Field
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _json_list(value: object) -> object:
    # CORS_ORIGIN_WHITELIST and friends are JSON lists in the reference chart.
    if isinstance(value, str):
        return json.loads(value) if value.strip() else []
    return value


JsonList = Annotated[list[str], NoDecode, BeforeValidator(_json_list)]


class ProcessSettings(BaseSettings):
    """How the server process listens (the public URL is `DEFAULT_DOMAIN`)."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    bind_host: str = Field(default="127.0.0.1", validation_alias="SERVER_BIND_HOST")
    bind_port: int = Field(default=8000, validation_alias="SERVER_BIND_PORT")
    workers: int = Field(default=1, ge=1, validation_alias="SERVER_WORKERS")
    # One JSON line per request; the request metrics are kept either way.
    access_log: EnvBool = Field(default=True, validation_alias="SERVER_ACCESS_LOG")
    # uvicorn kills a worker that does not answer its supervisor's ping in time; its 5 s default
    # kills workers still importing on a loaded machine, over and over.
    worker_healthcheck_timeout: int = Field(
        default=60, ge=1, validation_alias="SERVER_WORKER_HEALTHCHECK_TIMEOUT"
    )


class ApiSettings(BaseSettings):
    """Behaviour of the REST API itself: throttling, passwords, cookies, CORS, upload limits."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    debug: EnvBool = Field(default=False, validation_alias="DEBUG")
    # Requests per minute for anonymous callers and for logins of one username (per server process).
    throttle_rate: int = Field(default=40, ge=0, validation_alias="DEFAULT_THROTTLE_RATES")
    password_min_length: int = Field(default=20, ge=1, validation_alias="PASSWORD_MIN_LENGTH")
    common_host_domain: str | None = Field(default=None, validation_alias="COMMON_HOST_DOMAIN")
    cors_origin_whitelist: JsonList = Field(default_factory=list, validation_alias="CORS_ORIGIN_WHITELIST")
    cors_allow_credentials: EnvBool = Field(default=False, validation_alias="CORS_ALLOW_CREDENTIALS")
    # Archive sanity limits: what an upload may expand to, and how much smaller than that it may be.
    archive_max_uncompressed_size: int = Field(
        default=16 * 1024**3, ge=1, validation_alias="ARCHIVE_MAX_UNCOMPRESSED_SIZE"
    )
    archive_max_compression_ratio: float = Field(
        default=200.0, gt=1, validation_alias="ARCHIVE_MAX_COMPRESSION_RATIO"
    )
    archive_max_entries: int = Field(default=100_000, ge=1, validation_alias="ARCHIVE_MAX_ENTRIES")
    # Descriptions and openers are small text files; anything bigger is a mistake.
    small_file_max_size: int = Field(default=64 * 1024**2, ge=1, validation_alias="SMALL_FILE_MAX_SIZE")
    upload_spool_dir: str | None = Field(default=None, validation_alias="UPLOAD_SPOOL_DIR")


class ServerSettings(ServiceSettings):
    orchestrator: OrchestratorSettings = Field(default_factory=OrchestratorSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    process: ProcessSettings = Field(default_factory=ProcessSettings)
    compute: ComputeSettings = Field(default_factory=ComputeSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)

    @property
    def msp_id(self) -> str:
        return self.organization.msp_id

    @property
    def subpath(self) -> str:
        """The route prefix without slashes ("" or e.g. "backend")."""
        return self.http.subpath.strip("/")
