"""Typed settings read from environment variables.

Names follow the reference backend (`operations.md`, section 7) so operators and charts keep working.
Each service builds the settings object of its role from the groups below; defaults suit a local
single-machine network.
"""

from __future__ import annotations

import json
from typing import Annotated

from pydantic import AliasChoices, BaseModel, BeforeValidator, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import URL

_TRUE_VALUES = frozenset({"1", "ON", "On", "on", "T", "t", "TRUE", "True", "true", "Y", "y", "YES", "yes"})


def parse_bool(value: object) -> bool:
    """The reference's boolean rule: a fixed set of spellings is true, anything else false."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    return str(value).strip() in _TRUE_VALUES


EnvBool = Annotated[bool, BeforeValidator(parse_bool)]


class _Group(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class ChannelConfig(BaseModel):
    """One entry of `CHANNELS`."""

    model_config = {"frozen": True}

    name: str
    restricted: bool = False
    model_export_enabled: bool = False


def _parse_channels(value: object) -> object:
    # CHANNELS is a JSON list of single-key objects: [{"mychannel": {"restricted": false, ...}}]
    if isinstance(value, str):
        value = json.loads(value) if value.strip() else []
    if not isinstance(value, list):
        return value
    channels: list[object] = []
    for item in value:
        if isinstance(item, ChannelConfig) or (isinstance(item, dict) and "name" in item):
            channels.append(item)
        elif isinstance(item, dict) and len(item) == 1:
            name, options = next(iter(item.items()))
            channels.append({"name": name, **(options or {})})
        else:
            raise ValueError(f"CHANNELS entries must be single-key objects, got {item!r}")
    return channels


class OrganizationSettings(_Group):
    """Who this backend is and which channels it serves."""

    org_name: str = Field(default="default", validation_alias="ORG_NAME")
    msp_id: str = Field(default="MyOrg1MSP", validation_alias="MSP_ID")
    channels: Annotated[list[ChannelConfig], NoDecode, BeforeValidator(_parse_channels)] = Field(
        default_factory=lambda: [ChannelConfig(name="mychannel")], validation_alias="CHANNELS"
    )
    isolated: EnvBool = Field(default=False, validation_alias="ISOLATED")
    backend_version: str = Field(default="0.1.0", validation_alias="BACKEND_VERSION")

    @property
    def channel_names(self) -> list[str]:
        return [channel.name for channel in self.channels]

    def channel(self, name: str) -> ChannelConfig | None:
        return next((channel for channel in self.channels if channel.name == name), None)


class OrchestratorSettings(_Group):
    """How to reach the orchestrator (`ORCHESTRATOR_*`)."""

    host: str = Field(default="127.0.0.1", validation_alias="ORCHESTRATOR_HOST")
    port: int = Field(default=9000, validation_alias="ORCHESTRATOR_PORT")
    tls_enabled: EnvBool = Field(default=False, validation_alias="ORCHESTRATOR_TLS_ENABLED")
    mtls_enabled: EnvBool = Field(default=False, validation_alias="ORCHESTRATOR_MTLS_ENABLED")
    tls_server_cacert_path: str | None = Field(
        default=None, validation_alias="ORCHESTRATOR_TLS_SERVER_CACERT_PATH"
    )
    tls_client_cert_path: str | None = Field(
        default=None, validation_alias="ORCHESTRATOR_TLS_CLIENT_CERT_PATH"
    )
    tls_client_key_path: str | None = Field(default=None, validation_alias="ORCHESTRATOR_TLS_CLIENT_KEY_PATH")
    keepalive_time_ms: int = Field(default=60000, validation_alias="ORCHESTRATOR_GRPC_KEEPALIVE_TIME_MS")
    keepalive_timeout_ms: int = Field(
        default=20000, validation_alias="ORCHESTRATOR_GRPC_KEEPALIVE_TIMEOUT_MS"
    )
    keepalive_permit_without_calls: int = Field(
        default=0, validation_alias="ORCHESTRATOR_GRPC_KEEPALIVE_PERMIT_WITHOUT_CALLS"
    )
    keepalive_max_pings_without_data: int = Field(
        default=0, validation_alias="ORCHESTRATOR_GRPC_KEEPALIVE_MAX_PINGS_WITHOUT_DATA"
    )
    # Retries of UNAVAILABLE; UNKNOWN (state-machine errors in the reference) is not retried.
    max_attempts: int = Field(default=5, validation_alias="ORCHESTRATOR_MAX_ATTEMPTS")
    retry_initial_delay_seconds: float = Field(
        default=0.2, validation_alias="ORCHESTRATOR_RETRY_INITIAL_DELAY"
    )
    retry_max_delay_seconds: float = Field(default=5.0, validation_alias="ORCHESTRATOR_RETRY_MAX_DELAY")
    timeout_seconds: float = Field(default=30.0, validation_alias="ORCHESTRATOR_TIMEOUT_SECONDS")

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"


class DatabaseSettings(_Group):
    """The backend's own Postgres database (`DATABASE_*`)."""

    database: str | None = Field(default=None, validation_alias="DATABASE_DATABASE")
    username: str = Field(default="backend", validation_alias="DATABASE_USERNAME")
    password: str = Field(default="backend", validation_alias="DATABASE_PASSWORD")
    hostname: str = Field(default="localhost", validation_alias="DATABASE_HOSTNAME")
    port: int = Field(default=5432, validation_alias="DATABASE_PORT")
    # A full SQLAlchemy URL wins over the separate fields (tests, single-machine networks).
    url_override: str | None = Field(default=None, validation_alias="DATABASE_URL")
    pool_size: int = Field(default=5, validation_alias="DATABASE_POOL_SIZE")

    def url(self, org_name: str) -> str:
        if self.url_override:
            return self.url_override
        return URL.create(
            "postgresql+psycopg2",
            username=self.username,
            password=self.password or None,
            host=self.hostname,
            port=self.port,
            database=self.database or f"backend_{org_name}",
        ).render_as_string(hide_password=False)


