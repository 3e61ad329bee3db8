"""Maintenance of a worker host's disk (the scheduler's broadcasts), on a prepared host directory.

Each job removes what its limits say and nothing else, skips while the host is busy with what it
would remove, and finds nothing left when run again.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from backend_common.db import session_scope
from backend_common.protos import common_pb2, computeplan_pb2, computetask_pb2, function_pb2
from backend_common.replica import store_compute_plan, store_compute_task, store_function
from backend_common.settings import DatabaseSettings, MetricsSettings, OrganizationSettings, StorageSettings
from backend_migrations.schema import upgrade
from backend_worker.asset_buffer import AssetKind
from backend_worker.context import WorkerContext
from backend_worker.locks import file_lock
from backend_worker.maintenance import (
    CLEAN_TASK_DIRECTORIES,
    COLLECT_FUNCTION_ENVIRONMENTS,
    EVICT_ASSET_BUFFER,
    run_maintenance,
)
from backend_worker.settings import ExecutionSettings, WorkerSettings
from google.protobuf.timestamp_pb2 import Timestamp

DAY = 86400.0
CHANNEL = "mychannel"
ORG = "MyOrg1MSP"


@pytest.fixture
def context(make_database: Callable[[], str], tmp_path: Path) -> Iterator[WorkerContext]:
    url = make_database()
    upgrade(url)
    settings = WorkerSettings(
        organization=OrganizationSettings(org_name="maintenance", msp_id=ORG, channels=[{"name": CHANNEL}]),
        database=DatabaseSettings(url_override=url, pool_size=2),
        storage=StorageSettings(media_root=str(tmp_path / "medias")),
        execution=ExecutionSettings(
            root_dir=str(tmp_path / "subtuple"),
            sandbox="none",
            allow_unsandboxed=True,
            asset_buffer_max_bytes=100,
            asset_buffer_max_age=DAY,
            task_dir_max_age=DAY,
            function_environment_max_age=7 * DAY,
        ),
        metrics=MetricsSettings(enabled=False),
    )
    context = WorkerContext.from_settings(settings)
    yield context
    context.close()


def aged(path: Path, seconds: float) -> Path:
    moment = time.time() - seconds
    os.utime(path, (moment, moment))
    return path


def add_entry(context: WorkerContext, key: str, size: int, age: float) -> None:
    with context.buffer.in_use():
        context.buffer.get(AssetKind.MODEL, key, lambda path: path.write_bytes(b"x" * size))
    aged(context.buffer.root / f".models-{key}.size", age)


def timestamp(seconds_ago: float) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(datetime.fromtimestamp(time.time() - seconds_ago, UTC))
    return value


def store_plan(context: WorkerContext, *, running: bool, archive_checksum: str | None = None) -> str:
    """A plan of the replica with one task (waiting, or done), of a function with that archive."""
    plan_key, function_key = str(uuid.uuid4()), str(uuid.uuid4())
    archive_checksum = archive_checksum or uuid.uuid4().hex * 2
    with session_scope(context.sessions) as session:
        store_function(
            session,
            CHANNEL,
            function_pb2.Function(
                key=function_key,
                owner=ORG,
                creation_date=timestamp(30 * DAY),
                archive=common_pb2.Addressable(
                    checksum=archive_checksum, storage_address="http://a.example/"
                ),
                description=common_pb2.Addressable(checksum="d" * 64, storage_address="http://d.example/"),
            ),
        )
        store_compute_plan(
            session,
            CHANNEL,
            computeplan_pb2.ComputePlan(key=plan_key, owner=ORG, creation_date=timestamp(30 * DAY)),
        )
        store_compute_task(
            session,
            CHANNEL,
            computetask_pb2.ComputeTask(
                key=str(uuid.uuid4()),
                function_key=function_key,
                compute_plan_key=plan_key,
                owner=ORG,
                worker=ORG,
                creation_date=timestamp(30 * DAY),
                status=computetask_pb2.STATUS_WAITING_FOR_EXECUTOR_SLOT
                if running
                else computetask_pb2.STATUS_DONE,
            ),
        )
    return plan_key


def test_the_asset_buffer_is_evicted_by_size_and_age_with_crash_leftovers(context: WorkerContext) -> None:
    add_entry(context, "unused-for-weeks", 10, 14 * DAY)
    add_entry(context, "least-recent", 60, 2 * 3600)
    add_entry(context, "recent", 60, 60)
    (context.buffer.root / "tmp" / "crashed-fetch").mkdir(parents=True)
    (context.buffer.root / "models" / "no-size-file").write_bytes(b"half installed")

    # Tasks staging inputs: nothing goes meanwhile.
    with context.buffer.in_use():
        busy = run_maintenance(context, EVICT_ASSET_BUFFER)
    first = run_maintenance(context, EVICT_ASSET_BUFFER)
    again = run_maintenance(context, EVICT_ASSET_BUFFER)

    assert (busy.items, first.items, again.items) == (0, 4, 0)
    assert [entry.key for entry in context.buffer.entries()] == ["recent"]
    assert list((context.buffer.root / "tmp").iterdir()) == []
    assert sorted(path.name for path in (context.buffer.root / "models").iterdir()) == ["recent"]


def test_a_second_process_of_the_host_skips_the_job_it_is_running(context: WorkerContext) -> None:
    with file_lock(context.root / ".maintenance" / f"{EVICT_ASSET_BUFFER}.lock"):
        run = run_maintenance(context, EVICT_ASSET_BUFFER)
    assert not run.ran


def test_leftover_task_directories_are_removed(context: WorkerContext) -> None:
    root = context.root
    # A task directory of this (live) executor, and one of a dead process.
    live = context.executor.task_directory("running-task")
    runs = live.path.parent
    (runs / "12345-deadbeef.lock").touch()
    (runs / "12345-deadbeef-0" / "workdir").mkdir(parents=True)
    # Plan directories: of a finished plan (or one this backend does not know), of a running plan,
    # of a finished plan recently used, of a finished plan whose task still holds the plan lock.
    plans = root / "compute_plans"
    finished, running, recent, locked = (
        store_plan(context, running=False),
        store_plan(context, running=True),
        store_plan(context, running=False),
        str(uuid.uuid4()),
    )
    for key in (finished, running, recent, locked):
        (plans / key).mkdir(parents=True)
        (plans / f"{key}.lock").touch()
        for path in (plans / key, plans / f"{key}.lock"):
            aged(path, 60 if key == recent else 3 * DAY)
    # Scratch directories of function builds.
    scratch = root / "tmp"
    (scratch / "function-crashed").mkdir(parents=True)
    aged(scratch / "function-crashed", 3 * DAY)
    (scratch / "function-building").mkdir()

    with file_lock(plans / f"{locked}.lock", shared=True):
        first = run_maintenance(context, CLEAN_TASK_DIRECTORIES)
        again = run_maintenance(context, CLEAN_TASK_DIRECTORIES)

    assert (first.items, again.items) == (3, 0)
    assert live.path.is_dir()
    assert sorted(path.name for path in runs.iterdir() if path.is_dir()) == [live.path.name]
    assert sorted(path.name for path in plans.iterdir()) == sorted(
        [running, f"{running}.lock", recent, f"{recent}.lock", locked, f"{locked}.lock"]
    )
    assert [path.name for path in scratch.iterdir()] == ["function-building"]
    # Once its last task is over, the plan's directory goes too.
    assert run_maintenance(context, CLEAN_TASK_DIRECTORIES).items == 1
    assert not (plans / locked).exists()


def environment(context: WorkerContext, archive_checksum: str, age: float) -> Path:
    directory = context.root / "environments" / archive_checksum
    (directory / "venv").mkdir(parents=True)
    description = {
        "entrypoint": ["python", "f.py"],
        "script": "f.py",
        "arguments": [],
        "base_environment": "",
    }
    (directory / "environment.json").write_text(json.dumps(description))
    aged(directory / "environment.json", age)
    return directory


def test_unused_function_environments_are_removed(context: WorkerContext) -> None:
    in_use, unused, recent, asked_for, building = (uuid.uuid4().hex * 2 for _ in range(5))
    store_plan(context, running=True, archive_checksum=in_use)
    store_plan(context, running=False, archive_checksum=unused)
    for checksum in (in_use, unused, asked_for, building):
        environment(context, checksum, 30 * DAY)
    environment(context, recent, DAY)
    # A task asks for this one now.
    assert context.executor.find_image(asked_for) is not None

    # A build of this checksum is under way.
    with file_lock(context.root / "environments" / ".locks" / f"{building}.lock"):
        first = run_maintenance(context, COLLECT_FUNCTION_ENVIRONMENTS)
        again = run_maintenance(context, COLLECT_FUNCTION_ENVIRONMENTS)

    assert (first.items, again.items) == (1, 0)
    left = sorted(image.archive_checksum for image in context.executor.images())
    assert left == sorted([in_use, recent, asked_for, building])
    assert not (context.root / "environments" / unused).exists()
