"""`/task/`: compute tasks, their input and output assets, and their logs."""

from __future__ import annotations

from typing import Any

from backend_common import replica
from backend_common.orchestrator import AlreadyExistsError, NotFoundError, OrchestratorError
from backend_common.protos import computetask_pb2
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from backend_server import permissions, validation
from backend_server.authentication import Caller, authenticated, authenticated_read
from backend_server.data import compute_plans, functions, task_assets, tasks
from backend_server.data.common import Page
from backend_server.downloads import logs_response
from backend_server.errors import ApiError, bad_request, from_orchestrator, not_found
from backend_server.http import (
    base_url,
    json_body,
    one_or_404,
    page_of,
    paginated,
    params,
    path_key,
    raw_json_response,
)
from backend_server.listing import DEFAULT_PAGE_SIZE, PageRequest, check_page
from backend_server.orchestration import orchestrate
from backend_server.render import dumps
from backend_server.state import in_transaction, server_state


def list_tasks(session: Session, request: Request, caller: Caller) -> Response:
    page = page_of(request, DEFAULT_PAGE_SIZE)
    return paginated(
        request, page, tasks.list_tasks(session, caller.channel, params(request), page, base_url(request))
    )


def get_task(session: Session, request: Request, caller: Caller) -> Response:
    return one_or_404(tasks.get_document(session, caller.channel, path_key(request), base_url(request)))


def _page_of_items(request: Request, items: list[dict[str, Any]], page: PageRequest) -> Page:
    query = params(request)
    kinds, identifiers = query.csv("kind"), query.csv("identifier")
    selected = [
        item
        for item in items
        if (kinds is None or item["kind"] in kinds)
        and (identifiers is None or item["identifier"] in identifiers)
    ]
    check_page(page, len(selected))
    return Page(len(selected), [dumps(item) for item in selected[page.offset : page.offset + page.size]])


def _task_assets(session: Session, request: Request, caller: Caller, *, inputs: bool) -> Response:
    page, base = page_of(request, DEFAULT_PAGE_SIZE), base_url(request)
    task = tasks.get_task(session, caller.channel, path_key(request))
    if task is None:
        raise not_found()
    if inputs:
        items = task_assets.input_assets(session, task, base)
    else:
        items = task_assets.output_assets(session, task, base)
    return paginated(request, page, _page_of_items(request, items, page))


def input_assets(session: Session, request: Request, caller: Caller) -> Response:
    return _task_assets(session, request, caller, inputs=True)


def output_assets(session: Session, request: Request, caller: Caller) -> Response:
    return _task_assets(session, request, caller, inputs=False)


async def task_logs(request: Request, caller: Caller) -> Response:
    """Failure logs; for a build failure they are the function's (its failure report is keyed by it)."""
    key = path_key(request)
    settings = server_state(request).settings

    def load(session: Session) -> tuple[str, str | None, str | None, str | None]:
        task = tasks.get_task(session, caller.channel, key)
        if task is None:
            raise not_found()
        function = functions.get_function(session, caller.channel, task.function_key)
        permissions.check_task_logs(task, function, caller, settings)
        if task.error_type == "ERROR_TYPE_BUILD" and function is not None:
            return function.key, None, None, None
        return task.key, task.logs_address, task.logs_checksum, task.logs_owner

    asset_key, address, checksum, owner = await in_transaction(request, load)
    return await logs_response(
        request,
        caller,
        asset_key=asset_key,
        filename=f"tuple_logs_{key}.txt",
        address=address,
        checksum=checksum,
        owner=owner,
    )


def _task_input(value: Any) -> computetask_pb2.ComputeTaskInput:
    if not isinstance(value, dict) or not isinstance(value.get("identifier"), str):
        raise bad_request("inputs: each input needs an identifier")
    if value.get("asset_key"):
        return computetask_pb2.ComputeTaskInput(
            identifier=value["identifier"], asset_key=str(value["asset_key"])
        )
    if value.get("parent_task_key"):
        return computetask_pb2.ComputeTaskInput(
            identifier=value["identifier"],
            parent_task_output=computetask_pb2.ParentTaskOutputRef(
                parent_task_key=str(value["parent_task_key"]),
                output_identifier=str(value.get("parent_task_output_identifier") or ""),
            ),
        )
    raise bad_request(f"inputs: input {value['identifier']} needs an asset_key or a parent task output")


