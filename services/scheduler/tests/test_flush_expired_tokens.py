"""The flush-expired-tokens job: as a function, and sent by a real beat to a real scheduler-worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from backend_common.db import make_engine, make_session_factory, session_scope
from backend_common.db.local import ApiToken, TokenKind, User
from backend_migrations import schema
from backend_scheduler import jobs
from sqlalchemy import Engine, func, select

BROKER_DATABASE = 12
RESULT_DATABASE = 13


@pytest.fixture
def engine(empty_database_url: str) -> Iterator[Engine]:
    schema.upgrade(empty_database_url)
    engine = make_engine(empty_database_url, pool_size=1)
    yield engine
    engine.dispose()


def add_tokens(engine: Engine, expiries: list[timedelta]) -> None:
    now = datetime.now(UTC)
    with session_scope(make_session_factory(engine)) as session:
        user = User(
            username=f"user-{uuid.uuid4().hex[:6]}", password_hash="x", channel="mychannel", created_at=now
        )
        session.add(user)
        for index, delta in enumerate(expiries):
            session.add(
                ApiToken(
                    token_hash=uuid.uuid4().hex + uuid.uuid4().hex,
                    kind=TokenKind.IMPLICIT if index % 2 else TokenKind.NAMED,
                    user=user,
                    created_at=now - timedelta(days=2),
                    expires_at=now + delta,
                )
            )


def remaining_expiries(engine: Engine) -> list[datetime]:
    with session_scope(make_session_factory(engine)) as session:
        return list(session.scalars(select(ApiToken.expires_at).order_by(ApiToken.expires_at)))


def test_flush_deletes_only_expired_tokens(engine: Engine) -> None:
    add_tokens(engine, [timedelta(hours=-1), timedelta(seconds=-1), timedelta(hours=1), timedelta(days=30)])

    with session_scope(make_session_factory(engine)) as session:
        deleted = jobs.flush_expired_tokens(session, datetime.now(UTC))
    with session_scope(make_session_factory(engine)) as session:
        again = jobs.flush_expired_tokens(session, datetime.now(UTC))

    assert (deleted, again) == (2, 0)
    assert all(expiry > datetime.now(UTC) for expiry in remaining_expiries(engine))
    assert len(remaining_expiries(engine)) == 2


@pytest.fixture
def redis_databases() -> Iterator[None]:
    for database in (BROKER_DATABASE, RESULT_DATABASE):
        redis.Redis(host="127.0.0.1", port=6379, db=database).flushdb()
    yield
    for database in (BROKER_DATABASE, RESULT_DATABASE):
        redis.Redis(host="127.0.0.1", port=6379, db=database).flushdb()


def start(role: str, environment: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    executable = os.path.join(os.path.dirname(sys.executable), "backend-scheduler")
    return subprocess.Popen(
        [executable, role],
        env=environment,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_beat_and_scheduler_worker_flush_tokens_periodically(
    engine: Engine, empty_database_url: str, redis_databases: None, tmp_path: Path
) -> None:
    add_tokens(engine, [timedelta(hours=-1), timedelta(minutes=-5), timedelta(hours=1)])
    environment = {
        **os.environ,
        "ORG_NAME": "schedtest",
        "DATABASE_URL": empty_database_url,
        "CELERY_BROKER_HOST": "127.0.0.1",
        "CELERY_BROKER_DATABASE": str(BROKER_DATABASE),
        "CELERY_RESULT_DATABASE": str(RESULT_DATABASE),
        "CELERYBEAT_FLUSH_EXPIRED_TOKENS_TASK_PERIOD": "1",
        "CELERYBEAT_SCHEDULE_FILE": str(tmp_path / "beat-schedule"),
    }
    worker = start("worker", environment, tmp_path / "worker.log")
    beat = start("beat", environment, tmp_path / "beat.log")
    try:
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and len(remaining_expiries(engine)) != 1:
            time.sleep(0.3)
        # A token that expires later is flushed by a later run of the job.
        add_tokens(engine, [timedelta(seconds=-10)])
        while time.monotonic() < deadline and len(remaining_expiries(engine)) != 1:
            time.sleep(0.3)
    finally:
        stop(beat)
        stop(worker)
    logs = (tmp_path / "worker.log").read_text() + (tmp_path / "beat.log").read_text()
    assert len(remaining_expiries(engine)) == 1, logs
    assert "expired tokens flushed" in logs
    with session_scope(make_session_factory(engine)) as session:
        assert session.scalar(select(func.count()).select_from(User)) == 2
