"""Test helpers of the scheduler: settings of a test organization, the channel as this organization
sees it (acting on a real orchestrator, mirroring its events into the replica), processes. Used by
this package's tests; never in production."""

from __future__ import annotations

import subprocess
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from backend_common.db import session_scope
from backend_common.db.local import ApiToken, RevokedToken, TokenKind, User
from backend_common.orchestrator import OrchestratorClient
from backend_common.protos import common_pb2, computeplan_pb2, computetask_pb2, function_pb2
from backend_common.replica import apply_events
from backend_common.settings import (
    CelerySettings,
    DatabaseSettings,
    MetricsSettings,
    OrchestratorSettings,
    OrganizationSettings,
)
from backend_common.testing import processes
from sqlalchemy.orm import Session, sessionmaker

from backend_scheduler.settings import JobSettings, SchedulerSettings

# The Redis databases of the scheduler tests: flushed by them, used by nothing else.
BROKER_DATABASE = 12
RESULT_DATABASE = 13
ORG_NAME = "schedtest"
ORG = "MyOrg1MSP"
PEER = "MyOrg2MSP"
CHANNEL = "mychannel"


def orchestrator_settings(port: int) -> OrchestratorSettings:
    return OrchestratorSettings(
        ORCHESTRATOR_HOST="127.0.0.1", ORCHESTRATOR_PORT=port, ORCHESTRATOR_RETRY_MAX_DELAY=1.0
    )


def scheduler_settings(database_url: str, orchestrator_port: int = 9000, **jobs: object) -> SchedulerSettings:
    return SchedulerSettings(
        organization=OrganizationSettings(org_name=ORG_NAME, msp_id=ORG, channels=[{"name": CHANNEL}]),
        database=DatabaseSettings(url_override=database_url),
        celery=CelerySettings(
            broker_host="127.0.0.1", broker_database=BROKER_DATABASE, result_database=RESULT_DATABASE
        ),
        orchestrator=orchestrator_settings(orchestrator_port),
        jobs=JobSettings(**jobs),  # type: ignore[arg-type]
        metrics=MetricsSettings(enabled=False),
    )


def new_key() -> str:
    return str(uuid.uuid4())


@dataclass
class Channel:
    """This organization's view of the channel: acts on the orchestrator, mirrors its events."""

    orchestrator: OrchestratorClient
    peer: OrchestratorClient
    sessions: sessionmaker[Session]
    _applied: set[str] = field(default_factory=set)
    # The assets of this test: the orchestrator is shared by the session's tests.
    _keys: set[str] = field(default_factory=set)

    def function(self) -> str:
        """A function of ORG without inputs, built (READY)."""
        key = new_key()
        function = self.orchestrator.register_function(
            function_pb2.NewFunction(
                key=key,
                name="function",
                description=common_pb2.Addressable(
                    checksum="d" * 64, storage_address=f"http://backend.example/function/{key}/description/"
                ),
                archive=common_pb2.Addressable(
                    checksum=uuid.uuid4().hex + uuid.uuid4().hex,
                    storage_address=f"http://backend.example/function/{key}/file/",
                ),
                new_permissions=common_pb2.NewPermissions(public=True),
                outputs={"model": function_pb2.FunctionOutput(kind=common_pb2.ASSET_MODEL)},
            )
        )
        self._keys.add(function.key)
        self.orchestrator.apply_function_action(function.key, function_pb2.FUNCTION_ACTION_BUILDING)
        self.orchestrator.apply_function_action(function.key, function_pb2.FUNCTION_ACTION_READY)
        return function.key

    def plan(self, function_key: str, tasks: int, worker: str = ORG) -> tuple[str, list[str]]:
        """A plan of independent tasks on `worker`: all WAITING_FOR_EXECUTOR_SLOT at once."""
        plan = self.orchestrator.register_plan(computeplan_pb2.NewComputePlan(key=new_key(), name="plan"))
        output = computetask_pb2.NewComputeTaskOutput(permissions=common_pb2.NewPermissions(public=True))
        registered = self.orchestrator.register_tasks(
            [
                computetask_pb2.NewComputeTask(
                    key=new_key(),
                    function_key=function_key,
                    compute_plan_key=plan.key,
                    worker=worker,
                    outputs={"model": output},
                )
                for _ in range(tasks)
            ]
        )
        self._keys.update([plan.key, *(task.key for task in registered)])
        return plan.key, [task.key for task in registered]

    def start(self, *task_keys: str) -> None:
        for key in task_keys:
            self.orchestrator.apply_task_action(key, computetask_pb2.TASK_ACTION_EXECUTING)

    def cancel(self, plan_key: str) -> None:
        self.orchestrator.apply_plan_action(plan_key, computeplan_pb2.PLAN_ACTION_CANCELED)

    def status(self, task_key: str) -> str:
        return computetask_pb2.ComputeTaskStatus.Name(self.orchestrator.get_task(task_key).status)

    def mirror(self) -> None:
        """Apply the events of this test's assets not applied yet to the replica."""
        events = [
            event
            for event in self.orchestrator.iter_events(sort=common_pb2.ASCENDING)
            if event.id not in self._applied
            and (event.asset_key in self._keys or event.asset_kind == common_pb2.ASSET_ORGANIZATION)
        ]
        with session_scope(self.sessions) as session:
            apply_events(session, events)
        self._applied.update(event.id for event in events)


def now() -> datetime:
    return datetime.now(UTC)


def add_tokens(sessions: sessionmaker[Session], expiries: list[timedelta], revoked: list[timedelta]) -> None:
    """A user with API tokens expiring at now + each of `expiries`, and revoked sessions likewise."""
    moment = now()
    with session_scope(sessions) as session:
        user = User(
            username=f"user-{uuid.uuid4().hex[:6]}",
            password_hash="x",  # noqa: S106 (no one logs in)
            channel=CHANNEL,
            created_at=moment,
        )
        session.add(user)
        for index, delta in enumerate(expiries):
            session.add(
                ApiToken(
                    token_hash=uuid.uuid4().hex + uuid.uuid4().hex,
                    kind=TokenKind.IMPLICIT if index % 2 else TokenKind.NAMED,
                    user=user,
                    created_at=moment - timedelta(days=2),
                    expires_at=moment + delta,
                )
            )
        for delta in revoked:
            session.add(RevokedToken(jti=uuid.uuid4().hex, expires_at=moment + delta))


def concurrently(*runs: Callable[[], int]) -> list[int]:
    """Start the runs together; their results."""
    results: list[int] = [0] * len(runs)
    barrier = threading.Barrier(len(runs))

    def run(index: int) -> None:
        barrier.wait()
        results[index] = runs[index]()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(runs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


# --- processes -------------------------------------------------------------------------------------


def start_process(command: list[str], environment: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:
        return subprocess.Popen(
            command, env=environment, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Stop a process `start_process` started, with everything it forked."""
    processes.stop_process(process, group=True)
