"""Profiling of compute tasks (`/task_profiling/`, rest-api.md 5.12) and of function builds.

Task steps (`prepare_inputs`, `download_function`, `task_execution`, `save_outputs`) go to this
organization's database, where the server reads them; the profile's creation time is reset when a
task starts (again), as the reference's PUT does. Profiling never fails a task: a database error is
logged and the step is lost. Build durations go to the orchestrator (`RegisterProfilingStep`,
microseconds), which shares them with every organization.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from backend_common.db.replica import TaskProfile, TaskProfilingStep
from backend_common.logging import get_logger
from backend_common.orchestrator import OrchestratorClient, OrchestratorError
from backend_common.protos import profiling_pb2
from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from backend_worker.metrics import COMPUTE_TASK_STEP_DURATION

logger = get_logger("backend_worker.profiling")

STEP_PREPARE_INPUTS = "prepare_inputs"
STEP_DOWNLOAD_FUNCTION = "download_function"
STEP_TASK_EXECUTION = "task_execution"
STEP_SAVE_OUTPUTS = "save_outputs"
STEP_BUILD_IMAGE = "build_image"

# ProfilingStep.duration is a uint32 of microseconds.
_MAX_DURATION_US = 2**32 - 1


def microseconds(seconds: float) -> int:
    return max(1, round(seconds * 1_000_000))


class TaskProfiler:
    """Collects a run's steps and writes them, with the profile, in one transaction at its end."""

    def __init__(self, sessions: sessionmaker[Session], task_key: str, channel: str) -> None:
        self._sessions = sessions
        self.task_key = task_key
        self.channel = channel
        self.steps: dict[str, int] = {}
        # The profile's creation time is the start of this run, as the reference's PUT resets it.
        self.started_at = datetime.now(UTC)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.record(name, time.perf_counter() - started)

    def record(self, name: str, seconds: float) -> None:
        self.steps[name] = microseconds(seconds)
        COMPUTE_TASK_STEP_DURATION.labels(step=name).observe(seconds)

    def flush(self) -> None:
        profile = insert(TaskProfile).values(
            compute_task_key=self.task_key, channel=self.channel, creation_date=self.started_at
        )
        profile = profile.on_conflict_do_update(
            index_elements=[TaskProfile.compute_task_key], set_={"creation_date": self.started_at}
        )
        rows = [
            {"compute_task_key": self.task_key, "step": step, "position": position, "duration_us": duration}
            for position, (step, duration) in enumerate(self.steps.items())
        ]
        try:
            with self._sessions() as session, session.begin():
                session.execute(profile)
                session.execute(
                    delete(TaskProfilingStep).where(TaskProfilingStep.compute_task_key == self.task_key)
                )
                if rows:
                    session.execute(insert(TaskProfilingStep).values(rows))
        except SQLAlchemyError as error:
            # Typically the task is not in the local replica yet (events lagging behind).
            logger.warning("task profiling lost", task_key=self.task_key, error=str(error).splitlines()[0])


def register_build_step(client: OrchestratorClient, function_key: str, seconds: float) -> None:
    step = profiling_pb2.ProfilingStep(
        asset_key=function_key, step=STEP_BUILD_IMAGE, duration=min(microseconds(seconds), _MAX_DURATION_US)
    )
    try:
        client.register_profiling_step(step)
    except OrchestratorError as error:
        logger.warning("build profiling step lost", function_key=function_key, error=str(error))