class CelerySettings(_Group):
    """Broker and task policy (`CELERY_*`)."""

    broker_host: str = Field(default="localhost", validation_alias="CELERY_BROKER_HOST")
    # The reference defaults to 5672 (an AMQP leftover) although the broker is Redis.
    broker_port: int = Field(default=6379, validation_alias="CELERY_BROKER_PORT")
    broker_user: str | None = Field(default=None, validation_alias="CELERY_BROKER_USER")
    broker_password: str | None = Field(default=None, validation_alias="CELERY_BROKER_PASSWORD")
    broker_database: int = Field(default=0, validation_alias="CELERY_BROKER_DATABASE")
    result_database: int = Field(default=1, validation_alias="CELERY_RESULT_DATABASE")
    task_max_retries: int = Field(default=7, validation_alias="CELERY_TASK_MAX_RETRIES")
    task_retry_backoff: int = Field(default=60, validation_alias="CELERY_TASK_RETRY_BACKOFF")
    task_retry_backoff_max: int = Field(default=3840, validation_alias="CELERY_TASK_RETRY_BACKOFF_MAX")
    worker_concurrency: int = Field(default=1, validation_alias="CELERY_WORKER_CONCURRENCY")
    flush_expired_tokens_period: int = Field(
        default=86400,
        ge=0,
        validation_alias=AliasChoices(
            "CELERYBEAT_FLUSH_EXPIRED_TOKENS_TASK_PERIOD", "SCHEDULER_FLUSH_EXPIRED_TOKENS_PERIOD"
        ),
    )

    def redis_url(self, database: int) -> str:
        credentials = ""
        if self.broker_user or self.broker_password:
            credentials = f"{self.broker_user or ''}:{self.broker_password or ''}@"
        return f"redis://{credentials}{self.broker_host}:{self.broker_port}/{database}"

    @property
    def broker_url(self) -> str:
        return self.redis_url(self.broker_database)

    @property
    def result_backend_url(self) -> str:
        return self.redis_url(self.result_database)


class StorageSettings(_Group):
    """Object storage: S3 when `OBJECTSTORE_URL` is set, else a directory under `MEDIA_ROOT`."""

    objectstore_url: str | None = Field(default=None, validation_alias="OBJECTSTORE_URL")
    objectstore_access_key: str | None = Field(default=None, validation_alias="OBJECTSTORE_ACCESSKEY")
    objectstore_secret_key: str | None = Field(default=None, validation_alias="OBJECTSTORE_SECRETKEY")
    objectstore_region: str = Field(default="us-east-1", validation_alias="OBJECTSTORE_REGION")
    media_root: str = Field(default=".local/medias", validation_alias="MEDIA_ROOT")
    servermedias_root: str = Field(default=".local/servermedias", validation_alias="SERVERMEDIAS_ROOT")
    datasample_storage_in_servermedias: EnvBool = Field(
        default=False, validation_alias="ENABLE_DATASAMPLE_STORAGE_IN_SERVERMEDIAS"
    )
    data_upload_max_size: int = Field(default=1024**3, validation_alias="DATA_UPLOAD_MAX_SIZE")
    gzip_models: EnvBool = Field(default=False, validation_alias="GZIP_MODELS")

    @property
    def uses_s3(self) -> bool:
        return bool(self.objectstore_url)


