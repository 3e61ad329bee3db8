"""How jobs run: a lock between replicas, metrics, and a schedule read from the environment."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from backend_common import queues
from backend_common.db.locks import job_lock_id, try_lock
from backend_common.jobs import run_job
from backend_scheduler.context import SchedulerContext
from backend_scheduler.settings import SchedulerSettings
from backend_scheduler.tasks import FLUSH_EXPIRED_TOKENS, beat_schedule, run_scheduler_job
from backend_scheduler.testing import ORG_NAME
from prometheus_client import REGISTRY
from sqlalchemy import Engine


def sample(name: str, job: str) -> float:
    return REGISTRY.get_sample_value(name, {"job": job}) or 0.0


def test_a_job_whose_lock_is_held_skips_its_turn(
    make_context: Callable[..., SchedulerContext], engine: Engine
) -> None:
    context = make_context()
    skipped = sample("substra_scheduler_job_skipped_total", FLUSH_EXPIRED_TOKENS)
    runs = sample("substra_scheduler_job_duration_seconds_count", FLUSH_EXPIRED_TOKENS)
    # Another scheduler-worker replica is running the job.
    with try_lock(engine, job_lock_id(FLUSH_EXPIRED_TOKENS)) as held:
        assert held
        assert run_scheduler_job(context, FLUSH_EXPIRED_TOKENS) == 0
    assert sample("substra_scheduler_job_skipped_total", FLUSH_EXPIRED_TOKENS) == skipped + 1
    assert sample("substra_scheduler_job_duration_seconds_count", FLUSH_EXPIRED_TOKENS) == runs
    run_scheduler_job(context, FLUSH_EXPIRED_TOKENS)
    assert sample("substra_scheduler_job_duration_seconds_count", FLUSH_EXPIRED_TOKENS) == runs + 1
    assert sample("substra_scheduler_job_last_run_timestamp_seconds", FLUSH_EXPIRED_TOKENS) > 0


def test_failures_are_counted_and_raised(engine: Engine) -> None:
    def broken() -> int:
        raise RuntimeError("registry unreachable")

    failures = sample("substra_scheduler_job_failures_total", "broken-job")
    with pytest.raises(RuntimeError):
        run_job("broken-job", broken, lock=try_lock(engine, job_lock_id("broken-job")))
    assert sample("substra_scheduler_job_failures_total", "broken-job") == failures + 1
    # The lock went with the run.
    with try_lock(engine, job_lock_id("broken-job")) as free:
        assert free


def test_the_schedule_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORG_NAME", ORG_NAME)
    monkeypatch.setenv("SCHEDULER_REDISPATCH_STALE_TASKS_PERIOD", "42")
    monkeypatch.setenv("SCHEDULER_CLEAN_TASK_DIRECTORIES_PERIOD", "0")
    monkeypatch.setenv("CELERYBEAT_FLUSH_EXPIRED_TOKENS_TASK_PERIOD", "7")
    monkeypatch.setenv("EXECUTING_TASK_STALE_AFTER", "600")
    monkeypatch.delenv("REGISTRY", raising=False)
    settings = SchedulerSettings()
    schedule = beat_schedule(settings)

    assert settings.jobs.executing_task_stale_after == 600
    assert schedule["redispatch-stale-tasks"]["schedule"] == 42.0
    assert schedule["flush-expired-tokens"]["schedule"] == 7.0
    # Disabled: a period of 0, or no registry to collect.
    assert "clean-task-directories" not in schedule
    assert "docker-registry-garbage-collector" not in schedule
    # Worker jobs go to every worker and builder, the others to the scheduler-worker.
    assert schedule["evict-asset-buffer"]["options"]["queue"] == queues.broadcast_queue(ORG_NAME)
    assert schedule["redispatch-stale-tasks"]["options"]["queue"] == queues.SCHEDULER_QUEUE

    monkeypatch.setenv("REGISTRY", "registry.local:5000")
    assert beat_schedule(SchedulerSettings())["docker-registry-garbage-collector"]["schedule"] == 1800.0
