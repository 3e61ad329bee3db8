"""The outbox sends each decided piece of work once, across crashes, against real Postgres and Redis."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from backend_common import queues
from backend_common.celery_app import create_celery_app
from backend_common.db import session_scope
from backend_common.db.local import CeleryDispatch, TaskDispatch
from backend_common.dispatch import work
from backend_common.dispatch.outbox import Publisher, record, record_redispatch
from backend_common.protos import computetask_pb2, function_pb2
from backend_common.settings import CelerySettings
from backend_common.testing.processes import free_port
from backend_events.testing import BROKER_DATABASE, ORG_NAME, RESULT_DATABASE, wait_for
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

TESTS_DIR = Path(__file__).resolve().parent
CHANNEL = "mychannel"
WORKER_QUEUE = queues.worker_replica_queue(ORG_NAME, 0)


def celery_settings(port: int = 6379) -> CelerySettings:
    return CelerySettings(
        broker_host="127.0.0.1",
        broker_port=port,
        broker_database=BROKER_DATABASE,
        result_database=RESULT_DATABASE,
    )


def publisher(sessions: sessionmaker[Session], port: int = 6379) -> Publisher:
    """A publisher as a freshly started events process has it."""
    return Publisher(create_celery_app("events-tests", celery_settings(port), ORG_NAME), sessions, ORG_NAME)


def compute_work() -> work.Work:
    task = computetask_pb2.ComputeTask(
        key=str(uuid.uuid4()), compute_plan_key=str(uuid.uuid4()), worker="MyOrg1MSP"
    )
    return work.compute_task(ORG_NAME, CHANNEL, task, worker_index=0)


def record_all(sessions: sessionmaker[Session], *works: work.Work) -> list[int | None]:
    with session_scope(sessions) as session:
        return [record(session, CHANNEL, "event-id", decided) for decided in works]


def queued_task_ids(broker: redis.Redis, queue: str = WORKER_QUEUE) -> list[str]:
    return [json.loads(payload)["headers"]["id"] for payload in broker.lrange(queue, 0, -1)]


def forget_publication(sessions: sessionmaker[Session], row_id: int) -> None:
    """The state a crash between sending a message and marking its row leaves behind."""
    with session_scope(sessions) as session:
        session.execute(update(CeleryDispatch).where(CeleryDispatch.id == row_id).values(published_at=None))


@pytest.fixture
def broker(redis_databases: tuple[int, int]) -> Iterator[redis.Redis]:
    client = redis.Redis(host="127.0.0.1", port=6379, db=redis_databases[0])
    yield client
    client.close()


def test_work_is_recorded_once_per_dedupe_key(sessions: sessionmaker[Session]) -> None:
    task_work = compute_work()
    build = work.build_image(ORG_NAME, CHANNEL, "{}", str(uuid.uuid4()))
    first = record_all(sessions, task_work, build)
    again = record_all(sessions, task_work, build)
    assert None not in first
    assert again == [None, None]
    with sessions() as session:
        dispatch = session.get_one(TaskDispatch, task_work.compute_task_key)
        row = session.scalars(
            select(CeleryDispatch).where(CeleryDispatch.task_name == queues.COMPUTE_TASK_TASK)
        ).one()
        assert (dispatch.queue, dispatch.celery_task_id) == (WORKER_QUEUE, row.celery_task_id)


def test_pending_work_is_sent_once_even_if_a_previous_run_sent_it(
    sessions: sessionmaker[Session], broker: redis.Redis
) -> None:
    sent_before_crash, never_sent = compute_work(), compute_work()
    first_id, _ = record_all(sessions, sent_before_crash, never_sent)
    assert first_id is not None
    crashed = publisher(sessions)
    assert crashed.publish_pending(CHANNEL) == 2
    crashed.close()
    forget_publication(sessions, first_id)
    with session_scope(sessions) as session:
        session.execute(update(CeleryDispatch).where(CeleryDispatch.id != first_id).values(published_at=None))
    with sessions() as session:
        ids = dict(session.execute(select(CeleryDispatch.id, CeleryDispatch.celery_task_id)).all())
    # The second message never reached Redis in this story.
    broker.lrem(WORKER_QUEUE, 0, broker.lrange(WORKER_QUEUE, 0, 0)[0])
    assert queued_task_ids(broker) == [ids[first_id]]

    restarted = publisher(sessions)
    assert restarted.publish_pending(CHANNEL) == 1
    assert restarted.publish_pending(CHANNEL) == 0
    restarted.close()
    assert sorted(queued_task_ids(broker)) == sorted(ids.values())
    with sessions() as session:
        assert (
            session.scalars(select(CeleryDispatch).where(CeleryDispatch.published_at.is_(None))).all() == []
        )


def test_work_a_worker_already_ran_is_not_sent_again(
    sessions: sessionmaker[Session], broker: redis.Redis, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "stand_in_worker:app",
            "--quiet",
            "worker",
            "--pool=solo",
            "--without-mingle",
            "--without-gossip",
            "-Q",
            WORKER_QUEUE,
            "--hostname",
            f"stand-in-{uuid.uuid4().hex[:6]}",
        ],
        cwd=TESTS_DIR,
        env={**os.environ, "PYTHONPATH": str(TESTS_DIR), "STAND_IN_WORKER_LOG": str(log)},
        stdout=(tmp_path / "worker.out").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        decided = compute_work()
        (row_id,) = record_all(sessions, decided)
        assert row_id is not None
        first = publisher(sessions)
        first.recorded([row_id])
        assert first.publish_pending(CHANNEL) == 1
        first.close()
        wait_for(lambda: log.exists() and bool(log.read_text()), 60, what="the worker to run the task")
        assert queued_task_ids(broker) == []

        forget_publication(sessions, row_id)
        restarted = publisher(sessions)
        assert restarted.publish_pending(CHANNEL) == 0
        restarted.close()
        time.sleep(1.0)
        lines = log.read_text().splitlines()
        assert [json.loads(line)[1] for line in lines] == [decided.compute_task_key]
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def test_a_broker_outage_leaves_work_pending_until_redis_answers(
    sessions: sessionmaker[Session], broker: redis.Redis
) -> None:
    (row_id,) = record_all(sessions, compute_work())
    unreachable = publisher(sessions, port=free_port())
    with pytest.raises(Exception):  # noqa: B017  # whatever the client raises for a refused connection
        unreachable.publish_pending(CHANNEL)
    with sessions() as session:
        assert session.get_one(CeleryDispatch, row_id).published_at is None
    assert queued_task_ids(broker) == []
    back = publisher(sessions)
    assert back.publish_pending(CHANNEL) == 1
    back.close()
    assert len(queued_task_ids(broker)) == 1


def test_a_build_is_chained_to_saving_the_image(sessions: sessionmaker[Session], broker: redis.Redis) -> None:
    function = function_pb2.Function(key=str(uuid.uuid4()), owner="MyOrg1MSP", name="f")
    build = work.build_image(ORG_NAME, CHANNEL, work.serialize(function), function.key)
    record_all(sessions, build)
    sent = publisher(sessions)
    assert sent.publish_pending(CHANNEL) == 1
    sent.close()
    (payload,) = broker.lrange(queues.builder_queue(ORG_NAME), 0, -1)
    message = json.loads(payload)
    args, kwargs, embed = json.loads(base64.b64decode(message["body"]))
    assert message["headers"]["task"] == queues.BUILD_IMAGE_TASK
    assert args == []
    assert json.loads(kwargs["function_serialized"])["key"] == function.key
    (callback,) = embed["callbacks"]
    assert callback["task"] == queues.SAVE_IMAGE_TASK
    assert callback["immutable"] is True
    assert callback["kwargs"] == kwargs


def test_publishers_running_at_once_send_each_row_once(
    sessions: sessionmaker[Session], broker: redis.Redis
) -> None:
    """The events service and the scheduler publish the same outbox."""
    decided = [compute_work() for _ in range(40)]
    record_all(sessions, *decided)
    publishers = [publisher(sessions) for _ in range(3)]
    barrier = threading.Barrier(len(publishers))
    sent: list[int] = []

    def publish(one: Publisher) -> None:
        barrier.wait()
        sent.append(one.publish_pending())

    threads = [threading.Thread(target=publish, args=(one,)) for one in publishers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for one in publishers:
        one.close()
    assert sum(sent) == 40
    queued = queued_task_ids(broker)
    assert len(queued) == len(set(queued)) == 40


def test_a_redispatch_counts_its_attempts_once(sessions: sessionmaker[Session], broker: redis.Redis) -> None:
    decided = compute_work()
    record_all(sessions, decided)
    with session_scope(sessions) as session:
        first = record_redispatch(session, CHANNEL, "scheduler", decided, attempts=1)
        # A second scheduler that read the same attempt count decides nothing.
        second = record_redispatch(session, CHANNEL, "scheduler", decided, attempts=1)
    assert first is not None and second is None
    one = publisher(sessions)
    assert one.publish_pending(CHANNEL) == 2
    one.close()
    with sessions() as session:
        dispatch = session.get_one(TaskDispatch, decided.compute_task_key)
        ids = session.scalars(select(CeleryDispatch.celery_task_id).order_by(CeleryDispatch.id)).all()
    assert dispatch.attempts == 2
    assert dispatch.celery_task_id == ids[-1]
    assert sorted(queued_task_ids(broker)) == sorted(ids)
