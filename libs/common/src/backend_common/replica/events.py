"""Applying orchestrator events to the replica (compute-engine 2.2, orchestrator-grpc 10.2).

Every handler is an idempotent upsert: applying an event twice leaves the replica as applying it
once. Plans touched by an event get their status and dates recomputed; `apply_events` does it once
per plan for a whole batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from itertools import groupby

from sqlalchemy.orm import Session

from backend_common.logging import get_logger
from backend_common.protos import common_pb2, event_pb2
from backend_common.replica.compute_plans import (
    STATUS_FAILED,
    mark_plan_failed,
    recompute_plan,
    store_compute_plan,
    update_compute_plan,
)
from backend_common.replica.compute_tasks import (
    StatusChange,
    status_name,
    store_compute_task,
    store_compute_tasks,
    update_compute_task_status,
    update_compute_task_statuses,
)
from backend_common.replica.conversions import to_datetime
from backend_common.replica.datasets import (
    replace_data_sample_links,
    replace_data_samples_links,
    store_data_manager,
    store_data_sample,
    store_data_samples,
    update_data_manager,
)
from backend_common.replica.failure_reports import store_failure_report
from backend_common.replica.functions import store_function, store_function_profiling_step, update_function
from backend_common.replica.organizations import store_organization
from backend_common.replica.outputs import disable_model, store_model, store_output_asset, store_performance

logger = get_logger("backend_common.replica")

CREATED = event_pb2.EVENT_ASSET_CREATED
UPDATED = event_pb2.EVENT_ASSET_UPDATED
DISABLED = event_pb2.EVENT_ASSET_DISABLED


@dataclass(frozen=True)
class ReplicaChange:
    """What applying one event did to the replica."""

    event_id: str
    channel: str
    asset_kind: str
    event_kind: str
    asset_key: str
    # False for an event kind the replica does not mirror (logged and skipped).
    mirrored: bool
    # Plans whose status and dates depend on the change.
    plan_keys: frozenset[str] = frozenset()


# A handler applies one event and returns the plans it touched.
Handler = Callable[[Session, event_pb2.Event], Iterable[str]]


def _organization_created(session: Session, event: event_pb2.Event) -> Iterable[str]:
    store_organization(session, event.channel, event.organization)
    return ()


def _function_created(session: Session, event: event_pb2.Event) -> Iterable[str]:
    store_function(session, event.channel, event.function)
    return ()


def _function_updated(session: Session, event: event_pb2.Event) -> Iterable[str]:
    update_function(session, event.function)
    return ()


def _data_manager_created(session: Session, event: event_pb2.Event) -> Iterable[str]:
    store_data_manager(session, event.channel, event.data_manager)
    return ()


def _data_manager_updated(session: Session, event: event_pb2.Event) -> Iterable[str]:
    update_data_manager(session, event.data_manager)
    return ()


def _data_sample_created(session: Session, event: event_pb2.Event) -> Iterable[str]:
    store_data_sample(session, event.channel, event.data_sample)
    return ()


def _data_sample_updated(session: Session, event: event_pb2.Event) -> Iterable[str]:
    replace_data_sample_links(session, event.data_sample)
    return ()


def _compute_plan_created(session: Session, event: event_pb2.Event) -> Iterable[str]:
    store_compute_plan(session, event.channel, event.compute_plan)
    return (event.compute_plan.key,)


def _compute_plan_updated(session: Session, event: event_pb2.Event) -> Iterable[str]:
    update_compute_plan(session, event.compute_plan)
    return (event.compute_plan.key,)


def _compute_task_created(session: Session, event: event_pb2.Event) -> Iterable[str]:
    store_compute_task(session, event.channel, event.compute_task)
    return (event.compute_task.compute_plan_key,)


def _compute_task_updated(session: Session, event: event_pb2.Event) -> Iterable[str]:
    # Cascaded updates carry the task without its inputs and outputs: only the status is read.
    status = status_name(event.compute_task.status)
    at = to_datetime(event.timestamp)
    plan_key = update_compute_task_status(session, event.compute_task.key, status, at)
    if plan_key is None:
        logger.warning("status of an unknown task", task_key=event.compute_task.key, event_id=event.id)
        return ()
    if status == STATUS_FAILED:
        mark_plan_failed(session, plan_key, at)
    return (plan_key,)


def _output_asset_created(session: Session, event: event_pb2.Event) -> Iterable[str]:
    store_output_asset(session, event.channel, event.compute_task_output_asset)
    return ()


def _model_created(session: Session, event: event_pb2.Event) -> Iterable[str]:
    store_model(session, event.channel, event.model)
    return ()


def _model_disabled(session: Session, event: event_pb2.Event) -> Iterable[str]:
    disable_model(session, event.model.key)
    return ()


def _performance_created(session: Session, event: event_pb2.Event) -> Iterable[str]:
    store_performance(session, event.channel, event.performance)
    return ()


def _failure_report_created(session: Session, event: event_pb2.Event) -> Iterable[str]:
    store_failure_report(session, event.channel, event.failure_report)
    return ()


def _profiling_step_created(session: Session, event: event_pb2.Event) -> Iterable[str]:
    if not store_function_profiling_step(session, event.channel, event.profiling_step):
        logger.info("profiling step of an asset that is not a function", asset_key=event.asset_key)
    return ()


HANDLERS: dict[tuple[common_pb2.AssetKind.ValueType, event_pb2.EventKind.ValueType], Handler] = {
    (common_pb2.ASSET_ORGANIZATION, CREATED): _organization_created,
    (common_pb2.ASSET_FUNCTION, CREATED): _function_created,
    (common_pb2.ASSET_FUNCTION, UPDATED): _function_updated,
    (common_pb2.ASSET_DATA_MANAGER, CREATED): _data_manager_created,
    (common_pb2.ASSET_DATA_MANAGER, UPDATED): _data_manager_updated,
    (common_pb2.ASSET_DATA_SAMPLE, CREATED): _data_sample_created,
    (common_pb2.ASSET_DATA_SAMPLE, UPDATED): _data_sample_updated,
    (common_pb2.ASSET_COMPUTE_PLAN, CREATED): _compute_plan_created,
    (common_pb2.ASSET_COMPUTE_PLAN, UPDATED): _compute_plan_updated,
    (common_pb2.ASSET_COMPUTE_TASK, CREATED): _compute_task_created,
    (common_pb2.ASSET_COMPUTE_TASK, UPDATED): _compute_task_updated,
    (common_pb2.ASSET_COMPUTE_TASK_OUTPUT_ASSET, CREATED): _output_asset_created,
    (common_pb2.ASSET_MODEL, CREATED): _model_created,
    (common_pb2.ASSET_MODEL, DISABLED): _model_disabled,
    (common_pb2.ASSET_PERFORMANCE, CREATED): _performance_created,
    (common_pb2.ASSET_FAILURE_REPORT, CREATED): _failure_report_created,
    (common_pb2.ASSET_PROFILING_STEP, CREATED): _profiling_step_created,
}


def asset_kind_name(event: event_pb2.Event) -> str:
    return common_pb2.AssetKind.Name(event.asset_kind)


def event_kind_name(event: event_pb2.Event) -> str:
    return event_pb2.EventKind.Name(event.event_kind)


def apply_event(session: Session, event: event_pb2.Event, *, recompute: bool = True) -> ReplicaChange:
    """Apply one event in the caller's transaction.

    With `recompute=False` the touched plans are only reported in the change, for a caller that
    recomputes them once after a batch (`recompute_plans`).
    """
    handler = HANDLERS.get((event.asset_kind, event.event_kind))
    change = _change(event, mirrored=handler is not None)
    if handler is None:
        logger.warning(
            "event kind not mirrored",
            asset_kind=change.asset_kind,
            event_kind=change.event_kind,
            event_id=event.id,
        )
        return change
    plan_keys = frozenset(handler(session, event))
    if recompute:
        recompute_plans(session, plan_keys)
    return replace(change, plan_keys=plan_keys)


def recompute_plans(session: Session, plan_keys: Iterable[str]) -> None:
    # Sorted: two transactions recomputing overlapping plans lock them in the same order.
    for plan_key in sorted(set(plan_keys)):
        recompute_plan(session, plan_key)


# Kinds that come in runs (a batch registration, a status cascade) and are applied a run at a time:
# each returns, per event, the plans it touched, as the single-event handlers would.
RunHandler = Callable[[Session, Sequence[event_pb2.Event]], list[frozenset[str]]]


def _compute_tasks_created(session: Session, events: Sequence[event_pb2.Event]) -> list[frozenset[str]]:
    store_compute_tasks(session, events[0].channel, [event.compute_task for event in events])
    return [frozenset({event.compute_task.compute_plan_key}) for event in events]


def _compute_tasks_updated(session: Session, events: Sequence[event_pb2.Event]) -> list[frozenset[str]]:
    changes = [
        StatusChange(
            event.compute_task.key, status_name(event.compute_task.status), to_datetime(event.timestamp)
        )
        for event in events
    ]
    plans = update_compute_task_statuses(session, changes)
    for change in changes:
        if change.task_key not in plans:
            logger.warning("status of an unknown task", task_key=change.task_key)
        elif change.status == STATUS_FAILED:
            mark_plan_failed(session, plans[change.task_key], change.at)
    return [
        frozenset({plans[change.task_key]}) if change.task_key in plans else frozenset() for change in changes
    ]


def _data_samples_created(session: Session, events: Sequence[event_pb2.Event]) -> list[frozenset[str]]:
    store_data_samples(session, events[0].channel, [event.data_sample for event in events])
    return [frozenset()] * len(events)


def _data_samples_updated(session: Session, events: Sequence[event_pb2.Event]) -> list[frozenset[str]]:
    replace_data_samples_links(session, [event.data_sample for event in events])
    return [frozenset()] * len(events)


RUN_HANDLERS: dict[tuple[common_pb2.AssetKind.ValueType, event_pb2.EventKind.ValueType], RunHandler] = {
    (common_pb2.ASSET_COMPUTE_TASK, CREATED): _compute_tasks_created,
    (common_pb2.ASSET_COMPUTE_TASK, UPDATED): _compute_tasks_updated,
    (common_pb2.ASSET_DATA_SAMPLE, CREATED): _data_samples_created,
    (common_pb2.ASSET_DATA_SAMPLE, UPDATED): _data_samples_updated,
}


def apply_events(
    session: Session, events: Sequence[event_pb2.Event], *, recompute: bool = True
) -> list[ReplicaChange]:
    """Apply events in order, then recompute each touched plan once (unless `recompute=False`).

    Consecutive events of a kind that comes in runs are applied together, with the same result as
    one by one.
    """
    changes: list[ReplicaChange] = []
    for kind, grouped in groupby(events, key=lambda event: (event.asset_kind, event.event_kind)):
        run = list(grouped)
        handler = RUN_HANDLERS.get(kind)
        if handler is None or len(run) == 1:
            changes += [apply_event(session, event, recompute=False) for event in run]
            continue
        for event, plan_keys in zip(run, handler(session, run), strict=True):
            changes.append(_change(event, mirrored=True, plan_keys=plan_keys))
    if recompute:
        recompute_plans(session, (key for change in changes for key in change.plan_keys))
    return changes


def _change(
    event: event_pb2.Event, *, mirrored: bool, plan_keys: frozenset[str] = frozenset()
) -> ReplicaChange:
    return ReplicaChange(
        event_id=event.id,
        channel=event.channel,
        asset_kind=asset_kind_name(event),
        event_kind=event_kind_name(event),
        asset_key=event.asset_key,
        mirrored=mirrored,
        plan_keys=plan_keys,
    )