class LoggingSettings(_Group):
    level: str = Field(default="INFO", validation_alias="LOG_LEVEL")
    use_colors: EnvBool = Field(default=False, validation_alias="LOGGING_USE_COLORS")
    json_output: EnvBool = Field(default=True, validation_alias="LOG_JSON")

    @field_validator("level")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()


class MetricsSettings(_Group):
    enabled: EnvBool = Field(default=True, validation_alias="ENABLE_METRICS")
    multiproc_dir: str | None = Field(default=None, validation_alias="PROMETHEUS_MULTIPROC_DIR")
    port: int = Field(default=8001, validation_alias="METRICS_PORT")
    host: str = Field(default="127.0.0.1", validation_alias="METRICS_HOST")


class AuthSettings(_Group):
    secret_key: str = Field(default="", validation_alias="SECRET_KEY")
    expiry_token_enabled: EnvBool = Field(default=True, validation_alias="EXPIRY_TOKEN_ENABLED")
    expiry_token_lifetime_minutes: int = Field(default=1440, validation_alias="EXPIRY_TOKEN_LIFETIME")
    access_token_lifetime_minutes: int = Field(default=1440, validation_alias="ACCESS_TOKEN_LIFETIME")
    refresh_token_lifetime_minutes: int = Field(default=10080, validation_alias="REFRESH_TOKEN_LIFETIME")
    oidc_enabled: EnvBool = Field(default=False, validation_alias="OIDC_ENABLED")


class ComputeSettings(_Group):
    builder_enabled: EnvBool = Field(default=True, validation_alias="BUILDER_ENABLED")
    hostname: str = Field(default="worker-0", validation_alias="HOSTNAME")
    worker_replica_set_name: str | None = Field(default=None, validation_alias="WORKER_REPLICA_SET_NAME")
    image_build_timeout: int = Field(default=3600, validation_alias="IMAGE_BUILD_TIMEOUT")
    # The chart sets COMPUTE_POD_MAX_STARTUP_WAIT_SECONDS, the reference code reads the other: honour both.
    compute_pod_startup_timeout_seconds: int = Field(
        default=300,
        validation_alias=AliasChoices(
            "COMPUTE_POD_STARTUP_TIMEOUT_SECONDS", "COMPUTE_POD_MAX_STARTUP_WAIT_SECONDS"
        ),
    )
    debug_keep_pod_and_dirs: EnvBool = Field(default=False, validation_alias="DEBUG_KEEP_POD_AND_DIRS")
    # The registry of function images (`host[:port]`); none: no registry is used.
    registry: str | None = Field(default=None, validation_alias="REGISTRY")
    registry_scheme: str = Field(default="http", validation_alias="REGISTRY_SCHEME")
    registry_username: str | None = Field(default=None, validation_alias="REGISTRY_USERNAME")
    registry_password: str | None = Field(default=None, validation_alias="REGISTRY_PASSWORD")
    user_image_repository: str = Field(default="substra/user-image", validation_alias="USER_IMAGE_REPOSITORY")

    @property
    def replica_index(self) -> int:
        # StatefulSet ordinal: the suffix after the last dash of the pod name.
        suffix = self.hostname.rsplit("-", 1)[-1]
        return int(suffix) if suffix.isdigit() else 0


class HttpSettings(_Group):
    site_host: str = Field(default="127.0.0.1", validation_alias="SITE_HOST")
    site_port: int = Field(default=8000, validation_alias="SITE_PORT")
    default_domain_override: str | None = Field(default=None, validation_alias="DEFAULT_DOMAIN")
    subpath: str = Field(default="", validation_alias="SUBPATH")
    http_client_timeout_seconds: float = Field(default=30.0, validation_alias="HTTP_CLIENT_TIMEOUT_SECONDS")
    pagination_max_page_size: int = Field(default=10000, validation_alias="PAGINATION_MAX_PAGE_SIZE")

    @property
    def default_domain(self) -> str:
        return (self.default_domain_override or f"http://{self.site_host}:{self.site_port}").rstrip("/")


class ServiceSettings(BaseModel):
    """The groups every backend service reads; each service's settings add the groups of its role."""

    model_config = {"frozen": True}

    organization: OrganizationSettings = Field(default_factory=OrganizationSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)

    @property
    def database_url(self) -> str:
        return self.database.url(self.organization.org_name)
