"""Concurrent writers: per-channel serialization, cross-channel key clashes, conflict retries."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from backend_common.orchestrator import AlreadyExistsError
from backend_common.protos import datasample_pb2, event_pb2, function_pb2
from sqlalchemy import Connection, text
from sqlalchemy.exc import OperationalError
from standalone_orchestrator.db.engine import Database, make_engine
from standalone_orchestrator.testing import (
    CHANNEL,
    ORG1,
    ORG2,
    OTHER_CHANNEL,
    Network,
    addressable,
    new_key,
    permissions,
)

Fresh = Callable[..., Network]


def _run_all(targets: list[Callable[[], None]]) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(targets))

    def run(target: Callable[[], None]) -> None:
        barrier.wait()
        try:
            target()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(target,)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_concurrent_writers_of_one_channel(fresh_orchestrator: Fresh) -> None:
    net = fresh_orchestrator()
    manager = net.data_manager(ORG1)
    before = len(list(net.client().iter_events()))

    def register() -> None:
        for _ in range(10):
            net.client(ORG1).register_data_samples(
                [
                    datasample_pb2.NewDataSample(
                        key=new_key(), data_manager_keys=[manager.key], checksum="a" * 64
                    )
                ]
            )

    assert _run_all([register] * 8) == []
    assert len(net.client().get_dataset(manager.key).data_sample_keys) == 80
    assert len(list(net.client().iter_events())) == before + 80


def test_same_key_in_two_channels_at_once(fresh_orchestrator: Fresh) -> None:
    net = fresh_orchestrator()
    for _ in range(5):
        key = new_key()

        def register(channel: str, key: str = key) -> None:
            net.client(ORG1, channel).register_function(
                function_pb2.NewFunction(
                    key=key,
                    name="f",
                    description=addressable(),
                    archive=addressable(),
                    new_permissions=permissions(),
                )
            )

        errors = _run_all([lambda: register(CHANNEL), lambda: register(OTHER_CHANNEL)])
        assert len(errors) == 1 and isinstance(errors[0], AlreadyExistsError)
        keys = [
            e.asset_key
            for channel in (CHANNEL, OTHER_CHANNEL)
            for e in net.client(ORG2, channel).iter_events(event_pb2.EventQueryFilter(asset_key=key))
        ]
        assert keys == [key]


def test_conflicts_are_retried(empty_database_url: str) -> None:
    database = Database(make_engine(empty_database_url), retry_budget_seconds=2)
    attempts: list[int] = []

    def work(connection: Connection) -> str:
        attempts.append(1)
        if len(attempts) < 3:
            connection.exec_driver_sql(
                "DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = 'serialization_failure'; END $$"
            )
        return str(connection.scalar(text("SELECT 'ok'")))

    try:
        assert database.write(CHANNEL, work) == "ok"
        assert len(attempts) == 3
        exhausted = Database(database.engine, retry_budget_seconds=0)
        attempts.clear()
        with pytest.raises(OperationalError):
            exhausted.write(CHANNEL, work)
        assert len(attempts) == 1
    finally:
        database.dispose()
