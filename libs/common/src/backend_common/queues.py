"""Celery queue and task names shared by the services (`compute-engine.md`, sections 3.2 and 3.3).

The names are the reference backend's, so monitoring dashboards and the chart's worker commands keep
working. Everything is a plain function of the organization name (`ORG_NAME`) and of the replica
index (the StatefulSet ordinal).
"""

from __future__ import annotations

from typing import Literal

ProcessKind = Literal["worker", "builder", "scheduler-worker"]
PROCESS_KINDS: tuple[ProcessKind, ...] = ("worker", "builder", "scheduler-worker")

# Queues that do not depend on the organization.
DEFAULT_QUEUE = "celery"
SCHEDULER_QUEUE = "scheduler"

# Task names of the reference backend (section 3.3).
BUILD_IMAGE_TASK = "builder.tasks.tasks_build_image.build_image"
SAVE_IMAGE_TASK = "substrapp.tasks.tasks_save_image.save_image_task"
COMPUTE_TASK_TASK = "substrapp.tasks.tasks_compute_task.compute_task"
DELETE_CP_POD_AND_DIRS_TASK = "substrapp.tasks.tasks_compute_plan.delete_cp_pod_and_dirs"
REMOVE_TRANSIENT_OUTPUTS_TASK = "substrapp.tasks.tasks_outputs.remove_transient_outputs_from_orc"
REMOVE_INTERMEDIARY_MODELS_FROM_BUFFER_TASK = (
    "substrapp.tasks.tasks_remove_intermediary_models.remove_intermediary_models_from_buffer"
)
REMOVE_INTERMEDIARY_MODEL_FROM_DB_TASK = (
    "substrapp.tasks.tasks_remove_intermediary_models.remove_intermediary_model_from_db"
)
STORE_ASSET_FAILURE_REPORT_TASK = "substrapp.tasks.tasks_asset_failure_report.store_asset_failure_report"
DOCKER_REGISTRY_GARBAGE_COLLECTOR_TASK = (
    "substrapp.tasks.tasks_docker_registry.docker_registry_garbage_collector_task"
)
FLUSH_EXPIRED_TOKENS_TASK = "users.tasks.flush_expired_tokens"
# Periodic jobs of this backend that the reference does not have (services/scheduler/README.md).
REDISPATCH_STALE_TASKS_TASK = "substrapp.tasks.tasks_reconcile.redispatch_stale_tasks"
DISPATCH_FORGOTTEN_TASKS_TASK = "substrapp.tasks.tasks_reconcile.dispatch_forgotten_tasks"
TEAR_DOWN_FINISHED_PLANS_TASK = "substrapp.tasks.tasks_reconcile.tear_down_finished_plans"
PURGE_PUBLISHED_DISPATCHES_TASK = "substrapp.tasks.tasks_maintenance.purge_published_dispatches"
# Sent by beat to every worker and builder (`<org>.broadcast`): maintenance of their own disk.
EVICT_ASSET_BUFFER_TASK = "substrapp.tasks.tasks_maintenance.evict_asset_buffer"
CLEAN_TASK_DIRECTORIES_TASK = "substrapp.tasks.tasks_maintenance.clean_task_directories"
COLLECT_FUNCTION_ENVIRONMENTS_TASK = "substrapp.tasks.tasks_maintenance.collect_function_environments"
WORKER_MAINTENANCE_TASKS = (
    EVICT_ASSET_BUFFER_TASK,
    CLEAN_TASK_DIRECTORIES_TASK,
    COLLECT_FUNCTION_ENVIRONMENTS_TASK,
)


def organization_queue(org_name: str) -> str:
    """`<org>`: consumed by the scheduler-worker."""
    return org_name


def worker_queue(org_name: str) -> str:
    """`<org>.worker`: generic work, consumed by every worker replica."""
    return f"{org_name}.worker"


def worker_replica_queue(org_name: str, replica_index: int) -> str:
    """`<org>.worker-<i>`: work pinned to one worker replica (compute tasks of a plan)."""
    return f"{org_name}.worker-{replica_index}"


def broadcast_queue(org_name: str) -> str:
    """`<org>.broadcast`: fanout, every worker and builder gets a copy."""
    return f"{org_name}.broadcast"


def builder_queue(org_name: str) -> str:
    """`<org>.builder`: image builds, consumed by every builder replica."""
    return f"{org_name}.builder"


def builder_replica_queue(org_name: str, replica_index: int) -> str:
    """`<org>.builder-<i>`: work pinned to one builder replica."""
    return f"{org_name}.builder-{replica_index}"


def worker_consumed_queues(org_name: str, replica_index: int) -> list[str]:
    return [
        worker_queue(org_name),
        worker_replica_queue(org_name, replica_index),
        broadcast_queue(org_name),
        DEFAULT_QUEUE,
    ]


def builder_consumed_queues(org_name: str, replica_index: int) -> list[str]:
    return [
        builder_queue(org_name),
        builder_replica_queue(org_name, replica_index),
        broadcast_queue(org_name),
    ]


def scheduler_worker_consumed_queues(org_name: str) -> list[str]:
    return [organization_queue(org_name), SCHEDULER_QUEUE, DEFAULT_QUEUE]


def worker_hostname(kind: ProcessKind, org_name: str, replica_index: int) -> str:
    """The `--hostname` of a Celery process (the scheduler-worker is not replicated)."""
    if kind == "scheduler-worker":
        return f"{org_name}.scheduler"
    return f"{org_name}.{kind}-{replica_index}"


def static_task_routes(org_name: str) -> dict[str, str]:
    """Task name → queue for the tasks whose queue does not depend on a replica.

    `compute_task` and `delete_cp_pod_and_dirs` are absent: their `<org>.worker-<i>` queue is chosen
    per compute plan when they are sent.
    """
    return {
        BUILD_IMAGE_TASK: builder_queue(org_name),
        SAVE_IMAGE_TASK: worker_queue(org_name),
        REMOVE_TRANSIENT_OUTPUTS_TASK: worker_queue(org_name),
        REMOVE_INTERMEDIARY_MODELS_FROM_BUFFER_TASK: broadcast_queue(org_name),
        REMOVE_INTERMEDIARY_MODEL_FROM_DB_TASK: worker_queue(org_name),
        STORE_ASSET_FAILURE_REPORT_TASK: worker_queue(org_name),
        DOCKER_REGISTRY_GARBAGE_COLLECTOR_TASK: SCHEDULER_QUEUE,
        FLUSH_EXPIRED_TOKENS_TASK: SCHEDULER_QUEUE,
        REDISPATCH_STALE_TASKS_TASK: SCHEDULER_QUEUE,
        DISPATCH_FORGOTTEN_TASKS_TASK: SCHEDULER_QUEUE,
        TEAR_DOWN_FINISHED_PLANS_TASK: SCHEDULER_QUEUE,
        PURGE_PUBLISHED_DISPATCHES_TASK: SCHEDULER_QUEUE,
        **{name: broadcast_queue(org_name) for name in WORKER_MAINTENANCE_TASKS},
    }
