"""Prometheus metrics of the worker and builder (`substra_worker_*`)."""

from __future__ import annotations

from backend_common.metrics import counter, histogram

_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400)

# outcome: done, failed_execution, failed_build, failed_internal, canceled, dropped, retried.
COMPUTE_TASKS = counter(
    "worker_compute_tasks_total", "Compute tasks handled by this worker, by outcome.", ["outcome"]
)
COMPUTE_TASK_DURATION = histogram(
    "worker_compute_task_duration_seconds",
    "Wall time of a compute task on the worker, from its start to its final status.",
    ["outcome"],
    buckets=_DURATION_BUCKETS,
)
COMPUTE_TASK_STEP_DURATION = histogram(
    "worker_compute_task_step_duration_seconds",
    "Duration of the profiled steps of compute tasks (prepare_inputs, task_execution, ...).",
    ["step"],
    buckets=_DURATION_BUCKETS,
)
QUEUE_WAIT = histogram(
    "worker_compute_task_queue_wait_seconds",
    "Time between a task becoming ready to execute (orchestrator event) and its start on this worker.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
# outcome: built, reused, failed, canceled, dropped.
FUNCTION_BUILDS = counter(
    "worker_function_builds_total", "Function environment builds, by outcome.", ["outcome"]
)
FUNCTION_BUILD_DURATION = histogram(
    "worker_function_build_duration_seconds",
    "Duration of function environment builds (reused environments included).",
    ["outcome"],
    buckets=_DURATION_BUCKETS,
)
