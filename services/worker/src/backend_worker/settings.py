"""Settings of the worker (compute tasks) and builder (function environments) processes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal

from backend_common.settings import (
    CelerySettings,
    ComputeSettings,
    EnvBool,
    HttpSettings,
    OrchestratorSettings,
    ServiceSettings,
    StorageSettings,
)
from pydantic import AliasChoices, BeforeValidator, Field
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

GIB = 1024**3
DAY = 86400.0


def _split_words(value: object) -> object:
    # Requirement lists come from one environment variable: comma- or whitespace-separated.
    if isinstance(value, str):
        return [word for word in value.replace(",", " ").split() if word]
    return value


def default_python() -> str:
    # The interpreter under the worker's own virtualenv: function environments must have the
    # Python minor version of the clients that pickled their code (compute-engine.md 12).
    return getattr(sys, "_base_executable", None) or sys.executable


class ExecutionSettings(BaseSettings):
    """How this worker builds function environments and runs compute tasks."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    # The reference's SUBTUPLE_DIR; default `<MEDIA_ROOT>/subtuple`.
    root_dir: str | None = Field(default=None, validation_alias="SUBTUPLE_DIR")
    executor: Literal["local"] = Field(default="local", validation_alias="COMPUTE_EXECUTOR")
    sandbox: Literal["bubblewrap", "none"] = Field(default="bubblewrap", validation_alias="COMPUTE_SANDBOX")
    # Running user code without isolation must be a deliberate choice (development machines).
    allow_unsandboxed: EnvBool = Field(default=False, validation_alias="COMPUTE_ALLOW_UNSANDBOXED")
    bwrap_path: str = Field(default="bwrap", validation_alias="BWRAP_PATH")
    task_timeout_seconds: float = Field(default=86400.0, validation_alias="COMPUTE_TASK_TIMEOUT_SECONDS")
    # 0 disables a limit.
    task_memory_bytes: int = Field(default=8 * GIB, validation_alias="COMPUTE_TASK_MEMORY_LIMIT_BYTES")
    task_cpu_seconds: int = Field(default=172800, validation_alias="COMPUTE_TASK_CPU_LIMIT_SECONDS")
    task_max_open_files: int = Field(default=4096, validation_alias="COMPUTE_TASK_MAX_OPEN_FILES")
    task_log_max_bytes: int = Field(default=10 * 1024 * 1024, validation_alias="COMPUTE_TASK_LOG_MAX_BYTES")
    cancel_poll_seconds: float = Field(default=0.5, validation_alias="COMPUTE_CANCEL_POLL_SECONDS")
    # Start the next task's interpreter while waiting for it (local executor).
    warm_start: EnvBool = Field(default=True, validation_alias="COMPUTE_WARM_START")
    # A task whose worker died this many times while running it is failed instead of re-run.
    max_recoveries: int = Field(default=2, validation_alias="COMPUTE_TASK_MAX_RECOVERIES")
    asset_buffer_max_bytes: int = Field(
        default=20 * GIB,
        validation_alias=AliasChoices("ASSET_BUFFER_MAX_SIZE_BYTES", "ASSET_BUFFER_MAX_BYTES"),
    )
    # Periodic maintenance (run on the scheduler's broadcasts): ages in seconds, 0 disables what
    # the age limits. Asset buffer entries unused for longer are evicted.
    asset_buffer_max_age: float = Field(default=7 * DAY, ge=0, validation_alias="ASSET_BUFFER_MAX_AGE")
    # Plan directories of plans no longer running, and build scratch directories, older than this
    # are removed (task directories of dead processes always are).
    task_dir_max_age: float = Field(default=DAY, ge=0, validation_alias="TASK_DIR_MAX_AGE")
    # Function environments unused for longer, whose function no running plan uses, are removed.
    function_environment_max_age: float = Field(
        default=7 * DAY, ge=0, validation_alias="FUNCTION_ENVIRONMENT_MAX_AGE"
    )
    python: str = Field(default_factory=default_python, validation_alias="FUNCTION_PYTHON")
    # Where the shared base environment lives; default `<root>/environments/base-<hash>`.
    base_environment: str | None = Field(default=None, validation_alias="FUNCTION_BASE_ENVIRONMENT")
    base_requirements: Annotated[list[str], NoDecode, BeforeValidator(_split_words)] = Field(
        default_factory=lambda: ["substratools==1.0.0"], validation_alias="FUNCTION_BASE_REQUIREMENTS"
    )
    pip_cache_dir: str | None = Field(default=None, validation_alias="FUNCTION_PIP_CACHE_DIR")
    archive_max_unpacked_bytes: int = Field(
        default=10 * GIB, validation_alias="FUNCTION_ARCHIVE_MAX_UNPACKED_BYTES"
    )


class WorkerSettings(ServiceSettings):
    orchestrator: OrchestratorSettings = Field(default_factory=OrchestratorSettings)
    celery: CelerySettings = Field(default_factory=CelerySettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    compute: ComputeSettings = Field(default_factory=ComputeSettings)
    execution: ExecutionSettings = Field(default_factory=ExecutionSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)

    @property
    def root_dir(self) -> Path:
        """The worker's working area (SUBTUPLE_DIR): asset buffer, environments, task directories."""
        if self.execution.root_dir:
            return Path(self.execution.root_dir).absolute()
        return (Path(self.storage.media_root) / "subtuple").absolute()
