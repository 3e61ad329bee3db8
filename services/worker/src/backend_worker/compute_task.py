"""The lifecycle of one compute task on its worker (compute-engine.md 6 to 8).

1. Take the task's execution guard (a database advisory lock: one run at a time across every
   process of the organization) and mark it running for recovery; read the task and its plan: a
   task that is not ours or not ready is dropped, a task whose plan is over is canceled.
2. Move it to EXECUTING (a retry finds it EXECUTING already).
3. Stage the inputs through the asset buffer into the task directory (`prepare_inputs`), obtain the
   function's environment (built here if needed: `download_function` for other organizations'
   functions), write the argument file and run the function (`task_execution`), killing it within
   a second or two if its plan gets canceled.
4. Store and register the outputs (`save_outputs`): models in object storage and on the
   orchestrator, performances on the orchestrator; then DONE.

Failures: the user's (build, execution) become failure reports with their logs and are never
retried; infrastructure errors are retried by the caller with backoff, and become an INTERNAL
report once retries are exhausted. The task directory is always emptied.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import json
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backend_common.db.locks import execution_guard
from backend_common.logging import get_logger
from backend_common.orchestrator import (
    AlreadyExistsError,
    FailedPreconditionError,
    OrchestratorClient,
    OrchestratorError,
    UnknownError,
)
from backend_common.protos import (
    common_pb2,
    computeplan_pb2,
    computetask_pb2,
    event_pb2,
    failure_report_pb2,
    function_pb2,
    model_pb2,
    performance_pb2,
)
from backend_common.storage import MODEL_BUCKET, StoredObject
from structlog.stdlib import BoundLogger

from backend_worker.asset_buffer import AssetKind
from backend_worker.asset_sources import ROLE_MODEL, ROLE_OPENER
from backend_worker.context import WorkerContext
from backend_worker.errors import (
    ExecutionError,
    PermanentError,
    TaskCanceledError,
    TaskNotRunnableError,
    UserCodeError,
    is_retryable,
)
from backend_worker.executor import RunOutcome, RunResult, TaskRun
from backend_worker.failure_reports import register_failure_report
from backend_worker.function_build import ensure_function_image
from backend_worker.locks import file_lock
from backend_worker.metrics import COMPUTE_TASK_DURATION, COMPUTE_TASKS, QUEUE_WAIT
from backend_worker.profiling import (
    STEP_DOWNLOAD_FUNCTION,
    STEP_PREPARE_INPUTS,
    STEP_SAVE_OUTPUTS,
    STEP_TASK_EXECUTION,
    TaskProfiler,
)
from backend_worker.recovery import begin_run, end_run, markers_directory
from backend_worker.stored_files import forget_stored_file, store_file
from backend_worker.substratools_command import (
    FunctionInput,
    FunctionOutput,
    argument_lines,
    write_argument_file,
)
from backend_worker.task_directory import TaskDirectory, link_file, link_tree, plan_directory

logger = get_logger("backend_worker.compute_task")

RUNNABLE_STATUSES = frozenset(
    {computetask_pb2.STATUS_WAITING_FOR_EXECUTOR_SLOT, computetask_pb2.STATUS_EXECUTING}
)


class TaskOutcome(enum.StrEnum):
    DONE = "done"
    FAILED_EXECUTION = "failed_execution"
    FAILED_BUILD = "failed_build"
    FAILED_INTERNAL = "failed_internal"
    CANCELED = "canceled"
    DROPPED = "dropped"
    RETRIED = "retried"


class RetryRequestedError(Exception):
    """A transient failure: the caller retries the task later (the cause is chained)."""


def task_key_from_json(task_json: str | dict[str, Any]) -> str:
    """The key of the ComputeTask the events service serialised (JSON, any field naming)."""
    data = json.loads(task_json) if isinstance(task_json, str) else task_json
    key = data.get("key") if isinstance(data, dict) else None
    if not isinstance(key, str) or not key:
        raise PermanentError("the compute task message has no key")
    return key


def plan_is_terminated(plan: computeplan_pb2.ComputePlan) -> bool:
    return plan.HasField("cancelation_date") or plan.HasField("failure_date")


# --- entry point ----------------------------------------------------------------------------------


def handle_compute_task(
    context: WorkerContext, channel: str, task_key: str, *, task_json: str = "", can_retry: bool = False
) -> TaskOutcome:
    """Run the task to a final outcome, or raise `RetryRequestedError` for a transient failure."""
    started = time.monotonic()
    log = logger.bind(task_key=task_key, channel=channel)
    task_json = task_json or json.dumps({"key": task_key})
    try:
        outcome = _handle(context, channel, task_key, task_json=task_json, can_retry=can_retry, log=log)
    except RetryRequestedError:
        COMPUTE_TASKS.labels(outcome=TaskOutcome.RETRIED.value).inc()
        raise
    COMPUTE_TASKS.labels(outcome=outcome.value).inc()
    if outcome is not TaskOutcome.DROPPED:
        COMPUTE_TASK_DURATION.labels(outcome=outcome.value).observe(time.monotonic() - started)
    log.info("compute task over", outcome=outcome.value, seconds=round(time.monotonic() - started, 3))
    return outcome


def _handle(
    context: WorkerContext, channel: str, task_key: str, *, task_json: str, can_retry: bool, log: BoundLogger
) -> TaskOutcome:
    client = context.orchestrator(channel)
    markers = markers_directory(context.root, context.settings.compute.hostname)
    with execution_guard(context.engine, task_key) as acquired:
        if not acquired:
            log.info("compute task dropped", reason="the task is being executed by another process")
            return TaskOutcome.DROPPED
        # Marked before anything changes on the orchestrator: a worker dying at any point leaves it.
        attempt = begin_run(markers, channel=channel, task_key=task_key, task_json=task_json)
        retrying = False
        try:
            return _outcome(context, client, task_key, attempt=attempt, can_retry=can_retry, log=log)
        except RetryRequestedError:
            retrying = True
            raise
        finally:
            end_run(markers, task_key, retrying=retrying)


def _outcome(
    context: WorkerContext,
    client: OrchestratorClient,
    task_key: str,
    *,
    attempt: int,
    can_retry: bool,
    log: BoundLogger,
) -> TaskOutcome:
    """Run the task; map what happened to an outcome (reporting failures) or to a retry."""
    try:
        _run(context, client, task_key, attempt=attempt, log=log)
        return TaskOutcome.DONE
    except TaskNotRunnableError as reason:
        log.info("compute task dropped", reason=str(reason))
        return TaskOutcome.DROPPED
    except TaskCanceledError as reason:
        log.info("compute task canceled", reason=str(reason))
        return TaskOutcome.CANCELED
    except UserCodeError as error:
        log.info("compute task failed", error=str(error))
        _report_user_failure(context, client, task_key, error, can_retry=can_retry, log=log)
        is_build = error.error_type == failure_report_pb2.ERROR_TYPE_BUILD
        return TaskOutcome.FAILED_BUILD if is_build else TaskOutcome.FAILED_EXECUTION
    except Exception as error:
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            log.warning("disk full: emptying the asset buffer")
            context.buffer.clear()
        if can_retry and is_retryable(error):
            log.warning("compute task will be retried", error=repr(error))
            raise RetryRequestedError(str(error)) from error
        log.exception("compute task failed on an internal error")
        _report_internal_failure(context, client, task_key, log=log)
        return TaskOutcome.FAILED_INTERNAL


def _report_failure(
    context: WorkerContext,
    client: OrchestratorClient,
    task_key: str,
    *,
    error_type: failure_report_pb2.ErrorType.ValueType,
    logs: str | None,
) -> None:
    """Store the logs and register the report; raises when either cannot be done."""

    def register() -> None:
        register_failure_report(
            context,
            client,
            asset_key=task_key,
            asset_type=failure_report_pb2.FAILED_ASSET_COMPUTE_TASK,
            error_type=error_type,
            logs=logs,
        )

    try:
        register()
    except FailedPreconditionError:
        # The orchestrator takes reports of EXECUTING tasks only: one that failed before it was
        # started is started first, so that it ends failed rather than waiting forever.
        if client.get_task(task_key).status != computetask_pb2.STATUS_WAITING_FOR_EXECUTOR_SLOT:
            return
        client.apply_task_action(task_key, computetask_pb2.TASK_ACTION_EXECUTING)
        register()


def _report_user_failure(
    context: WorkerContext,
    client: OrchestratorClient,
    task_key: str,
    error: UserCodeError,
    *,
    can_retry: bool,
    log: BoundLogger,
) -> None:
    """The report of a build or execution failure; if it cannot be filed now, the task is retried
    (and fails again, deterministically) or, without retries left, reported INTERNAL."""
    try:
        _report_failure(context, client, task_key, error_type=error.error_type, logs=error.logs)
    except Exception as report_error:
        if can_retry and is_retryable(report_error):
            log.warning("failure report not filed, the task will be retried", error=repr(report_error))
            raise RetryRequestedError(str(report_error)) from report_error
        log.error("failure report not filed", error=repr(report_error))
        _report_internal_failure(context, client, task_key, log=log)


def _report_internal_failure(
    context: WorkerContext, client: OrchestratorClient, task_key: str, *, log: BoundLogger
) -> None:
    try:
        _report_failure(
            context, client, task_key, error_type=failure_report_pb2.ERROR_TYPE_INTERNAL, logs=None
        )
    except Exception as error:
        log.error("failure report not registered", error=repr(error))


# --- guard and checks -----------------------------------------------------------------------------


def _cancel(client: OrchestratorClient, task_key: str, reason: str) -> None:
    try:
        client.apply_task_action(task_key, computetask_pb2.TASK_ACTION_CANCELED, reason)
    except UnknownError as error:
        logger.info("task not canceled", task_key=task_key, error=str(error))


def _start(
    context: WorkerContext, client: OrchestratorClient, task_key: str
) -> tuple[computetask_pb2.ComputeTask, datetime | None]:
    """The task, checked runnable by this worker and moved to EXECUTING (and when, if by this call)."""
    task = client.get_task(task_key)
    status_name = computetask_pb2.ComputeTaskStatus.Name(task.status)
    if task.worker != context.organization_id:
        raise TaskNotRunnableError(f"the task's worker is {task.worker}")
    if task.status not in RUNNABLE_STATUSES:
        raise TaskNotRunnableError(f"the task is {status_name}")
    plan = client.get_plan(task.compute_plan_key)
    if plan_is_terminated(plan):
        _cancel(client, task_key, "Compute plan is not runnable")
        raise TaskCanceledError("the compute plan is canceled or failed")
    if task.status == computetask_pb2.STATUS_WAITING_FOR_EXECUTOR_SLOT:
        try:
            client.apply_task_action(task_key, computetask_pb2.TASK_ACTION_EXECUTING)
        except UnknownError as error:
            raise TaskNotRunnableError(f"the task cannot be started: {error}") from error
        return task, datetime.now(UTC)
    return task, None


def _observe_queue_wait(client: OrchestratorClient, task_key: str, started: datetime) -> None:
    """Measure, off the task's path, how long the task waited since it became ready to execute.

    Called once the task is over, so that the query does not compete with the function for CPU.
    """

    def measure() -> None:
        try:
            response = client.query_events(
                event_pb2.EventQueryFilter(asset_key=task_key, asset_kind=common_pb2.ASSET_COMPUTE_TASK),
                # Newest first: only DONE and EXECUTING come before the event that made it ready.
                page_size=5,
                sort=common_pb2.DESCENDING,
            )
        except OrchestratorError:
            return
        for event in response.events:
            if event.compute_task.status == computetask_pb2.STATUS_WAITING_FOR_EXECUTOR_SLOT:
                ready = event.timestamp.ToDatetime(tzinfo=UTC)
                QUEUE_WAIT.observe(max((started - ready).total_seconds(), 0.0))
                return

    threading.Thread(target=measure, name=f"queue-wait-{task_key}", daemon=True).start()


# --- the run --------------------------------------------------------------------------------------


def _run(
    context: WorkerContext, client: OrchestratorClient, task_key: str, *, attempt: int, log: BoundLogger
) -> None:
    # Created first, as the reference's profile: its creation time is when the worker took the task.
    profiler = TaskProfiler(context.sessions, task_key, client.channel)
    task, started = _start(context, client, task_key)
    if attempt > context.settings.execution.max_recoveries + 1:
        raise PermanentError(f"the worker running this task was lost {attempt - 1} times")
    plan_dir = plan_directory(context.root, task.compute_plan_key)
    # Shared: tasks of a plan run side by side; the plan teardown takes it exclusively.
    with file_lock(plan_dir.with_name(plan_dir.name + ".lock"), shared=True):
        try:
            _execute(context, client, task, profiler, log)
        finally:
            profiler.flush()
            if started is not None:
                _observe_queue_wait(client, task_key, started)


def _execute(
    context: WorkerContext,
    client: OrchestratorClient,
    task: computetask_pb2.ComputeTask,
    profiler: TaskProfiler,
    log: BoundLogger,
) -> None:
    function = context.function(client, task.function_key)
    task_dir = context.executor.task_directory(task.key)
    try:
        with profiler.step(STEP_PREPARE_INPUTS):
            inputs = stage_inputs(context, client, task, function, task_dir)
        build_started = time.monotonic()
        image, built = ensure_function_image(context, client, function)
        if function.owner != context.organization_id:
            profiler.record(STEP_DOWNLOAD_FUNCTION, time.monotonic() - build_started)
        visible = context.executor.visible_path
        outputs = [
            FunctionOutput(identifier, visible(task_dir.output(identifier)))
            for identifier in sorted(task.outputs)
        ]
        write_argument_file(task_dir.arguments_file, argument_lines(task.rank, inputs, outputs))
        run = TaskRun(
            run_id=task.key,
            image=image,
            arguments=(f"@{visible(task_dir.arguments_file)}",),
            directory=task_dir,
            limits=context.limits,
        )
        with profiler.step(STEP_TASK_EXECUTION):
            result = supervise(context, client, task, run)
        _check_result(result, task_dir.log_file, context)
        with profiler.step(STEP_SAVE_OUTPUTS):
            save_outputs(context, client, task, function, task_dir)
        try:
            client.apply_task_action(task.key, computetask_pb2.TASK_ACTION_DONE, "task completed")
        except UnknownError as error:
            # A retry after an interrupted end: the task may be DONE already.
            if "STATUS_DONE" not in str(error):
                raise
        log.debug("task log", output=_read_log(task_dir.log_file, 4000), built_environment=built)
    finally:
        # Empties the task directory.
        context.executor.cleanup(task.key)


# --- inputs ---------------------------------------------------------------------------------------


def stage_inputs(
    context: WorkerContext,
    client: OrchestratorClient,
    task: computetask_pb2.ComputeTask,
    function: function_pb2.Function,
    task_dir: TaskDirectory,
) -> list[FunctionInput]:
    """Fetch every input into the asset buffer (verified) and link it into the task directory.

    The list follows `GetTaskInputAssets`: task-input order, then asset position.
    """
    assets = client.get_task_input_assets(task.key)
    visible = context.executor.visible_path
    inputs: list[FunctionInput] = []
    with context.buffer.in_use():
        for asset in assets:
            declared = function.inputs.get(asset.identifier)
            multiple = bool(declared.multiple) if declared is not None else False
            target = _stage_input(context, client.channel, asset, task_dir)
            inputs.append(FunctionInput(asset.identifier, visible(target), multiple))
    context.buffer.evict()
    return inputs


def _stage_input(
    context: WorkerContext,
    channel: str,
    asset: computetask_pb2.ComputeTaskInputAsset,
    task_dir: TaskDirectory,
) -> Path:
    """Put one input asset in the buffer if needed, link it into the task; returns where it is."""
    buffer, sources = context.buffer, context.sources
    kind = asset.WhichOneof("asset")
    if kind == "model":
        model = asset.model
        if not model.HasField("address") or not model.address.storage_address:
            raise PermanentError(f"input model {model.key} has been disabled")

        def fetch_model(destination: Path) -> None:
            sources.fetch_file(
                asset_key=model.key,
                role=ROLE_MODEL,
                owner=model.owner,
                address=model.address.storage_address,
                channel=channel,
                checksum=model.address.checksum,
                destination=destination,
                salt=model.compute_task_key.encode(),
            )

        target = task_dir.model(model.key)
        link_file(buffer.get(AssetKind.MODEL, model.key, fetch_model), target)
        return target
    if kind == "data_manager":
        manager = asset.data_manager

        def fetch_opener(destination: Path) -> None:
            sources.fetch_file(
                asset_key=manager.key,
                role=ROLE_OPENER,
                owner=manager.owner,
                address=manager.opener.storage_address,
                channel=channel,
                checksum=manager.opener.checksum,
                destination=destination,
            )

        target = task_dir.opener(manager.key)
        link_file(buffer.get(AssetKind.OPENER, manager.key, fetch_opener), target)
        return target
    if kind == "data_sample":
        sample = asset.data_sample
        # Extracted samples may be larger than their upload, within reason.
        max_bytes = context.settings.storage.data_upload_max_size * 4

        def fetch_sample(destination: Path) -> None:
            sources.fetch_data_sample(sample.key, sample.checksum, destination, max_bytes=max_bytes)

        target = task_dir.data_sample(sample.key)
        link_tree(buffer.get(AssetKind.DATA_SAMPLE, sample.key, fetch_sample), target)
        return target
    raise PermanentError(f"unsupported input asset {kind!r} for {asset.identifier!r}")


# --- execution ------------------------------------------------------------------------------------


def supervise(
    context: WorkerContext, client: OrchestratorClient, task: computetask_pb2.ComputeTask, run: TaskRun
) -> RunResult:
    """Run the function to its end, killing it if its compute plan is canceled meanwhile."""
    execution = context.executor.start(run)
    poll = context.settings.execution.cancel_poll_seconds
    while True:
        result = execution.wait(poll)
        if result is not None:
            break
        try:
            plan = client.get_plan(task.compute_plan_key)
        except OrchestratorError as error:
            logger.warning("cannot check the compute plan", task_key=task.key, error=str(error))
            continue
        if plan.HasField("cancelation_date"):
            execution.cancel()
            execution.wait()
            _cancel(client, task.key, "Compute plan canceled")
            raise TaskCanceledError("the compute plan was canceled while the task ran")
    if result.outcome is RunOutcome.CANCELED:
        _cancel(client, task.key, "Task execution canceled")
        raise TaskCanceledError("the task's execution was canceled")
    return result


def _read_log(path: Path, limit: int | None = None) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    if limit is not None and len(data) > limit:
        data = data[-limit:]
    return data.decode("utf-8", errors="replace")


def _check_result(result: RunResult, log_file: Path, context: WorkerContext) -> None:
    if result.succeeded:
        return
    logs = _read_log(log_file)
    if result.outcome is RunOutcome.TIMED_OUT:
        limit = context.settings.execution.task_timeout_seconds
        logs += f"\nThe task exceeded its time limit of {limit:.0f} s and was stopped.\n"
    elif result.exit_code is not None and result.exit_code < 0:
        logs += f"\nThe function was killed by signal {-result.exit_code}.\n"
    raise ExecutionError(f"the function exited with status {result.exit_code}", logs=logs)


# --- outputs --------------------------------------------------------------------------------------


def _output_file(task_dir: TaskDirectory, identifier: str, logs: Path) -> Path:
    path = task_dir.output(identifier)
    if not path.is_file():
        raise ExecutionError(
            f"output {identifier!r} was not written",
            logs=_read_log(logs) + f"\nThe function did not write its output {identifier!r}.\n",
        )
    return path


def save_outputs(
    context: WorkerContext,
    client: OrchestratorClient,
    task: computetask_pb2.ComputeTask,
    function: function_pb2.Function,
    task_dir: TaskDirectory,
) -> None:
    """Register performances, store and register models, keep models in the buffer for later tasks."""
    models: list[model_pb2.NewModel] = []
    stored: list[tuple[StoredObject, Path]] = []
    for identifier in sorted(task.outputs):
        declared = function.outputs.get(identifier)
        path = _output_file(task_dir, identifier, task_dir.log_file)
        if declared is not None and declared.kind == common_pb2.ASSET_PERFORMANCE:
            try:
                value = float(json.loads(path.read_text())["all"])
            except (ValueError, KeyError, TypeError) as error:
                raise ExecutionError(
                    f"performance {identifier!r} is not valid",
                    logs=_read_log(task_dir.log_file)
                    + f"\nInvalid performance file {identifier!r}: {error}\n",
                ) from error
            performance = performance_pb2.NewPerformance(
                compute_task_key=task.key, compute_task_output_identifier=identifier, performance_value=value
            )
            # Already there when an attempt was interrupted after registering it.
            with contextlib.suppress(AlreadyExistsError):
                client.register_performance(performance)
            continue
        key = str(uuid.uuid4())
        object_key = f"models/{key}/model"
        with path.open("rb") as file:
            stored_object = store_file(
                context.storage,
                context.sessions,
                asset_key=key,
                role=ROLE_MODEL,
                bucket=MODEL_BUCKET,
                object_key=object_key,
                content=file,
                filename="model",
                checksum_salt=task.key.encode(),
            )
        stored.append((stored_object, path))
        models.append(
            model_pb2.NewModel(
                key=key,
                compute_task_key=task.key,
                compute_task_output_identifier=identifier,
                address=common_pb2.Addressable(
                    checksum=stored_object.sha256,
                    storage_address=f"{context.default_domain}/model/{key}/file/",
                ),
            )
        )
    if not models:
        return
    try:
        client.register_models(models)
    except BaseException as error:
        # Nothing of ours refers to the files any more.
        for model in models:
            forget_stored_file(context.sessions, model.key, ROLE_MODEL)
        for stored_object, _ in stored:
            context.storage.delete(stored_object.bucket, stored_object.key)
        if isinstance(error, AlreadyExistsError):
            return  # registered by an attempt interrupted after it
        raise
    for model, (_, path) in zip(models, stored, strict=True):
        context.buffer.add_file(AssetKind.MODEL, model.key, path)
