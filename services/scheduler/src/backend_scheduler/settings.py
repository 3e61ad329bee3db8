"""Settings of the scheduler (Celery beat) and the scheduler-worker.

Periods are in seconds; a period of 0 disables the job. The limits of the jobs that workers run on
their own disk (asset buffer, task directories, function environments) are worker settings
(`backend_worker.settings`); only their periods are here. Every variable is listed in
`services/scheduler/README.md`.
"""

from __future__ import annotations

from backend_common.settings import (
    CelerySettings,
    ComputeSettings,
    OrchestratorSettings,
    ServiceSettings,
)
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

HOUR = 3600
DAY = 24 * HOUR


class BeatSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    # Where beat remembers when each job last ran, so a restart does not re-run everything at once.
    schedule_file: str = Field(
        default=".local/celerybeat-schedule", validation_alias="CELERYBEAT_SCHEDULE_FILE"
    )


class JobSettings(BaseSettings):
    """Schedules and limits of the periodic jobs (`SCHEDULER_<JOB>_PERIOD`, ...)."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    # The flush of expired tokens keeps the reference's CELERYBEAT_FLUSH_EXPIRED_TOKENS_TASK_PERIOD
    # (CelerySettings).
    registry_gc_period: int = Field(default=1800, ge=0, validation_alias="SCHEDULER_REGISTRY_GC_PERIOD")
    redispatch_stale_tasks_period: int = Field(
        default=300, ge=0, validation_alias="SCHEDULER_REDISPATCH_STALE_TASKS_PERIOD"
    )
    dispatch_forgotten_tasks_period: int = Field(
        default=300, ge=0, validation_alias="SCHEDULER_DISPATCH_FORGOTTEN_TASKS_PERIOD"
    )
    tear_down_finished_plans_period: int = Field(
        default=900, ge=0, validation_alias="SCHEDULER_TEAR_DOWN_FINISHED_PLANS_PERIOD"
    )
    purge_published_dispatches_period: int = Field(
        default=DAY, ge=0, validation_alias="SCHEDULER_PURGE_PUBLISHED_DISPATCHES_PERIOD"
    )
    # Broadcast to every worker and builder.
    evict_asset_buffer_period: int = Field(
        default=HOUR, ge=0, validation_alias="SCHEDULER_EVICT_ASSET_BUFFER_PERIOD"
    )
    clean_task_directories_period: int = Field(
        default=HOUR, ge=0, validation_alias="SCHEDULER_CLEAN_TASK_DIRECTORIES_PERIOD"
    )
    collect_function_environments_period: int = Field(
        default=DAY, ge=0, validation_alias="SCHEDULER_COLLECT_FUNCTION_ENVIRONMENTS_PERIOD"
    )

    # A task of this organization EXECUTING with no process holding its execution guard, and
    # neither started nor dispatched for this long, has lost its worker. Keep it above
    # CELERY_TASK_RETRY_BACKOFF_MAX: a task waiting for a retry holds no guard either.
    executing_task_stale_after: int = Field(
        default=2 * HOUR, ge=1, validation_alias="EXECUTING_TASK_STALE_AFTER"
    )
    # Times such a task is sent again before it is failed (INTERNAL error).
    executing_task_max_redispatches: int = Field(
        default=2, ge=0, validation_alias="EXECUTING_TASK_MAX_REDISPATCHES"
    )
    # A runnable task never dispatched is left to the events service this long after it became
    # runnable (its parents ended) before the scheduler dispatches it.
    undispatched_task_grace: int = Field(default=300, ge=0, validation_alias="UNDISPATCHED_TASK_GRACE")
    # A finished plan whose worker mapping is still open this long after its end (and after the last
    # teardown sent) gets its teardown again.
    plan_teardown_grace: int = Field(default=900, ge=0, validation_alias="PLAN_TEARDOWN_GRACE")
    # Images of functions registered more recently than this are kept, used or not.
    registry_gc_grace: int = Field(default=DAY, ge=0, validation_alias="REGISTRY_GC_GRACE")
    # Published outbox rows (`celery_dispatches`) older than this are deleted; their dedupe keys
    # stop guarding against a replay of events that old.
    dispatch_retention: int = Field(default=30 * DAY, ge=HOUR, validation_alias="DISPATCH_RETENTION")
    # Replicas of the worker StatefulSet (`<org>.worker-<i>`), as the events service reads it.
    worker_replicas: int = Field(default=1, ge=1, validation_alias="WORKER_REPLICAS")


class SchedulerSettings(ServiceSettings):
    celery: CelerySettings = Field(default_factory=CelerySettings)
    beat: BeatSettings = Field(default_factory=BeatSettings)
    jobs: JobSettings = Field(default_factory=JobSettings)
    orchestrator: OrchestratorSettings = Field(default_factory=OrchestratorSettings)
    compute: ComputeSettings = Field(default_factory=ComputeSettings)
