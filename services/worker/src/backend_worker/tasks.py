"""The Celery tasks of the worker and builder, under the reference's task names (compute-engine.md 3.3).

Messages are acknowledged after the work (`acks_late`) and put back if the process dies
(`reject_on_worker_lost`). Transient failures are retried with exponential backoff and jitter
(`CELERY_TASK_RETRY_BACKOFF`, capped at `CELERY_TASK_RETRY_BACKOFF_MAX`, at most
`CELERY_TASK_MAX_RETRIES` times); failures of the user's code never are.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from backend_common import queues
from backend_common.logging import get_logger
from backend_common.protos import failure_report_pb2
from celery import Celery, Task
from celery.utils.time import get_exponential_backoff_interval

from backend_worker.cleanup import (
    disable_transient_outputs,
    remove_model_from_buffer,
    remove_model_from_storage,
    teardown_compute_plan,
)
from backend_worker.compute_task import RetryRequestedError, handle_compute_task, task_key_from_json
from backend_worker.context import WorkerContext, process_context
from backend_worker.errors import is_retryable
from backend_worker.failure_reports import register_failure_report
from backend_worker.function_build import build_function
from backend_worker.maintenance import (
    CLEAN_TASK_DIRECTORIES,
    COLLECT_FUNCTION_ENVIRONMENTS,
    EVICT_ASSET_BUFFER,
    run_maintenance,
)
from backend_worker.settings import WorkerSettings

logger = get_logger("backend_worker.tasks")


def _as_json(value: str | dict[str, Any]) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def retry_countdown(settings: WorkerSettings, retries: int) -> int:
    celery = settings.celery
    return int(
        get_exponential_backoff_interval(
            factor=celery.task_retry_backoff,
            retries=retries,
            maximum=celery.task_retry_backoff_max,
            full_jitter=True,
        )
    )


def _output_pairs(outputs: Iterable[Any]) -> list[tuple[str, str]]:
    pairs = []
    for output in outputs:
        if isinstance(output, dict):
            task_key = output.get("compute_task_key") or output.get("task_key")
            identifier = output.get("compute_task_output_identifier") or output.get("identifier")
        else:
            task_key, identifier = output
        pairs.append((str(task_key), str(identifier)))
    return pairs


def register_tasks(app: Celery, settings: WorkerSettings) -> dict[str, Task]:
    """Register every task on `app`; they share one `WorkerContext` per process."""

    def context() -> WorkerContext:
        return process_context(settings)

    task_options: dict[str, Any] = {
        "bind": True,
        "acks_late": True,
        "reject_on_worker_lost": True,
        "max_retries": settings.celery.task_max_retries,
    }

    @app.task(name=queues.COMPUTE_TASK_TASK, **task_options)  # type: ignore[untyped-decorator]
    def compute_task(
        self: Task, channel_name: str, task: str | dict[str, Any], compute_plan_key: str | None = None
    ) -> str:
        task_json = _as_json(task)
        task_key = task_key_from_json(task_json)
        try:
            outcome = handle_compute_task(
                context(),
                channel_name,
                task_key,
                task_json=task_json,
                can_retry=self.request.retries < self.max_retries,
            )
        except RetryRequestedError as error:
            raise self.retry(exc=error, countdown=retry_countdown(settings, self.request.retries)) from error
        return outcome.value

    @app.task(name=queues.BUILD_IMAGE_TASK, **task_options)  # type: ignore[untyped-decorator]
    def build_image(self: Task, channel_name: str, function_serialized: str | dict[str, Any]) -> str:
        function_key = task_key_from_json(_as_json(function_serialized))
        try:
            return build_function(context(), channel_name, function_key).value
        except Exception as error:
            if is_retryable(error) and self.request.retries < self.max_retries:
                logger.warning("function build will be retried", function_key=function_key, error=repr(error))
                raise self.retry(
                    exc=error, countdown=retry_countdown(settings, self.request.retries)
                ) from error
            logger.exception("function build failed on an internal error", function_key=function_key)
            # The reference reports every final build failure as a BUILD error with what it knows.
            try:
                register_failure_report(
                    context(),
                    context().orchestrator(channel_name),
                    asset_key=function_key,
                    asset_type=failure_report_pb2.FAILED_ASSET_FUNCTION,
                    error_type=failure_report_pb2.ERROR_TYPE_BUILD,
                    logs=f"The function could not be built: {error!r}\n",
                )
            except Exception as report_error:
                logger.error(
                    "build failure report not registered", function_key=function_key, error=repr(report_error)
                )
            return "failed"

    @app.task(name=queues.SAVE_IMAGE_TASK, bind=True)  # type: ignore[untyped-decorator]
    def save_image_task(self: Task, *args: Any, **kwargs: Any) -> None:
        # Chained after build_image by the reference: environments stay on the host that built them
        # and the build already marked the function READY, so there is nothing to save.
        return None

    @app.task(name=queues.DELETE_CP_POD_AND_DIRS_TASK, **task_options)  # type: ignore[untyped-decorator]
    def delete_cp_pod_and_dirs(self: Task, channel_name: str, compute_plan_key: str) -> bool:
        return teardown_compute_plan(context(), channel_name, compute_plan_key)

    @app.task(name=queues.REMOVE_INTERMEDIARY_MODELS_FROM_BUFFER_TASK, bind=True)  # type: ignore[untyped-decorator]
    def remove_intermediary_models_from_buffer(self: Task, model_key: str | list[str]) -> None:
        for key in [model_key] if isinstance(model_key, str) else model_key:
            remove_model_from_buffer(context(), key)

    @app.task(name=queues.REMOVE_INTERMEDIARY_MODEL_FROM_DB_TASK, **task_options)  # type: ignore[untyped-decorator]
    def remove_intermediary_model_from_db(self: Task, channel_name: str, model_key: str) -> bool:
        return remove_model_from_storage(context(), model_key)

    @app.task(name=queues.REMOVE_TRANSIENT_OUTPUTS_TASK, **task_options)  # type: ignore[untyped-decorator]
    def remove_transient_outputs_from_orc(self: Task, channel_name: str, outputs: list[Any]) -> int:
        return disable_transient_outputs(context(), channel_name, _output_pairs(outputs))

    # Maintenance of this host's disk, broadcast by the scheduler's beat (backend_worker.maintenance).
    @app.task(name=queues.EVICT_ASSET_BUFFER_TASK, bind=True)  # type: ignore[untyped-decorator]
    def evict_asset_buffer(self: Task) -> int:
        return run_maintenance(context(), EVICT_ASSET_BUFFER).items

    @app.task(name=queues.CLEAN_TASK_DIRECTORIES_TASK, bind=True)  # type: ignore[untyped-decorator]
    def clean_task_directories(self: Task) -> int:
        return run_maintenance(context(), CLEAN_TASK_DIRECTORIES).items

    @app.task(name=queues.COLLECT_FUNCTION_ENVIRONMENTS_TASK, bind=True)  # type: ignore[untyped-decorator]
    def collect_function_environments(self: Task) -> int:
        return run_maintenance(context(), COLLECT_FUNCTION_ENVIRONMENTS).items

    registered: dict[str, Callable[..., Any]] = {
        queues.COMPUTE_TASK_TASK: compute_task,
        queues.BUILD_IMAGE_TASK: build_image,
        queues.SAVE_IMAGE_TASK: save_image_task,
        queues.DELETE_CP_POD_AND_DIRS_TASK: delete_cp_pod_and_dirs,
        queues.REMOVE_INTERMEDIARY_MODELS_FROM_BUFFER_TASK: remove_intermediary_models_from_buffer,
        queues.REMOVE_INTERMEDIARY_MODEL_FROM_DB_TASK: remove_intermediary_model_from_db,
        queues.REMOVE_TRANSIENT_OUTPUTS_TASK: remove_transient_outputs_from_orc,
        queues.EVICT_ASSET_BUFFER_TASK: evict_asset_buffer,
        queues.CLEAN_TASK_DIRECTORIES_TASK: clean_task_directories,
        queues.COLLECT_FUNCTION_ENVIRONMENTS_TASK: collect_function_environments,
    }
    return {name: app.tasks[name] for name in registered}
