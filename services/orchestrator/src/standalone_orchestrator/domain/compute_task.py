"""Compute tasks: batch registration, reads, input assets, transient outputs.

Registration (`orchestrator-grpc.md` 9.7) handles a whole batch in one transaction with a fixed
number of queries: everything the batch refers to (plans, functions, data managers, samples,
models, stored parents) is loaded up front, the tasks are then built in topological order
against those caches, and written with three bulk inserts (tasks, parent links, events).
The checks run in the reference's order, so the first error reported is the reference's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

from backend_common.protos import (
    common_pb2,
    computeplan_pb2,
    computetask_pb2,
    datamanager_pb2,
    datasample_pb2,
    event_pb2,
    function_pb2,
    model_pb2,
)

from standalone_orchestrator.db.tables import compute_tasks as table
from standalone_orchestrator.domain import pagination, task_state
from standalone_orchestrator.domain.assets import (
    COMPUTE_PLAN,
    COMPUTE_TASK,
    DATA_MANAGER,
    DATA_SAMPLE,
    FUNCTION,
    MODEL,
    ORGANIZATION,
    ensure_new_keys,
)
from standalone_orchestrator.domain.context import Request
from standalone_orchestrator.domain.model import disable_models
from standalone_orchestrator.domain.permissions import (
    can_process,
    create_permission,
    create_permissions,
    union,
)
from standalone_orchestrator.domain.task_state import Status, StatusValue
from standalone_orchestrator.domain.validation import Checker
from standalone_orchestrator.errors import (
    ErrorCode,
    OrchestratorError,
    bad_request,
    internal,
    invalid_asset,
    not_found,
    permission_denied,
    unimplemented,
)
from standalone_orchestrator.store import compute_plans as plan_store
from standalone_orchestrator.store import compute_tasks as store
from standalone_orchestrator.store import data_managers as manager_store
from standalone_orchestrator.store import data_samples as sample_store
from standalone_orchestrator.store import functions as function_store
from standalone_orchestrator.store import models as model_store

AssetKind = common_pb2.AssetKind
AssetKindValue: TypeAlias = common_pb2.AssetKind.ValueType
FunctionStatus = function_pb2.FunctionStatus

# Statuses in which a task's inputs are resolved (GetTaskInputAssets).
_INPUTS_DEFINED = frozenset(
    {Status.STATUS_EXECUTING, Status.STATUS_WAITING_FOR_EXECUTOR_SLOT, Status.STATUS_FAILED}
)

_INITIAL_STATUS_BY_FUNCTION: dict[FunctionStatus.ValueType, StatusValue] = {
    FunctionStatus.FUNCTION_STATUS_WAITING: Status.STATUS_WAITING_FOR_BUILDER_SLOT,
    FunctionStatus.FUNCTION_STATUS_BUILDING: Status.STATUS_BUILDING,
    FunctionStatus.FUNCTION_STATUS_FAILED: Status.STATUS_FAILED,
    FunctionStatus.FUNCTION_STATUS_CANCELED: Status.STATUS_CANCELED,
}


def parent_keys(inputs: Iterable[computetask_pb2.ComputeTaskInput]) -> list[str]:
    """Parent task keys from the `parent_task_output` inputs, de-duplicated, first seen first."""
    keys: dict[str, None] = {}
    for task_input in inputs:
        if task_input.WhichOneof("ref") == "parent_task_output":
            keys.setdefault(task_input.parent_task_output.parent_task_key, None)
    return list(keys)


def initial_status(
    parents: Sequence[computetask_pb2.ComputeTask], function_status: FunctionStatus.ValueType
) -> StatusValue:
    if any(parent.status in (Status.STATUS_FAILED, Status.STATUS_CANCELED) for parent in parents):
        return Status.STATUS_CANCELED
    if function_status == FunctionStatus.FUNCTION_STATUS_READY:
        if all(parent.status == Status.STATUS_DONE for parent in parents):
            return Status.STATUS_WAITING_FOR_EXECUTOR_SLOT
        return Status.STATUS_WAITING_FOR_PARENT_TASKS
    return _INITIAL_STATUS_BY_FUNCTION.get(function_status, Status.STATUS_UNKNOWN)


def _validate_new(task: computetask_pb2.NewComputeTask) -> None:
    checker = Checker()
    checker.uuid("key", task.key)
    checker.uuid("function_key", task.function_key)
    checker.uuid("compute_plan_key", task.compute_plan_key)
    checker.metadata("metadata", task.metadata)
    for index, task_input in enumerate(task.inputs):
        field_name = f"inputs[{index}]"
        checker.required(f"{field_name}.identifier", task_input.identifier)
        ref = task_input.WhichOneof("ref")
        if ref == "asset_key":
            checker.uuid(f"{field_name}.asset_key", task_input.asset_key)
        elif ref == "parent_task_output":
            parent = task_input.parent_task_output
            checker.uuid(f"{field_name}.parent_task_output.parent_task_key", parent.parent_task_key)
            checker.required(f"{field_name}.parent_task_output.output_identifier", parent.output_identifier)
        else:
            checker.fail(f"{field_name}.ref", "an asset key or a parent task output is required")
    for identifier, output in task.outputs.items():
        checker.required(f"outputs.{identifier}.identifier", identifier)
        if not output.HasField("permissions"):
            checker.fail(f"outputs.{identifier}.permissions", "cannot be blank")
    checker.check(COMPUTE_TASK)


def sort_tasks(
    tasks: Sequence[computetask_pb2.NewComputeTask],
    parents_of: Mapping[str, list[str]],
    stored: Iterable[str],
) -> list[computetask_pb2.NewComputeTask]:
    """Kahn's algorithm, ordered exactly like the reference's.

    Tasks without pending parents come first in request order; then, each time a task is sorted,
    the children it releases follow in request order.
    """
    stored = set(stored)
    pending = {task.key: sum(1 for key in parents_of[task.key] if key not in stored) for task in tasks}
    children: dict[str, list[computetask_pb2.NewComputeTask]] = {}
    for task in tasks:
        for key in parents_of[task.key]:
            if key not in stored:
                children.setdefault(key, []).append(task)
    ready = [task for task in tasks if pending[task.key] == 0]
    result: list[computetask_pb2.NewComputeTask] = []
    position = 0
    while position < len(ready):
        current = ready[position]
        position += 1
        result.append(current)
        for child in children.get(current.key, ()):
            pending[child.key] -= 1
            if pending[child.key] == 0:
                ready.append(child)
    if len(result) < len(tasks):
        raise invalid_asset(
            "cyclic dependency in compute plan graph or unknown task parent, "
            f"unsorted_tasks_count: {len(tasks) - len(result)}"
        )
    return result


@dataclass
class _Batch:
    """What a batch of new tasks refers to, loaded in bulk; built tasks are added as they come."""

    request: Request
    plans: dict[str, computeplan_pb2.ComputePlan]
    functions: dict[str, function_pb2.Function]
    managers: dict[str, datamanager_pb2.DataManager]
    samples: dict[str, datasample_pb2.DataSample]
    models: dict[str, model_pb2.Model]
    tasks: dict[str, computetask_pb2.ComputeTask]
    disabled_models: dict[str, str]
    parents_of: Mapping[str, list[str]]
    built: list[computetask_pb2.ComputeTask] = field(default_factory=list)

    def build(self, new: computetask_pb2.NewComputeTask) -> computetask_pb2.ComputeTask:
        request = self.request
        owner = request.requester
        plan = self.plans.get(new.compute_plan_key)
        if plan is None:
            raise not_found(COMPUTE_PLAN, new.compute_plan_key)
        if plan.owner != owner:
            raise permission_denied("Cannot register tasks to a compute plan you don't own")
        parents = [self.tasks[key] for key in self.parents_of[new.key]]
        function = self.functions.get(new.function_key)
        if function is None:
            raise not_found(FUNCTION, new.function_key)
        if not can_process(function.permissions, owner):
            raise permission_denied(f'not authorized to process function "{function.key}"')
        status = initial_status(parents, function.status)
        for parent in parents:
            if parent.status == Status.STATUS_DONE and parent.key in self.disabled_models:
                raise invalid_asset(f'Model "{self.disabled_models[parent.key]}" has been disabled')
        outputs = {
            identifier: computetask_pb2.ComputeTaskOutput(
                permissions=create_permissions(request, owner, output.permissions), transient=output.transient
            )
            for identifier, output in new.outputs.items()
        }
        worker = self._worker(new, function)
        if worker not in request.organization_ids():
            raise not_found(ORGANIZATION, worker)
        logs_permission = self._logs_permission(new, function, parents)
        task = computetask_pb2.ComputeTask(
            key=new.key,
            function_key=function.key,
            owner=owner,
            compute_plan_key=new.compute_plan_key,
            metadata=new.metadata,
            status=status,
            rank=max(parent.rank for parent in parents) + 1 if parents else 0,
            creation_date=request.timestamp,
            inputs=new.inputs,
            outputs=outputs,
            worker=worker,
            logs_permission=logs_permission,
        )
        self._validate_inputs(task, function)
        _validate_outputs(task, function)
        self.tasks[task.key] = task
        self.built.append(task)
        return task

    def _function_input(self, function: function_pb2.Function, identifier: str) -> function_pb2.FunctionInput:
        function_input = function.inputs.get(identifier)
        if function_input is None:
            raise invalid_asset(
                f'unknown task input: this identifier was not declared in the Function: "{identifier}"'
            )
        return function_input

    def _manager(self, key: str) -> datamanager_pb2.DataManager:
        manager = self.managers.get(key)
        if manager is None:
            raise not_found(DATA_MANAGER, key)
        return manager

    def _worker(self, new: computetask_pb2.NewComputeTask, function: function_pb2.Function) -> str:
        for task_input in new.inputs:
            if self._function_input(function, task_input.identifier).kind != AssetKind.ASSET_DATA_MANAGER:
                continue
            manager = self._manager(_asset_key(task_input))
            if new.worker and new.worker != manager.owner:
                raise bad_request(
                    f'Specified worker "{new.worker}" does not match data manager owner: "{manager.owner}"'
                )
            return manager.owner
        if not new.worker:
            raise bad_request("Worker cannot be inferred and must be explicitly set")
        return new.worker

    def _logs_permission(
        self,
        new: computetask_pb2.NewComputeTask,
        function: function_pb2.Function,
        parents: Sequence[computetask_pb2.ComputeTask],
    ) -> common_pb2.Permission:
        for task_input in new.inputs:
            if self._function_input(function, task_input.identifier).kind == AssetKind.ASSET_DATA_MANAGER:
                key = _asset_key(task_input)
                if not key:
                    raise invalid_asset(
                        f'invalid task input "{task_input.identifier}": '
                        "openers must be referenced using an asset key"
                    )
                return self._manager(key).logs_permission
        # No data manager: private to the owner, widened by the parents' logs permissions.
        permission = create_permission(self.request, self.request.requester, None)
        for parent in parents:
            permission = union(parent.logs_permission, permission)
        return permission

    def _validate_inputs(self, task: computetask_pb2.ComputeTask, function: function_pb2.Function) -> None:
        seen: set[str] = set()
        for task_input in task.inputs:
            identifier = task_input.identifier
            function_input = self._function_input(function, identifier)
            if identifier in seen and not function_input.multiple:
                raise invalid_asset(
                    "duplicate task input: this identifier is present multiple times in the task inputs, "
                    f'but it was not declared as "Multiple" in the Function: "{identifier}"'
                )
            seen.add(identifier)
            if function_input.kind == AssetKind.ASSET_DATA_SAMPLE:
                continue  # checked with the data manager input
            if function_input.kind == AssetKind.ASSET_DATA_MANAGER:
                self._validate_manager_input(task_input, task, function)
            else:
                self._validate_reference(function_input, task_input, task.worker)
        for identifier, function_input in function.inputs.items():
            if not function_input.optional and identifier not in seen:
                raise invalid_asset(
                    f'missing task input: this identifier is required by the Function: "{identifier}"'
                )

    def _validate_manager_input(
        self,
        manager_input: computetask_pb2.ComputeTaskInput,
        task: computetask_pb2.ComputeTask,
        function: function_pb2.Function,
    ) -> None:
        manager_key = _asset_key(manager_input)
        if not manager_key:
            raise invalid_asset(
                f'invalid task input "{manager_input.identifier}": '
                "openers must be referenced using an asset key"
            )
        sample_keys: list[str] = []
        for task_input in task.inputs:
            if self._function_input(function, task_input.identifier).kind != AssetKind.ASSET_DATA_SAMPLE:
                continue
            key = _asset_key(task_input)
            if not key:
                raise invalid_asset(
                    f'invalid task input "{task_input.identifier}": '
                    "data samples must be referenced using an asset key"
                )
            sample_keys.append(key)
        manager = self._manager(manager_key)
        if not can_process(manager.permissions, task.owner):
            raise permission_denied(f'not authorized to process datamanager "{manager.key}"')
        for key in sample_keys:
            sample = self.samples.get(key)
            if sample is None:
                raise not_found(DATA_SAMPLE, key)
            if manager.key not in sample.data_manager_keys:
                raise invalid_asset("datasamples do not share a common manager")

    def _validate_reference(
        self,
        function_input: function_pb2.FunctionInput,
        task_input: computetask_pb2.ComputeTaskInput,
        worker: str,
    ) -> None:
        identifier = task_input.identifier
        if task_input.WhichOneof("ref") == "asset_key":
            if function_input.kind != AssetKind.ASSET_MODEL:
                raise unimplemented(f'invalid task input "{identifier}": invalid asset kind')
            model = self.models.get(task_input.asset_key)
            if model is None:
                raise not_found(MODEL, task_input.asset_key)
            if not can_process(model.permissions, worker):
                raise permission_denied(f'not authorized to process model "{model.key}"')
            return
        ref = task_input.parent_task_output
        prefix = f'invalid task input "{identifier}"'
        parent = self.tasks.get(ref.parent_task_key)
        if parent is None:
            raise invalid_asset(f"{prefix}: parent task key {ref.parent_task_key} not found")
        parent_function = self.functions.get(parent.function_key)
        if parent_function is None:
            raise not_found(FUNCTION, parent.function_key)
        function_output = parent_function.outputs.get(ref.output_identifier)
        if function_output is None:
            raise invalid_asset(
                f"{prefix}: parent task {ref.parent_task_key}: "
                f'function output not found: "{ref.output_identifier}"'
            )
        if function_output.kind != function_input.kind:
            raise invalid_asset(
                f"{prefix}: mismatching task input asset kinds: expecting "
                f"{AssetKind.Name(function_input.kind)} but parent task output has kind "
                f"{AssetKind.Name(function_output.kind)}"
            )
        if function_output.multiple and not function_input.multiple:
            raise invalid_asset(f"{prefix}: multiple task output used as single task input")
        output = parent.outputs.get(ref.output_identifier)
        if output is None:
            raise invalid_asset(
                f'{prefix}: parent task {ref.parent_task_key}: output not found: "{ref.output_identifier}"'
            )
        if not can_process(output.permissions, worker):
            raise permission_denied(
                f'{prefix}: worker "{worker}" doesn\'t have permission to process output '
                f'"{ref.output_identifier}" of task {ref.parent_task_key}'
            )


def _asset_key(task_input: computetask_pb2.ComputeTaskInput) -> str:
    return task_input.asset_key if task_input.WhichOneof("ref") == "asset_key" else ""


def _validate_outputs(task: computetask_pb2.ComputeTask, function: function_pb2.Function) -> None:
    prefix = f"invalid task {task.key}"
    for identifier, output in task.outputs.items():
        function_output = function.outputs.get(identifier)
        if function_output is None:
            raise invalid_asset(
                f"{prefix}, unknown task output: "
                f'this identifier was not declared in the Function: "{identifier}"'
            )
        if function_output.kind == AssetKind.ASSET_PERFORMANCE:
            if not output.permissions.process.public:
                raise invalid_asset(
                    f'{prefix}, invalid task output "{identifier}": a PERFORMANCE output should be public'
                )
            if output.transient:
                raise invalid_asset(
                    f'{prefix}, invalid task output "{identifier}": a PERFORMANCE output cannot be transient'
                )
    for identifier in function.outputs:
        if identifier not in task.outputs:
            raise invalid_asset(
                f'{prefix}, missing task output: this identifier is required by the Function: "{identifier}"'
            )


def register_tasks(
    request: Request, new_tasks: Sequence[computetask_pb2.NewComputeTask]
) -> list[computetask_pb2.ComputeTask]:
    if not new_tasks:
        raise bad_request("no task to register")
    for new in new_tasks:
        _validate_new(new)
    keys = [new.key for new in new_tasks]
    if len(set(keys)) != len(keys):
        duplicate = next(key for index, key in enumerate(keys) if key in keys[:index])
        raise invalid_asset(f'task key "{duplicate}" appears twice in the batch')
    ensure_new_keys(request, COMPUTE_TASK, table.c.key, table.c.channel, keys)

    connection, channel = request.connection, request.channel
    parents_of = {new.key: parent_keys(new.inputs) for new in new_tasks}
    batch_keys = set(keys)
    stored_parents = store.get_tasks(
        connection, channel, {key for parents in parents_of.values() for key in parents} - batch_keys
    )
    ordered = sort_tasks(new_tasks, parents_of, stored_parents)

    functions = function_store.get_functions(
        connection,
        channel,
        {new.function_key for new in new_tasks} | {parent.function_key for parent in stored_parents.values()},
    )
    # Asset-key inputs, by the kind their function declares for them.
    by_kind: dict[AssetKindValue, set[str]] = {}
    for new in new_tasks:
        function = functions.get(new.function_key)
        if function is None:
            continue
        for task_input in new.inputs:
            function_input = function.inputs.get(task_input.identifier)
            if function_input is not None and task_input.WhichOneof("ref") == "asset_key":
                by_kind.setdefault(function_input.kind, set()).add(task_input.asset_key)
    done_parents = [key for key, task in stored_parents.items() if task.status == Status.STATUS_DONE]
    batch = _Batch(
        request=request,
        plans=plan_store.get_plans(connection, channel, {new.compute_plan_key for new in new_tasks}),
        functions=functions,
        managers=manager_store.get_data_managers(
            connection, channel, by_kind.get(AssetKind.ASSET_DATA_MANAGER, set())
        ),
        samples=sample_store.get_data_samples(
            connection, channel, by_kind.get(AssetKind.ASSET_DATA_SAMPLE, set())
        ),
        models=model_store.get_models(connection, channel, by_kind.get(AssetKind.ASSET_MODEL, set())),
        tasks=dict(stored_parents),
        disabled_models=model_store.disabled_models_of_tasks(connection, done_parents),
        parents_of=parents_of,
    )
    for new in ordered:
        batch.build(new)

    links = [
        (task.key, parent, position)
        for task in batch.built
        for position, parent in enumerate(parents_of[task.key], start=1)
    ]
    store.insert_tasks(connection, channel, batch.built, links)
    for task in batch.built:
        request.emit(event_pb2.EVENT_ASSET_CREATED, AssetKind.ASSET_COMPUTE_TASK, task.key, task)
    return batch.built


def get_task(request: Request, key: str) -> computetask_pb2.ComputeTask:
    task = store.get_task(request.connection, request.channel, key)
    if task is None:
        raise not_found(COMPUTE_TASK, key)
    return task


def query_tasks(
    request: Request, page_token: str, page_size: int, task_filter: computetask_pb2.TaskQueryFilter
) -> tuple[list[computetask_pb2.ComputeTask], str]:
    offset, size = pagination.parse(page_token, page_size)
    rows = store.query_tasks(request.connection, request.channel, offset, size, task_filter)
    return pagination.cut(rows, offset, size)


def get_task_input_assets(request: Request, key: str) -> list[computetask_pb2.ComputeTaskInputAsset]:
    task = get_task(request, key)
    if task.status not in _INPUTS_DEFINED:
        raise bad_request(
            f'Task inputs may not be defined in current task status ("{Status.Name(task.status)}")'
        )
    function = function_store.get_function(request.connection, request.channel, task.function_key)
    if function is None:
        raise not_found(FUNCTION, task.function_key)
    # (identifier, kind, asset key) in task input order, then asset position.
    wanted: list[tuple[str, AssetKindValue, str]] = []
    refs = [
        (task_input.parent_task_output.parent_task_key, task_input.parent_task_output.output_identifier)
        for task_input in task.inputs
        if task_input.WhichOneof("ref") == "parent_task_output"
    ]
    outputs = store.output_assets_of(request.connection, refs)
    for task_input in task.inputs:
        function_input = function.inputs.get(task_input.identifier)
        if function_input is None:
            raise internal("missing function input")
        if task_input.WhichOneof("ref") == "asset_key":
            wanted.append((task_input.identifier, function_input.kind, task_input.asset_key))
        else:
            ref = task_input.parent_task_output
            for asset in outputs[(ref.parent_task_key, ref.output_identifier)]:
                wanted.append((task_input.identifier, asset.asset_kind, asset.asset_key))
    return _load_input_assets(request, wanted)


def _load_input_assets(
    request: Request, wanted: Sequence[tuple[str, AssetKindValue, str]]
) -> list[computetask_pb2.ComputeTaskInputAsset]:
    keys: dict[AssetKindValue, set[str]] = {}
    for _, kind, key in wanted:
        keys.setdefault(kind, set()).add(key)
    connection, channel = request.connection, request.channel
    models = model_store.get_models(connection, channel, keys.get(AssetKind.ASSET_MODEL, set()))
    managers = manager_store.get_data_managers(
        connection, channel, keys.get(AssetKind.ASSET_DATA_MANAGER, set())
    )
    samples = sample_store.get_data_samples(connection, channel, keys.get(AssetKind.ASSET_DATA_SAMPLE, set()))
    result: list[computetask_pb2.ComputeTaskInputAsset] = []
    for identifier, kind, key in wanted:
        asset = computetask_pb2.ComputeTaskInputAsset(identifier=identifier)
        if kind == AssetKind.ASSET_MODEL:
            if key not in models:
                raise not_found(MODEL, key)
            asset.model.CopyFrom(models[key])
        elif kind == AssetKind.ASSET_DATA_MANAGER:
            if key not in managers:
                raise not_found(DATA_MANAGER, key)
            asset.data_manager.CopyFrom(managers[key])
        elif kind == AssetKind.ASSET_DATA_SAMPLE:
            if key not in samples:
                raise not_found(DATA_SAMPLE, key)
            asset.data_sample.CopyFrom(samples[key])
        else:
            raise unimplemented(f'unsupported input kind: "{AssetKind.Name(kind)}"')
        result.append(asset)
    return result


def _cannot_disable(message: str) -> OrchestratorError:
    return OrchestratorError(ErrorCode.CANNOT_DISABLE_OUTPUT, message)


def disable_output(request: Request, key: str, identifier: str) -> None:
    """Remove the addresses of a transient output's models once every consumer is finished."""
    task = get_task(request, key)
    if task.worker != request.requester:
        raise permission_denied("only the worker can disable a task output")
    if not task_state.is_final(task.status):
        raise _cannot_disable("cannot disable asset: task not in final state")
    output = task.outputs.get(identifier)
    if output is None:
        raise _cannot_disable(f"there is no output identifier {identifier} for task {key}")
    if not output.transient:
        raise _cannot_disable("output is not transient")
    assets = store.output_assets_of(request.connection, [(key, identifier)])[(key, identifier)]
    if not assets:
        # The reference indexes the first asset without checking and crashes here.
        raise _cannot_disable(f"no asset registered for output {identifier} of task {key}")
    if assets[0].asset_kind != AssetKind.ASSET_MODEL:
        raise _cannot_disable(f"cannot disable output of kind: {AssetKind.Name(assets[0].asset_kind)}")
    children = store.children(request.connection, key)
    if not children:
        raise _cannot_disable("cannot disable output of a task with no children")
    if any(not task_state.is_final(child.status) for child in children):
        raise _cannot_disable("cannot disable asset: child not in final state")
    disable_models(request, [asset.asset_key for asset in assets])
