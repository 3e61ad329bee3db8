"""`/compute_plan/`: compute plans, their tasks, functions, performances and workflow graph."""

from __future__ import annotations

from typing import Any

from backend_common import replica
from backend_common.db.replica import ComputePlan, ComputeTask, Function
from backend_common.orchestrator import OrchestratorError
from backend_common.protos import computeplan_pb2
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from backend_server import validation
from backend_server.authentication import Caller, authenticated, authenticated_read
from backend_server.data import compute_plans, functions, tasks
from backend_server.data.common import Page
from backend_server.errors import ApiError, bad_request, forbidden, from_orchestrator, not_found
from backend_server.http import (
    base_url,
    json_body,
    json_response,
    one_or_404,
    page_of,
    paginated,
    params,
    path_key,
    raw_json_response,
)
from backend_server.listing import DEFAULT_PAGE_SIZE, SMALL_PAGE_SIZE
from backend_server.orchestration import creation_error, orchestrate, rename_asset
from backend_server.render import dumps
from backend_server.state import in_transaction, server_state


def list_plans(session: Session, request: Request, caller: Caller) -> Response:
    page = page_of(request, SMALL_PAGE_SIZE)
    return paginated(request, page, compute_plans.list_plans(session, caller.channel, params(request), page))


def get_plan(session: Session, request: Request, caller: Caller) -> Response:
    return one_or_404(compute_plans.get_document(session, caller.channel, path_key(request)))


def _existing_plan(session: Session, channel: str, key: str) -> None:
    if compute_plans.get_plan(session, channel, key) is None:
        raise not_found()


async def plan_tasks(request: Request, caller: Caller) -> Response:
    key, query, page, base = (
        path_key(request),
        params(request),
        page_of(request, DEFAULT_PAGE_SIZE),
        base_url(request),
    )

    def load(session: Session) -> Page:
        _existing_plan(session, caller.channel, key)
        return tasks.list_tasks(
            session, caller.channel, query, page, base, extra=[ComputeTask.compute_plan_key == key]
        )

    return paginated(request, page, await in_transaction(request, load))


async def plan_functions(request: Request, caller: Caller) -> Response:
    key, query, page, base = (
        path_key(request),
        params(request),
        page_of(request, DEFAULT_PAGE_SIZE),
        base_url(request),
    )

    def load(session: Session) -> Page:
        _existing_plan(session, caller.channel, key)
        used = Function.key.in_(select(ComputeTask.function_key).where(ComputeTask.compute_plan_key == key))
        return functions.list_functions(session, caller.channel, query, page, base, extra=[used])

    return paginated(request, page, await in_transaction(request, load))


async def perf(request: Request, caller: Caller) -> Response:
    key, query = path_key(request), params(request)

    def load(session: Session) -> dict[str, Any]:
        _existing_plan(session, caller.channel, key)
        return compute_plans.performances(session, key, query)

    return json_response(await in_transaction(request, load))


async def workflow_graph(request: Request, caller: Caller) -> Response:
    key = path_key(request)

    def load(session: Session) -> dict[str, Any]:
        _existing_plan(session, caller.channel, key)
        try:
            return compute_plans.workflow_graph(session, key)
        except compute_plans.TooManyTasksError:
            raise ApiError(
                403,
                f"Cannot build workflow graph for more than {compute_plans.WORKFLOW_GRAPH_MAX_TASKS} tasks.",
            ) from None

    return json_response(await in_transaction(request, load))


async def metadata_keys(request: Request, caller: Caller) -> Response:
    keys = await in_transaction(request, lambda session: compute_plans.metadata_keys(session, caller.channel))
    return json_response(keys)


async def create_plan(request: Request, caller: Caller) -> Response:
    """The SDK also sends the whole task list under `tasks`: it is ignored (tasks come in bulk_create)."""
    document = await json_body(request)
    if not isinstance(document, dict):
        raise bad_request("Invalid data. Expected a dictionary.")
    key = validation.key(document.get("key"))
    name = validation.name(document.get("name"))
    tag = validation.optional_text(document.get("tag"), "tag")
    metadata = validation.metadata(document.get("metadata"), strict_lengths=False)
    new_plan = computeplan_pb2.NewComputePlan(key=key, name=name, tag=tag, metadata=metadata)
    try:
        plan = await orchestrate(request, caller, lambda client: client.register_plan(new_plan))
    except OrchestratorError as error:
        raise creation_error(error, key) from None

    def store_locally(session: Session) -> str | None:
        replica.store_compute_plan(session, caller.channel, plan, creator=caller.username)
        return compute_plans.get_document(session, caller.channel, key)

    document_json = await in_transaction(request, store_locally)
    return raw_json_response(document_json or dumps({"key": key}), status=201)


def _plan_owner(session: Session, channel: str, key: str) -> str | None:
    plan = compute_plans.get_plan(session, channel, key)
    return None if plan is None else plan.owner


def _rename_plan(session: Session, key: str, name: str) -> None:
    plan = session.get(ComputePlan, key)
    if plan is not None:
        plan.name = name


async def rename_plan(request: Request, caller: Caller) -> Response:
    return await rename_asset(
        request, caller, _plan_owner, lambda client, key, name: client.update_plan(key, name), _rename_plan
    )


async def cancel_plan(request: Request, caller: Caller) -> Response:
    """Idempotent: a plan already canceled answers 200; one already failed is a 400 (reference bug 5)."""
    key = path_key(request)
    state = server_state(request)
    plan = await in_transaction(request, lambda session: compute_plans.get_plan(session, caller.channel, key))
    if plan is None:
        raise not_found()
    if plan.owner != state.settings.msp_id:
        raise forbidden(f"Only the owner organization {plan.owner} may cancel this compute plan")
    if plan.cancelation_date is not None:
        return json_response({})
    if plan.failure_date is not None:
        raise bad_request(f"Compute plan {key} has already failed: it cannot be canceled")
    try:
        await orchestrate(
            request,
            caller,
            lambda client: client.apply_plan_action(key, computeplan_pb2.PLAN_ACTION_CANCELED),
        )
    except OrchestratorError as error:
        if error.oe_code == "OE0109":
            raise bad_request(f"Compute plan {key} is already terminated: {error.details}") from None
        raise from_orchestrator(error) from None
    try:
        updated = await orchestrate(request, caller, lambda client: client.get_plan(key))
    except OrchestratorError:
        return json_response({})  # the event will bring the cancelation date

    def store_locally(session: Session) -> None:
        replica.update_compute_plan(session, updated)
        replica.recompute_plan(session, key)

    await in_transaction(request, store_locally)
    return json_response({})


routes = [
    Route("/compute_plan/", authenticated_read(list_plans), methods=["GET"]),
    Route("/compute_plan/", authenticated(create_plan), methods=["POST"]),
    Route("/compute_plan/{key}/", authenticated_read(get_plan), methods=["GET"]),
    Route("/compute_plan/{key}/", authenticated(rename_plan), methods=["PUT"]),
    Route("/compute_plan/{key}/cancel/", authenticated(cancel_plan), methods=["POST"]),
    Route("/compute_plan/{key}/task/", authenticated(plan_tasks), methods=["GET"]),
    Route("/compute_plan/{key}/functions/", authenticated(plan_functions), methods=["GET"]),
    Route("/compute_plan/{key}/perf/", authenticated(perf), methods=["GET"]),
    Route("/compute_plan/{key}/workflow_graph/", authenticated(workflow_graph), methods=["GET"]),
    Route("/compute_plan_metadata/", authenticated(metadata_keys), methods=["GET"]),
]
