"""Reconciliation jobs on a prepared replica, against a real orchestrator, Postgres and Redis.

Each job does its work on what needs it and leaves the rest untouched; run again, it finds nothing
left; run by two scheduler-workers at once, it does the work once.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import redis
from backend_common import queues
from backend_common.db import session_scope
from backend_common.db.local import ComputePlanWorkerMapping, TaskDispatch
from backend_common.db.locks import execution_guard
from backend_common.dispatch import outbox, work
from backend_common.protos import failure_report_pb2
from backend_scheduler.context import SchedulerContext
from backend_scheduler.tasks import (
    DISPATCH_FORGOTTEN_TASKS,
    REDISPATCH_STALE_TASKS,
    TEAR_DOWN_FINISHED_PLANS,
    run_scheduler_job,
)
from backend_scheduler.testing import CHANNEL, ORG_NAME, Channel, concurrently, now
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

WORKER_QUEUE = queues.worker_replica_queue(ORG_NAME, 0)


def queued(broker: redis.Redis, queue: str = WORKER_QUEUE) -> list[tuple[str, list[Any], dict[str, Any]]]:
    """(task name, args, kwargs) of the messages waiting in `queue`, oldest first."""
    messages = []
    for payload in reversed(broker.lrange(queue, 0, -1)):
        message = json.loads(payload)
        args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
        messages.append((message["headers"]["task"], args, kwargs))
    return messages


def queued_tasks(broker: redis.Redis) -> list[str]:
    return [
        json.loads(args[1])["key"] for name, args, _ in queued(broker) if name == queues.COMPUTE_TASK_TASK
    ]


def dispatch(sessions: sessionmaker[Session], task_key: str, when: datetime, attempts: int = 1) -> None:
    """What the events service leaves when it dispatched the task."""
    with session_scope(sessions) as session:
        session.add(
            TaskDispatch(
                compute_task_key=task_key,
                channel=CHANNEL,
                queue=WORKER_QUEUE,
                celery_task_id=f"earlier-{task_key}",
                dispatched_at=when,
                attempts=attempts,
            )
        )


def attempts(sessions: sessionmaker[Session], task_key: str) -> int | None:
    with sessions() as session:
        dispatched = session.get(TaskDispatch, task_key)
        return None if dispatched is None else dispatched.attempts


def test_tasks_lost_by_their_worker_are_sent_again_then_failed(
    channel: Channel,
    sessions: sessionmaker[Session],
    make_context: Callable[..., SchedulerContext],
    redis_databases: redis.Redis,
) -> None:
    context = make_context(executing_task_stale_after=3600, executing_task_max_redispatches=2)
    function_key = channel.function()
    _, (lost, never_recorded, given_up, running, recent, waiting) = channel.plan(function_key, 6)
    channel.start(lost, never_recorded, given_up, running, recent)
    channel.mirror()
    later = now() + timedelta(hours=2)
    dispatch(sessions, lost, now())
    dispatch(sessions, given_up, now(), attempts=3)  # sent twice again already
    dispatch(sessions, running, now())
    dispatch(sessions, recent, later - timedelta(minutes=10))
    dispatch(sessions, waiting, now())

    # A live worker holds the guard of `running` for as long as it runs it.
    with execution_guard(context.engine, running) as held:
        assert held
        first = run_scheduler_job(context, REDISPATCH_STALE_TASKS, later)
        again = run_scheduler_job(context, REDISPATCH_STALE_TASKS, later)

    assert (first, again) == (3, 0)
    assert sorted(queued_tasks(redis_databases)) == sorted([lost, never_recorded])
    assert (attempts(sessions, lost), attempts(sessions, never_recorded)) == (2, 1)
    assert (attempts(sessions, running), attempts(sessions, recent), attempts(sessions, given_up)) == (
        1,
        1,
        3,
    )
    report = channel.orchestrator.get_failure_report(given_up)
    assert report.error_type == failure_report_pb2.ERROR_TYPE_INTERNAL
    assert [channel.status(key) for key in (lost, given_up, running, recent, waiting)] == [
        "STATUS_EXECUTING",
        "STATUS_FAILED",
        "STATUS_EXECUTING",
        "STATUS_EXECUTING",
        "STATUS_WAITING_FOR_EXECUTOR_SLOT",
    ]
    # The message is the one the events service sends: the worker runs the task from it.
    (_, args, _), *_ = queued(redis_databases)
    assert args[0] == CHANNEL and json.loads(args[1])["status"] == "STATUS_EXECUTING"


def test_runnable_tasks_never_dispatched_are_dispatched_once(
    channel: Channel,
    sessions: sessionmaker[Session],
    make_context: Callable[..., SchedulerContext],
    redis_databases: redis.Redis,
) -> None:
    function_key = channel.function()
    _, (forgotten, other_forgotten, dispatched) = channel.plan(function_key, 3)
    canceled_plan, (in_canceled_plan,) = channel.plan(function_key, 1)
    _, (of_peer,) = channel.plan(function_key, 1, worker="MyOrg2MSP")
    channel.cancel(canceled_plan)
    channel.mirror()
    dispatch(sessions, dispatched, now())
    later = now() + timedelta(minutes=10)

    first = concurrently(
        lambda: run_scheduler_job(make_context(undispatched_task_grace=300), DISPATCH_FORGOTTEN_TASKS, later),
        lambda: run_scheduler_job(make_context(undispatched_task_grace=300), DISPATCH_FORGOTTEN_TASKS, later),
    )
    again = run_scheduler_job(make_context(undispatched_task_grace=300), DISPATCH_FORGOTTEN_TASKS, later)

    assert (sum(first), again) == (2, 0)
    assert sorted(queued_tasks(redis_databases)) == sorted([forgotten, other_forgotten])
    assert channel.status(in_canceled_plan) == "STATUS_CANCELED"
    assert channel.status(of_peer) == "STATUS_WAITING_FOR_EXECUTOR_SLOT"
    assert attempts(sessions, dispatched) == 1
    with sessions() as session:
        mappings = session.scalars(select(ComputePlanWorkerMapping.worker_index)).all()
    assert mappings == [0]  # the plan of the dispatched tasks is pinned to the replica


def test_a_task_within_its_grace_period_is_left_to_the_events_service(
    channel: Channel,
    make_context: Callable[..., SchedulerContext],
    redis_databases: redis.Redis,
) -> None:
    _, (task,) = channel.plan(channel.function(), 1)
    channel.mirror()
    context = make_context(undispatched_task_grace=300)
    assert run_scheduler_job(context, DISPATCH_FORGOTTEN_TASKS, now()) == 0
    assert queued_tasks(redis_databases) == []
    assert run_scheduler_job(context, DISPATCH_FORGOTTEN_TASKS, now() + timedelta(minutes=6)) == 1
    assert queued_tasks(redis_databases) == [task]


def open_mapping(sessions: sessionmaker[Session], plan_key: str) -> str:
    with session_scope(sessions) as session:
        mapping = ComputePlanWorkerMapping(compute_plan_key=plan_key, worker_index=0)
        session.add(mapping)
        session.flush()
        return str(mapping.id)


def test_finished_plans_whose_teardown_was_missed_are_torn_down(
    channel: Channel,
    sessions: sessionmaker[Session],
    make_context: Callable[..., SchedulerContext],
    redis_databases: redis.Redis,
) -> None:
    function_key = channel.function()
    missed, _ = channel.plan(function_key, 1)
    running, _ = channel.plan(function_key, 1)
    just_sent, _ = channel.plan(function_key, 1)
    released, _ = channel.plan(function_key, 1)
    for plan_key in (missed, just_sent, released):
        channel.cancel(plan_key)
    channel.mirror()
    later = now() + timedelta(hours=1)
    mappings = {
        plan_key: open_mapping(sessions, plan_key) for plan_key in (missed, running, just_sent, released)
    }
    with session_scope(sessions) as session:
        session.get_one(ComputePlanWorkerMapping, mappings[released]).release_date = now()
        # The events service decided this one a minute ago: the worker has its time.
        teardown = work.delete_plan_resources(ORG_NAME, CHANNEL, just_sent, 0, f"{mappings[just_sent]}:1")
        outbox.record(session, CHANNEL, "event", teardown, now=later - timedelta(minutes=1))

    context = make_context(plan_teardown_grace=900)
    first = run_scheduler_job(context, TEAR_DOWN_FINISHED_PLANS, later)
    again = run_scheduler_job(context, TEAR_DOWN_FINISHED_PLANS, later)
    # Still open long after: the teardown is sent again.
    much_later = run_scheduler_job(context, TEAR_DOWN_FINISHED_PLANS, later + timedelta(hours=1))

    assert (first, again, much_later) == (1, 0, 2)
    teardowns = [
        kwargs["compute_plan_key"]
        for name, _, kwargs in queued(redis_databases)
        if name == queues.DELETE_CP_POD_AND_DIRS_TASK
    ]
    assert sorted(teardowns) == sorted([missed, missed, just_sent])