def _new_task(value: Any) -> computetask_pb2.NewComputeTask:
    if not isinstance(value, dict):
        raise bad_request("tasks: each task must be an object")
    metadata = validation.metadata(value.get("metadata"), strict_lengths=False)
    tag = value.get("tag")
    if tag:
        # The orchestrator has no tag: it travels in the metadata (rest-api 5.5).
        metadata["__tag__"] = validation.optional_text(tag, "tag")
    outputs: dict[str, computetask_pb2.NewComputeTaskOutput] = {}
    raw_outputs = value.get("outputs") or {}
    if not isinstance(raw_outputs, dict):
        raise bad_request("outputs: expected a dictionary keyed by identifier")
    for identifier, output in raw_outputs.items():
        if not isinstance(output, dict):
            raise bad_request(f"outputs: invalid output {identifier}")
        permissions = output.get("permissions")
        if isinstance(permissions, dict) and "process" in permissions:
            permissions = permissions["process"]  # tolerate the nested response shape
        outputs[str(identifier)] = computetask_pb2.NewComputeTaskOutput(
            permissions=validation.new_permissions(permissions, "outputs"),
            transient=bool(output.get("transient", False)),
        )
    return computetask_pb2.NewComputeTask(
        key=validation.key(value.get("key")),
        function_key=validation.key(value.get("function_key"), "function_key"),
        compute_plan_key=validation.key(value.get("compute_plan_key"), "compute_plan_key"),
        worker=str(value.get("worker") or ""),
        metadata=metadata,
        inputs=[_task_input(item) for item in value.get("inputs") or []],
        outputs=outputs,
    )


async def register_tasks(request: Request, caller: Caller) -> Response:
    document = await json_body(request)
    raw_tasks = document.get("tasks") if isinstance(document, dict) else None
    if not isinstance(raw_tasks, list) or not raw_tasks:
        raise bad_request("tasks: a non-empty list of tasks is required")
    new_tasks = [_new_task(item) for item in raw_tasks]
    plan_keys = {task.compute_plan_key for task in new_tasks}
    if len(plan_keys) != 1:
        raise bad_request("All tasks should have the same compute plan key")
    (plan_key,) = plan_keys
    plan = await in_transaction(
        request, lambda session: compute_plans.get_plan(session, caller.channel, plan_key)
    )
    if plan is None:
        raise bad_request("Invalid compute plan key")
    try:
        registered = await orchestrate(request, caller, lambda client: client.register_tasks(new_tasks))
    except AlreadyExistsError as error:
        raise ApiError(409, error.details, extra={"key": new_tasks[0].key}) from None
    except NotFoundError as error:
        # Unknown function, worker or parent: an invalid submission for the SDK (rest-api 5.5).
        raise bad_request(error.details) from None
    except OrchestratorError as error:
        raise from_orchestrator(error) from None
    base = base_url(request)

    def store_locally(session: Session) -> list[str]:
        replica.store_compute_tasks(session, caller.channel, registered)
        replica.recompute_plan(session, plan_key)
        # In the orchestrator's (topological) order.
        return tasks.documents(session, [task.key for task in registered], base)

    items = await in_transaction(request, store_locally)
    return raw_json_response("[" + ",".join(items) + "]")


routes = [
    Route("/task/", authenticated_read(list_tasks), methods=["GET"]),
    Route("/task/bulk_create/", authenticated(register_tasks), methods=["POST"]),
    Route("/task/{key}/", authenticated_read(get_task), methods=["GET"]),
    Route("/task/{key}/input_assets/", authenticated_read(input_assets), methods=["GET"]),
    Route("/task/{key}/output_assets/", authenticated_read(output_assets), methods=["GET"]),
    Route("/task/{key}/logs/", authenticated(task_logs, basic=True), methods=["GET"]),
]
