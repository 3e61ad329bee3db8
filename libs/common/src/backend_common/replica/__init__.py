"""The orchestrator → replica mapping, shared by the events service and the REST server.

Plain functions over a SQLAlchemy session, each an idempotent upsert in the caller's transaction:
`apply_event` mirrors one orchestrator event (compute-engine 2.2); the `store_*` functions let the
REST server store an asset it has just registered so its creator reads it at once; plan status and
dates follow rest-api 5.4 (`recompute_plan`).
"""

from backend_common.replica.compute_plans import (
    EXTERNAL_CREATOR,
    FINAL_TASK_STATUSES,
    PlanState,
    TaskStatistics,
    is_plan_running,
    mark_plan_failed,
    plan_state,
    recompute_plan,
    running_plans,
    store_compute_plan,
    task_statistics,
    update_compute_plan,
)
from backend_common.replica.compute_tasks import (
    StatusChange,
    store_compute_task,
    store_compute_tasks,
    update_compute_task_status,
    update_compute_task_statuses,
)
from backend_common.replica.cursor import load_cursor, save_cursor
from backend_common.replica.datasets import (
    replace_data_sample_links,
    replace_data_samples_links,
    store_data_manager,
    store_data_sample,
    store_data_samples,
    update_data_manager,
)
from backend_common.replica.events import (
    ReplicaChange,
    apply_event,
    apply_events,
    asset_kind_name,
    event_kind_name,
    recompute_plans,
)
from backend_common.replica.failure_reports import store_failure_report
from backend_common.replica.functions import (
    archive_checksums_in_use,
    known_archive_checksums,
    store_function,
    store_function_profiling_step,
    update_function,
)
from backend_common.replica.organizations import store_organization
from backend_common.replica.outputs import disable_model, store_model, store_output_asset, store_performance

__all__ = [
    "EXTERNAL_CREATOR",
    "FINAL_TASK_STATUSES",
    "PlanState",
    "ReplicaChange",
    "StatusChange",
    "TaskStatistics",
    "apply_event",
    "apply_events",
    "archive_checksums_in_use",
    "asset_kind_name",
    "disable_model",
    "event_kind_name",
    "is_plan_running",
    "known_archive_checksums",
    "load_cursor",
    "mark_plan_failed",
    "plan_state",
    "recompute_plan",
    "recompute_plans",
    "replace_data_sample_links",
    "replace_data_samples_links",
    "running_plans",
    "save_cursor",
    "store_compute_plan",
    "store_compute_task",
    "store_compute_tasks",
    "store_data_manager",
    "store_data_sample",
    "store_data_samples",
    "store_failure_report",
    "store_function",
    "store_function_profiling_step",
    "store_model",
    "store_organization",
    "store_output_asset",
    "store_performance",
    "task_statistics",
    "update_compute_plan",
    "update_compute_task_status",
    "update_compute_task_statuses",
    "update_data_manager",
    "update_function",
]
